"""Findings into an Elasticsearch with security on (HTTPS, users with least
privilege), started by deploy/local/elasticsearch.sh in its tls mode.

This node keeps users and roles in files (the file realm, roles.yml): the
integ-test distribution has no analysis-common module, so the .security
index, and with it API keys and native roles, cannot be created. The worker
runs as the file-realm user sepwatch-writer, whose role is the one
`sepwatch elasticsearch setup --roles` creates elsewhere (streams.indices.writer_role).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from elasticsearch import (
    AuthenticationException,
    AuthorizationException,
    ConflictError,
    Elasticsearch,
)
from elasticsearch import (
    ConnectionError as EsConnectionError,
)
from kafka import KafkaProducer
from typer.testing import CliRunner

from bench.harness import wait_for
from cli.main import app as cli
from schemas import Finding
from streams.elastic import document, index_for
from streams.indices import writer_role
from streams.kafka_io import ensure_topics, produce
from streams.lifecycle import lifecycle_index, record
from streams.settings import Settings
from streams.topics import Topics
from tests.integration.conftest import ES, MARKER_KEY, Worker
from tests.integration.settle import settled
from tests.integration.test_elasticsearch import RAW_ID, _count, _finding, _run_sink, _stored
from tests.integration.test_stream import _day, _replayed

pytestmark = pytest.mark.integration
PORT = os.environ.get("SEPWATCH_TEST_SECURE_ES_PORT", "19280")
URL = f"https://127.0.0.1:{PORT}"
# One findings alias for the session: the node's roles are written for it.
INDEX = f"s{uuid.uuid4().hex[:8]}-findings"


@dataclass(frozen=True)
class SecureNode:
    url: str
    ca: Path
    admin_password: str
    writer_password: str
    analyst_password: str
    roles_file: Path

    def client(self, user: str, password: str) -> Elasticsearch:
        return Elasticsearch(
            self.url, ca_certs=str(self.ca), basic_auth=(user, password), request_timeout=30
        )


def _printed(output: str, label: str) -> Path:
    found = re.search(rf"{re.escape(label)}[^\n]*?: (\S+)", output)
    assert found, f"elasticsearch.sh did not say where {label} is:\n{output}"
    return Path(found.group(1))


# Session-wide: the console's tests (test_console.py) sign in on the same node,
# which starts once (a minute or two) rather than once per module.
@pytest.fixture(scope="session")
def secure_es() -> Iterator[SecureNode]:
    env = {
        **os.environ,
        "SEPWATCH_ES_PORT": PORT,
        "SEPWATCH_ES_SECURITY": "tls",
        "SEPWATCH_ES_INDEX": INDEX,
    }
    ours = subprocess.run([str(ES), "status"], env=env, capture_output=True).returncode != 0
    up = subprocess.run(
        [str(ES), "up"], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        # The script names the files; it never prints a password itself.
        node = SecureNode(
            url=URL,
            ca=_printed(up.stdout, "CA certificate"),
            admin_password=_printed(up.stdout, "user elastic").read_text().strip(),
            writer_password=_printed(up.stdout, "user sepwatch-writer").read_text().strip(),
            analyst_password=_printed(up.stdout, "user sepwatch-analyst").read_text().strip(),
            roles_file=_printed(up.stdout, f"roles for the findings alias {INDEX}"),
        )
        for secret in (node.admin_password, node.writer_password, node.analyst_password):
            assert secret not in up.stdout + up.stderr
        # The node reloads roles.yml (written for INDEX) within seconds: wait for it.
        writer = node.client("sepwatch-writer", node.writer_password)
        wanted = [{"names": [f"{INDEX}-x"], "privileges": ["create_doc"]}]
        assert wait_for(
            lambda: writer.security.has_privileges(index=wanted)["has_all_requested"], timeout=60
        ), "the node did not load the roles for this session's index"
        writer.close()
        yield node
    finally:
        if ours:
            subprocess.run([str(ES), "down"], env=env, check=False, timeout=180)


@pytest.fixture(scope="module")
def admin(secure_es: SecureNode) -> Iterator[Elasticsearch]:
    es = secure_es.client("elastic", secure_es.admin_password)
    yield es
    es.close()


@pytest.fixture(scope="module")
def writer(secure_es: SecureNode) -> Iterator[Elasticsearch]:
    es = secure_es.client("sepwatch-writer", secure_es.writer_password)
    yield es
    es.close()


def _es_env(node: SecureNode, user: str, password: str) -> dict[str, str]:
    return {
        "SEPWATCH_ES_URL": node.url,
        "SEPWATCH_ES_INDEX": INDEX,
        "SEPWATCH_ES_CA_FILE": str(node.ca),
        "SEPWATCH_ES_USERNAME": user,
        "SEPWATCH_ES_PASSWORD": password,
    }


def _analyst_cli(node: SecureNode, broker: str, prefix: str) -> Callable[..., Any]:
    """`sepwatch ARGS` as the analyst over TLS, with the topics of `prefix`."""
    env = {
        **_es_env(node, "sepwatch-analyst", node.analyst_password),
        "SEPWATCH_BROKER": broker,
        "SEPWATCH_TOPIC_PREFIX": prefix,
        "COLUMNS": "250",
    }
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli, list(args), env=env)

    return run


def test_the_node_has_the_projects_writer_role(secure_es: SecureNode) -> None:
    roles = yaml.safe_load(secure_es.roles_file.read_text())
    assert roles["sepwatch_findings_writer"] == writer_role(INDEX)


def test_a_least_privilege_worker_stores_every_finding_over_https(
    broker: str, prefix: str, secure_es: SecureNode, admin: Elasticsearch, tmp_path: Path
) -> None:
    # The admin's one-off step: the template (the worker may not install one).
    runner = CliRunner()
    setup = runner.invoke(
        cli,
        ["elasticsearch", "setup"],
        env=_es_env(secure_es, "elastic", secure_es.admin_password),
    )
    assert setup.exit_code == 0, setup.output
    assert admin.indices.exists_index_template(name=INDEX)
    assert secure_es.admin_password not in setup.output

    lines = _day(users=30, hours=2, seed=21)
    want = _replayed(lines)
    assert want, "the sample should produce findings"
    raw_ids = {m for line in lines for m in RAW_ID.findall(line.decode())}
    ensure_topics(broker, Topics(prefix), 4, retention_ms=3_600_000)
    worker = Worker(
        broker,
        prefix,
        tmp_path / "state",
        tmp_path / "worker.log",
        es_url=secure_es.url,
        env={
            **_es_env(secure_es, "sepwatch-writer", secure_es.writer_password),
            "SEPWATCH_ES_INSTALL_TEMPLATE": "false",
        },
    )
    try:
        worker.wait_ready()
        cmdline = Path(f"/proc/{worker.proc.pid}/cmdline").read_bytes()
        produce(lines, broker, Topics(prefix), end_of_input=True, marker_key=MARKER_KEY)
        assert wait_for(lambda: _count(admin, INDEX) >= len(want), timeout=180), (
            f"{_count(admin, INDEX)} of {len(want)} findings in the secured Elasticsearch"
        )
        settled(broker, Topics(prefix), sink=True)  # a duplicate or an extra is stored by now
        stored = _stored(admin, INDEX)
        assert set(stored) == set(want)
        text = json.dumps([h["_source"] for h in stored.values()], ensure_ascii=False)
        assert not [r for r in raw_ids if r in text], "a raw identifier reached Elasticsearch"
        # The month's index was made by the writer's create_index, from the admin's template.
        mapping = next(iter(admin.indices.get_mapping(index=INDEX).values()))["mappings"]
        assert mapping["dynamic"] == "strict"
    finally:
        worker.stop()
    log = worker.log.read_text(errors="replace")
    assert "Ready" in log
    assert secure_es.writer_password.encode() not in cmdline
    assert secure_es.writer_password not in log
    assert "refused the sink's credentials" not in log

    # The analyst reads and acknowledges with the analyst role, over the same TLS.
    env = {**_es_env(secure_es, "sepwatch-analyst", secure_es.analyst_password), "COLUMNS": "200"}
    listed = runner.invoke(cli, ["findings", "list", "--json", "--limit", "500"], env=env)
    assert listed.exit_code == 0, listed.output
    assert {json.loads(x)["finding_id"] for x in listed.stdout.splitlines()} == set(want)
    first = sorted(want)[0]
    env |= {"SEPWATCH_BROKER": broker, "SEPWATCH_TOPIC_PREFIX": prefix}
    acked = runner.invoke(cli, ["findings", "ack", first], env=env)
    assert acked.exit_code == 0, acked.output
    assert "acknowledged by sepwatch-analyst" in acked.output  # the node's word, not a flag
    assert secure_es.analyst_password not in listed.output + acked.output


def test_a_worker_with_a_wrong_password_says_so_without_the_password(
    broker: str, prefix: str, secure_es: SecureNode, tmp_path: Path
) -> None:
    wrong = f"wrong-{uuid.uuid4().hex}"
    ensure_topics(broker, Topics(prefix), 4, retention_ms=3_600_000)
    worker = Worker(
        broker,
        prefix,
        tmp_path / "state",
        tmp_path / "worker.log",
        es_url=secure_es.url,
        env={
            **_es_env(secure_es, "sepwatch-writer", wrong),
            "SEPWATCH_ES_INSTALL_TEMPLATE": "false",
        },
    )
    try:
        worker.wait_ready()
        produce(
            _day(users=10, hours=1, seed=22),
            broker,
            Topics(prefix),
            end_of_input=True,
            marker_key=MARKER_KEY,
        )
        said = "refused the sink's credentials (401"
        assert wait_for(lambda: said in worker.log.read_text(errors="replace"), timeout=120), (
            worker.log.read_text(errors="replace")[-3000:]
        )
    finally:
        worker.stop()
    assert wrong not in worker.log.read_text(errors="replace")


def test_the_writer_may_create_findings_only(
    secure_es: SecureNode, admin: Elasticsearch, writer: Elasticsearch
) -> None:
    other = f"other-{uuid.uuid4().hex[:6]}"
    admin.indices.create(index=other)
    with pytest.raises(AuthorizationException) as wrote:
        writer.index(index=other, document={"message": "not a finding"})
    assert wrote.value.meta.status == 403
    with pytest.raises(AuthorizationException):
        writer.cluster.get_settings()
    with pytest.raises(AuthorizationException):
        writer.indices.delete(index=other)
    assert admin.indices.exists(index=other)
    with pytest.raises(AuthorizationException):
        writer.indices.put_index_template(name=INDEX, index_patterns=[f"{INDEX}-*"])
    # It reads findings (a vendor's DLP retraction finds its match's: streams/retractions.py).
    writer.search(index=INDEX, ignore_unavailable=True, allow_no_indices=True)
    with pytest.raises(AuthorizationException):
        writer.security.put_role(name="escalate", cluster=["all"])
    # A month of its own it may make, and a finding in it once; nothing more.
    month = f"{INDEX}-1999.01"
    writer.create(index=month, id="x", document={"message": "old"})
    with pytest.raises(ConflictError):  # the same id again: refused, not overwritten
        writer.create(index=month, id="x", document={"message": "rewritten"})
    with pytest.raises(AuthorizationException):
        writer.index(index=month, id="x", document={"message": "rewritten"})
    with pytest.raises(AuthorizationException):
        writer.update(index=month, id="x", doc={"message": "rewritten"})
    with pytest.raises(AuthorizationException):
        writer.delete(index=month, id="x")
    with pytest.raises(AuthorizationException):  # retention is the administrator's
        writer.indices.delete(index=month)
    assert admin.get(index=month, id="x")["_source"] == {"message": "old"}
    admin.indices.delete(index=month)


def _setup(secure_es: SecureNode) -> None:
    done = CliRunner().invoke(
        cli,
        ["elasticsearch", "setup"],
        env=_es_env(secure_es, "elastic", secure_es.admin_password),
    )
    assert done.exit_code == 0, done.output


def _stored_finding(
    writer: Elasticsearch, fid: str, when: str = "2026-11-23T01:00:00+00:00"
) -> str:
    finding = Finding.model_validate(_finding(fid, timestamp=when, detected_at=when))
    month = index_for(finding.timestamp, INDEX)
    writer.create(index=month, id=fid, document=document(finding), refresh=True)
    return month


def test_an_analyst_adds_records_under_the_name_the_node_proved_and_changes_nothing(
    secure_es: SecureNode, admin: Elasticsearch, writer: Elasticsearch
) -> None:
    _setup(secure_es)
    analyst = secure_es.client("sepwatch-analyst", secure_es.analyst_password)
    fid = f"SEP-001-{uuid.uuid4().hex[:8]}"
    month = _stored_finding(writer, fid)
    assert analyst.search(index=INDEX, query={"ids": {"values": [fid]}})["hits"]["hits"]
    # The finding's content is not the analyst's to change, nor to remove.
    for change in (
        lambda: analyst.update(index=month, id=fid, doc={"message": "nothing to see"}),
        lambda: analyst.index(index=month, id=fid, document={"message": "nothing to see"}),
        lambda: analyst.delete(index=month, id=fid),
        lambda: analyst.create(index=month, id="new", document={"message": "made up"}),
        lambda: analyst.indices.delete(index=month),
    ):
        with pytest.raises(AuthorizationException):
            change()

    record_id, stored = record(analyst, INDEX, fid, "acknowledge", at=datetime.now(UTC))
    assert record_id == f"{fid}.1"
    actor = stored["sepwatch"]["actor"]
    assert actor["username"] == "sepwatch-analyst"
    assert actor["authentication_type"] == "REALM"
    assert actor["realm"] == {"name": "default_file", "type": "file"}

    # Written by hand, claiming another name: the node's pipeline writes the real one.
    lifecycle = lifecycle_index(INDEX)
    forged = {**stored, "sepwatch": {**stored["sepwatch"], "seq": 2, "to_status": "resolved"}}
    forged["sepwatch"]["from_status"] = "acknowledged"
    forged["sepwatch"]["actor"] = {"username": "ciso", "authentication_type": "REALM"}
    analyst.create(index=lifecycle, id=f"{fid}.2", document=forged, refresh=True)
    assert (
        analyst.get(index=lifecycle, id=f"{fid}.2")["_source"]["sepwatch"]["actor"]["username"]
        == "sepwatch-analyst"
    )
    # A record, once added, is neither rewritten nor removed by an analyst.
    for change in (
        lambda: analyst.index(index=lifecycle, id=f"{fid}.1", document=stored),
        lambda: analyst.update(index=lifecycle, id=f"{fid}.1", doc={"event": {"reason": "x"}}),
        lambda: analyst.delete(index=lifecycle, id=f"{fid}.1"),
        lambda: analyst.indices.delete(index=lifecycle),
    ):
        with pytest.raises(AuthorizationException):
            change()
    with pytest.raises(ConflictError):  # the same step twice: the second is refused
        analyst.create(index=lifecycle, id=f"{fid}.1", document=stored)
    assert (
        admin.search(index=INDEX, query={"ids": {"values": [fid]}})["hits"]["hits"][0]["_source"][
            "sepwatch"
        ]["status"]
        == "open"
    )
    analyst.close()


def test_retention_is_an_administrators_command(
    secure_es: SecureNode, admin: Elasticsearch, writer: Elasticsearch
) -> None:
    _setup(secure_es)
    fid = f"SEP-001-{uuid.uuid4().hex[:8]}"
    old = _stored_finding(writer, fid, "2020-01-15T00:00:00+00:00")
    record(admin, INDEX, fid, "acknowledge", at=datetime.now(UTC))
    runner = CliRunner()
    args = ["elasticsearch", "retention", "--older-than", "400d"]
    as_writer = runner.invoke(
        cli, args, env=_es_env(secure_es, "sepwatch-writer", secure_es.writer_password)
    )
    assert as_writer.exit_code == 2 and "403" in as_writer.output
    assert admin.indices.exists(index=old)
    dry = runner.invoke(
        cli, [*args, "--dry-run"], env=_es_env(secure_es, "elastic", secure_es.admin_password)
    )
    assert dry.exit_code == 0 and f"would delete {old}" in dry.output
    assert admin.indices.exists(index=old)
    done = runner.invoke(cli, args, env=_es_env(secure_es, "elastic", secure_es.admin_password))
    assert done.exit_code == 0 and f"deleted {old}" in done.output, done.output
    assert not admin.indices.exists(index=old)
    assert not admin.exists(index=lifecycle_index(INDEX), id=f"{fid}.1")


def test_plain_http_and_missing_credentials_are_refused(secure_es: SecureNode) -> None:
    plain = Elasticsearch(f"http://127.0.0.1:{PORT}", request_timeout=5, max_retries=0)
    with pytest.raises(EsConnectionError):
        plain.cluster.health()
    anonymous = Elasticsearch(secure_es.url, ca_certs=str(secure_es.ca), request_timeout=5)
    with pytest.raises(AuthenticationException):
        anonymous.cluster.health()
    wrong = secure_es.client("sepwatch-writer", "not-the-password")
    with pytest.raises(AuthenticationException):
        wrong.cluster.health()
    # The CA is what makes the certificate trusted: without it, TLS verification fails.
    untrusted = Elasticsearch(
        secure_es.url,
        basic_auth=("elastic", secure_es.admin_password),
        request_timeout=5,
        max_retries=0,
    )
    with pytest.raises(EsConnectionError):
        untrusted.cluster.health()


def test_evidence_verify_names_a_finding_deleted_one_edited_and_a_record_removed(
    broker: str, prefix: str, secure_es: SecureNode, admin: Elasticsearch, tmp_path: Path
) -> None:
    _setup(secure_es)
    topics = Topics(prefix)
    ensure_topics(broker, topics, 4, retention_ms=3_600_000)
    # A half-year no other test of this module writes to.
    ids = [f"SEP-001-{prefix.strip('.')}-{n}" for n in range(6)]
    producer = KafkaProducer(bootstrap_servers=broker)
    for n, fid in enumerate(ids):
        when = f"2025-03-{10 + n:02d}T01:00:00+00:00"
        finding = _finding(fid, timestamp=when, detected_at=when)
        producer.send(topics.findings, key=fid.encode(), value=json.dumps(finding).encode())
    producer.flush()
    producer.close()
    sink = Settings(
        broker=broker,
        topic_prefix=prefix,
        es_url=secure_es.url,
        es_index=INDEX,
        es_username="sepwatch-writer",
        es_password=secure_es.writer_password,
        es_ca_file=secure_es.ca,
        es_install_template=False,
    )
    assert _run_sink(sink, lambda s: s.settled >= len(ids), timeout=120) == len(ids)
    admin.indices.refresh(index=INDEX)

    run = _analyst_cli(secure_es, broker, prefix)

    assert run("findings", "ack", ids[0]).exit_code == 0
    assert run("findings", "resolve", ids[1], "--note", "blocked at the proxy").exit_code == 0
    assert run("findings", "ack", ids[2]).exit_code == 0
    verify = ["evidence", "verify", "--period", "2025H1"]
    clean = run(*verify)
    assert clean.exit_code == 0, clean.output
    assert "6 findings and 3 lifecycle records" in clean.output

    report = run("report", "--period", "2025H1", "--no-reviews", "--out", str(tmp_path / "r"))
    assert report.exit_code == 0, report.output
    evidence = json.loads((tmp_path / "r" / "report.json").read_text())["evidence"]
    assert evidence["findings"] == len(ids)
    digest = evidence["digest"]
    assert f"evidence digest {digest}" in clean.output  # the topic's, the same
    signed = run(*verify, "--digest", digest)
    assert signed.exit_code == 0 and "and the report's digest" in signed.output, signed.output
    wrong = run(*verify, "--digest", "0" * 64)
    assert wrong.exit_code == 1 and "does not match" in wrong.output

    # An administrator can do what the roles forbid; the evidence shows it.
    months = {h["_id"]: h["_index"] for h in admin.search(index=INDEX, size=100)["hits"]["hits"]}
    admin.delete(index=months[ids[3]], id=ids[3], refresh=True)
    admin.update(index=months[ids[4]], id=ids[4], doc={"message": "nothing happened"})
    admin.delete(index=lifecycle_index(INDEX), id=f"{ids[0]}.1", refresh=True)
    admin.indices.refresh(index=INDEX)
    caught = run(*verify)
    assert caught.exit_code == 1, caught.output
    lines = caught.output.splitlines()
    assert f"finding {ids[3]}: missing from Elasticsearch" in lines
    assert any(x.startswith(f"finding {ids[4]}: altered") for x in lines), caught.output
    assert f"lifecycle record {ids[0]}.1: missing from Elasticsearch" in lines
    assert "3 problem(s)" in caught.output
    stale = run(*verify, "--digest", digest)
    assert stale.exit_code == 1
    assert "does not match the period's findings in Elasticsearch now" in stale.output


def test_findings_stored_before_digests_are_counted_apart_and_not_called_altered(
    broker: str, prefix: str, secure_es: SecureNode, admin: Elasticsearch, tmp_path: Path
) -> None:
    """Documents as versions before digests left them: no `sepwatch.digest`,
    and an acknowledged one changed in place (status and `sepwatch.lifecycle`,
    as the old `transition` wrote them). Written by the administrator, as an
    upgrade finds them; a half-year no other test writes to."""
    _setup(secure_es)
    topics = Topics(prefix)
    ensure_topics(broker, topics, 4, retention_ms=3_600_000)
    ids = [f"SEP-001-{prefix.strip('.')}-old{n}" for n in range(4)]
    producer = KafkaProducer(bootstrap_servers=broker)
    docs: dict[str, dict[str, Any]] = {}
    for n, fid in enumerate(ids):
        when = f"2024-08-{10 + n:02d}T01:00:00+00:00"
        finding = _finding(fid, timestamp=when, detected_at=when)
        producer.send(topics.findings, key=fid.encode(), value=json.dumps(finding).encode())
        docs[fid] = document(Finding.model_validate(finding))
    producer.flush()
    producer.close()
    for fid in ids[1:]:
        del docs[fid]["sepwatch"]["digest"]
    acked = "2024-08-20T09:00:00+00:00"
    for fid in ids[2:]:
        docs[fid]["sepwatch"]["status"] = "acknowledged"
        docs[fid]["sepwatch"]["lifecycle"] = {
            "acknowledged_by": "kim",
            "acknowledged_at": acked,
            "updated_at": acked,
        }
    for fid, doc in docs.items():
        admin.create(index=index_for(datetime(2024, 8, 1, tzinfo=UTC), INDEX), id=fid, document=doc)
    admin.indices.refresh(index=INDEX)

    run = _analyst_cli(secure_es, broker, prefix)

    verify = ["evidence", "verify", "--period", "2024H2"]
    clean = run(*verify)
    assert clean.exit_code == 0, clean.output
    assert "altered" not in clean.output
    assert "3 finding(s) written before digests; not verifiable" in clean.output

    report = run("report", "--period", "2024H2", "--no-reviews", "--out", str(tmp_path / "r"))
    assert report.exit_code == 0, report.output
    evidence = json.loads((tmp_path / "r" / "report.json").read_text())["evidence"]
    assert (evidence["findings"], evidence["before_digests"]) == (1, 3)
    assert f"evidence digest {evidence['digest']}" in clean.output
    signed = run(*verify, "--digest", evidence["digest"])
    assert signed.exit_code == 0, signed.output

    # Edited beyond the status kept in it then: altered, named.
    month = index_for(datetime(2024, 8, 1, tzinfo=UTC), INDEX)
    admin.update(index=month, id=ids[3], doc={"message": "nothing happened"}, refresh=True)
    edited = run(*verify)
    assert edited.exit_code == 1, edited.output
    assert any(
        x.startswith(f"finding {ids[3]}: altered") and "written before digests" in x
        for x in edited.output.splitlines()
    ), edited.output
    assert "2 finding(s) written before digests" in edited.output
    # A digest removed to pass a document off as older: the report's digest stops verifying.
    admin.update(index=month, id=ids[0], doc={"sepwatch": {"digest": None}}, refresh=True)
    stripped = run(*verify, "--digest", evidence["digest"])
    assert stripped.exit_code == 1, stripped.output
    assert "does not match the period's findings in Elasticsearch now" in stripped.output


def test_a_vendors_dlp_retraction_resolves_as_the_worker_and_changes_nothing(
    broker: str, prefix: str, secure_es: SecureNode, admin: Elasticsearch, writer: Elasticsearch
) -> None:
    """M365 DlpRuleUndo (streams/retractions.py): the `resolve` record is the
    writer's, as the node proved it; the finding stays as stored."""
    from detectors.pseudonyms import Pseudonymiser
    from schemas import DlpAlert
    from streams.retractions import Retractions

    _setup(secure_es)
    ensure_topics(broker, Topics(prefix), 1, retention_ms=3_600_000)
    fid = f"SEP-003-{uuid.uuid4().hex[:8]}"
    ref = {"workload": "OneDrive", "object_id": f"doc-{fid}", "rule_ids": ["r1"]}
    finding = _finding(fid, rule_id="SEP-003", severity="critical", user_id="jiwoo@bank.example")
    finding["details"] = {"data_types": ["kr_rrn"], "match_ref": {"source": "m365", **ref}}
    month = index_for(Finding.model_validate(finding).timestamp, INDEX)
    stored = document(Finding.model_validate(finding))
    writer.create(index=month, id=fid, document=stored, refresh=True)
    undo = DlpAlert.model_validate(
        {
            "stream": "dlp_alert",
            "event_id": f"{fid}:undo",
            "timestamp": "2026-11-23T02:00:00+00:00",
            "entity": "HQ",
            "user_id": "jiwoo@bank.example",
            "channel": "saas_upload",
            "data_types": [],
            "match_count": 0,
            "source": "m365",
            "match_ref": ref,
            "retraction": {"operation": "DlpRuleUndo", "reason": "FalsePositive"},
        }
    )
    settings = Settings(broker=broker, topic_prefix=prefix, es_index=INDEX, es_url=secure_es.url)
    step = Retractions(settings, Pseudonymiser(b"k" * 32), es=writer)
    assert step.apply(undo) == "resolved"
    assert step.apply(undo) == "already_settled"  # read again after a restart: nothing more
    [rec] = admin.search(
        index=lifecycle_index(INDEX), query={"term": {"sepwatch.finding_id": fid}}
    )["hits"]["hits"]
    assert rec["_source"]["event"]["action"] == "resolve"
    assert rec["_source"]["event"]["reason"].startswith(
        f"vendor retracted the DLP match: DlpRuleUndo {fid}:undo (OneDrive): FalsePositive"
    )
    actor = rec["_source"]["sepwatch"]["actor"]
    assert (actor["username"], actor["authentication_type"]) == ("sepwatch-writer", "REALM")
    assert admin.get(index=month, id=fid)["_source"] == stored
    # The writer adds records; it rewrites and removes none.
    for change in (
        lambda: writer.index(index=lifecycle_index(INDEX), id=f"{fid}.1", document={}),
        lambda: writer.delete(index=lifecycle_index(INDEX), id=f"{fid}.1"),
        lambda: writer.update(index=month, id=fid, doc={"message": "retracted"}),
    ):
        with pytest.raises(AuthorizationException):
            change()
