"""Identifiers in event fields through a real `sepwatch worker`: the real
broker, Elasticsearch and a signed webhook. Nothing raw reaches a finding, an
Elasticsearch document, an alert, the dead letters, /metrics or the worker's
log; a DLP alert and its upload by the same RRN still make their finding,
under the pseudonym; the key the worker made is on the deployment's topic."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from elasticsearch import Elasticsearch

from bench.harness import free_port
from detectors.pseudonyms import PSEUDONYM, pseudonym
from streams.kafka_io import ensure_topics, export_findings, produce, read_dead_letters
from streams.pseudonym_key import read_key
from streams.topics import Topics
from tests.integration.conftest import MARKER_KEY, POLICY, Worker
from tests.integration.settle import settled
from tests.integration.test_worker_alerts import SECRET, Receiver

pytestmark = pytest.mark.integration

RRN = "850315-1234567"  # made up
CARD = "4111 1111 1111 1111"
PASSPORT = "M12345678"
ACCOUNT = "110-123-456789"
PLANTED = [RRN, CARD, PASSPORT, ACCOUNT]
GUID = "3f2504e0-4f89-11d3-9a0c-030512345678"


def digits(text: str) -> str:
    return "".join(c for c in text if c.isalnum())


def _events() -> list[dict[str, Any]]:
    base = {"timestamp": "2026-11-23T01:00:00Z", "entity": "HQ", "source": "test"}
    upload = {
        **base,
        "stream": "saas_access",
        "event_id": "a1",
        "user_id": RRN,  # an older system keyed people by RRN
        "device_id": GUID,  # technical: stays readable
        "saas_app": "m365-sharepoint",
        "action": "upload",
        "network_zone": "internal",
        "object": {"name": f"고객_{PASSPORT}.xlsx"},
        "vendor": {"account": ACCOUNT, "pan": int(digits(CARD))},  # a card as a JSON number
    }
    alert = {
        **base,
        "stream": "dlp_alert",
        "event_id": "d1",
        "timestamp": "2026-11-23T01:02:00Z",
        "user_id": RRN.replace("-", ""),  # the same person, written without the dash
        "device_id": CARD,
        "channel": "web",
        "data_types": ["kr_rrn"],
        "match_count": 1,
        "snippet": f"주민번호 {RRN}",
    }
    stranger = {**upload, "event_id": "a2", "entity": RRN, "user_id": "u2", "device_id": "d2"}
    return [upload, alert, stranger]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def test_no_raw_identifier_leaves_a_worker_and_joins_still_work(
    broker: str, prefix: str, elasticsearch: str, tmp_path: Path, receiver: Receiver
) -> None:
    policy = yaml.safe_load(POLICY.read_text())
    policy["alerting"]["routes"] = [{"name": "all", "match": {}, "channels": ["siem"]}]
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy, allow_unicode=True))
    topics = Topics(prefix)
    ensure_topics(broker, topics, 4, retention_ms=3_600_000)
    port = free_port()
    env = {
        "SEPWATCH_CHANNELS__SIEM__KIND": "webhook",
        "SEPWATCH_CHANNELS__SIEM__URL": receiver.hook.url + "/intake",
        "SEPWATCH_CHANNELS__SIEM__SECRET": SECRET,
        "SEPWATCH_ALERTS_IDLE_S": "1",
    }
    lines = [json.dumps(e, ensure_ascii=False).encode() for e in _events()]
    bad = json.dumps({**_events()[0], "event_id": "bad", "action": RRN}).encode()
    index = f"{prefix.rstrip('.')}-findings"
    es = Elasticsearch(elasticsearch, request_timeout=30)
    worker = Worker(
        broker,
        prefix,
        tmp_path / "state",
        tmp_path / "w.log",
        policy_path,
        es_url=elasticsearch,
        web_port=port,
        env=env,
    )
    try:
        worker.wait_ready()
        produce([*lines, bad], broker, topics, end_of_input=True, marker_key=MARKER_KEY)
        deadline = time.monotonic() + 120
        docs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            if es.indices.exists_alias(name=index):
                es.indices.refresh(index=index)
                hits = es.search(index=index, query={"match_all": {}}, size=100)["hits"]["hits"]
                docs = [h["_source"] for h in hits]
            sep003 = [d for d in docs if d["rule"]["id"] == "SEP-003"]
            if sep003 and receiver.notifications() and read_dead_letters(broker, topics):
                break
            time.sleep(0.5)
        settled(broker, topics, sink=True, alerts=True)  # what else would come has come
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    finally:
        worker.stop()
        es.close()
    findings_out = tmp_path / "findings.jsonl"
    with findings_out.open("w") as sink:
        export_findings(broker, topics, sink)
    outputs = {
        "findings": findings_out.read_text(),
        "elasticsearch": json.dumps(docs, ensure_ascii=False),
        "alerts": json.dumps([r.body.decode() for r in receiver.hook.accepted()]),
        "dead letters": json.dumps(read_dead_letters(broker, topics), ensure_ascii=False),
        "metrics": metrics.decode(),
        "worker log": (tmp_path / "w.log").read_text(errors="replace"),
    }
    for where, text in outputs.items():
        for raw in PLANTED:
            assert digits(raw) not in digits(text), f"{raw} reached the {where}"
    key = read_key(broker, topics)
    assert key is not None, "the worker keeps the key it made on the deployment's topic"
    person = pseudonym(key, RRN)
    (finding,) = [d for d in docs if d["rule"]["id"] == "SEP-003"]
    assert finding["user"]["id"] == person
    assert finding["sepwatch"]["evidence_event_ids"] == ["d1", "a1"]
    assert person in outputs["alerts"]
    assert GUID in outputs["findings"], "a technical id stays readable"
    assert PSEUDONYM.search(outputs["elasticsearch"])
    text = outputs["metrics"]
    assert 'sepwatch_identifiers_pseudonymised_total{field="user_id"} 2.0' in text
    assert 'sepwatch_identifiers_pseudonymised_total{field="object.name"}' in text
    assert 'sepwatch_identifiers_pseudonymised_total{field="extra"}' in text
    assert 'sepwatch_identifiers_pseudonymised_total{field="entity"} 1.0' in text
    entities = {
        line.split('entity="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("sepwatch_findings_total{")
    }
    assert entities and entities <= {"HQ", "SUB-VN", "BR-BUSAN-HU", "other"}, entities
    assert "other" in entities, "the RRN-named entity's findings count as other"
