"""Findings into an Elasticsearch with security on (HTTPS, users with least
privilege), started by deploy/local/elasticsearch.sh in its tls mode.

This node keeps users and roles in files (the file realm, roles.yml): the
integ-test distribution has no analysis-common module, so the .security
index, and with it API keys and native roles, cannot be created. The worker
runs as the file-realm user sepwatch-writer, whose role is the one
`sepwatch elasticsearch setup --roles` creates elsewhere (streams.elastic.writer_role).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from elasticsearch import (
    AuthenticationException,
    AuthorizationException,
    Elasticsearch,
)
from elasticsearch import (
    ConnectionError as EsConnectionError,
)
from typer.testing import CliRunner

from streams.cli import app as cli
from streams.elastic import writer_role
from streams.kafka_io import ensure_topics, produce
from streams.topics import Topics
from tests.integration.conftest import ES, MARKER_KEY, Worker
from tests.integration.test_elasticsearch import RAW_ID, _count, _stored
from tests.integration.test_stream import _day, _replayed, _wait_for

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


@pytest.fixture(scope="module")
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
        assert _wait_for(lambda: _count(admin, INDEX) >= len(want), timeout=180), (
            f"{_count(admin, INDEX)} of {len(want)} findings in the secured Elasticsearch"
        )
        time.sleep(2)  # a duplicate or an extra would show now
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
    acked = runner.invoke(cli, ["findings", "ack", first, "--by", "kim"], env=env)
    assert acked.exit_code == 0, acked.output
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
        assert _wait_for(lambda: said in worker.log.read_text(errors="replace"), timeout=120), (
            worker.log.read_text(errors="replace")[-3000:]
        )
    finally:
        worker.stop()
    assert wrong not in worker.log.read_text(errors="replace")


def test_the_writer_may_write_findings_only(
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
    with pytest.raises(AuthorizationException):  # it writes findings; it does not read them
        writer.search(index=INDEX)
    with pytest.raises(AuthorizationException):
        writer.security.put_role(name="escalate", cluster=["all"])
    # A month of its own it may make and, for the retention, delete.
    month = f"{INDEX}-1999.01"
    writer.create(index=month, id="x", document={"message": "old"})
    writer.indices.delete(index=month)
    assert not admin.indices.exists(index=month)


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
