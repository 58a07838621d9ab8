"""A real Prometheus (Debian's, on loopback) scrapes a real worker's /metrics
and evaluates deploy/prometheus/sepwatch-rules.yml against what it scraped."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from bench.harness import free_port, wait_until
from schemas.policy_file import load_policy
from simulator.day import simulate
from streams.kafka_io import produce
from streams.topics import Topics
from tests.integration.conftest import MARKER_KEY, POLICY, ROOT, Worker
from tests.test_deploy_artifacts import CATALOGUE_SERIES

pytestmark = pytest.mark.integration
RULES = ROOT / "deploy" / "prometheus" / "sepwatch-rules.yml"
JOB = "sepwatch"  # the job name the rules select on
# Prometheus not listening yet, or its answer slow on a loaded machine: try again.
NOT_YET = (OSError,)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


class Prometheus:
    """/usr/bin/prometheus on a free loopback port, scraping one target every
    second with the project's rules loaded."""

    def __init__(self, target: str, workdir: Path) -> None:
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: apt-get install prometheus"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = (workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._ready, "prometheus ready", timeout=30, unready=NOT_YET)

    def _ready(self) -> bool:
        assert self.proc.poll() is None, f"prometheus exited {self.proc.returncode}"
        with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
            return r.status == 200

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = _get(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def api(self, path: str) -> Any:
        answer = _get(self.url + "/api/v1/" + path)
        assert answer["status"] == "success", answer
        return answer["data"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def scraped_worker(broker: str, prefix: str, tmp_path: Path) -> Iterator[tuple[Worker, Prometheus]]:
    port = free_port()
    worker = Worker(broker, prefix, tmp_path / "state", tmp_path / "worker.log", web_port=port)
    prometheus: Prometheus | None = None
    try:
        worker.wait_ready()
        prometheus = Prometheus(f"127.0.0.1:{port}", tmp_path)
        yield worker, prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        worker.stop()


def _events() -> list[bytes]:
    start = datetime(2026, 11, 23, 9, tzinfo=ZoneInfo("Asia/Seoul"))
    return [
        json.dumps(e, ensure_ascii=False).encode() + b"\n"
        for e in simulate(
            load_policy(POLICY),
            users=15,
            devices=18,
            hours=1,
            violation_rate=0.1,
            seed=7,
            start=start,
        )
    ]


def test_prometheus_scrapes_events_per_stream_and_evaluates_the_rules(
    broker: str, prefix: str, scraped_worker: tuple[Worker, Prometheus]
) -> None:
    worker, prom = scraped_worker
    sent = produce(_events(), broker, Topics(prefix), end_of_input=True, marker_key=MARKER_KEY)
    assert set(sent) >= {"saas_access", "device_posture", "dlp_alert"}, sent

    up = wait_until(
        lambda: prom.query(f'up{{job="{JOB}"}} == 1'), "the worker scraped", unready=NOT_YET
    )
    assert len(up) == 1

    def per_stream() -> dict[str, int] | None:
        got = {
            r["metric"]["stream"]: int(float(r["value"][1]))
            for r in prom.query(f'sum by (stream) (sepwatch_events_total{{job="{JOB}"}})')
        }
        return got if got == sent else None

    try:
        wait_until(per_stream, "every produced event counted, per stream", unready=NOT_YET)
    except AssertionError:
        raise AssertionError(
            f"produced {sent}, Prometheus has "
            f"{prom.query('sum by (stream) (sepwatch_events_total)')}; worker log:\n"
            + worker.log.read_text(errors="replace")[-2000:]
        ) from None

    # Findings and decision latency reach Prometheus with labels the rules and
    # the dashboard group by.
    findings = wait_until(
        lambda: prom.query("sum by (rule, severity, entity, status) (sepwatch_findings_total)"),
        "findings counted",
        unready=NOT_YET,
    )
    assert all(r["metric"]["rule"].startswith("SEP-") for r in findings), findings
    # One latency observation per finding emitted.
    latency = prom.query("sum(sepwatch_decision_latency_seconds_count)")
    total = prom.query("sum(sepwatch_findings_total)")
    assert latency[0]["value"][1] == total[0]["value"][1] != "0", (latency, total)

    # Every sepwatch series the live worker exposes is one the catalogue (and
    # so the tests of the rules and the dashboard) knows.
    names = {n for n in prom.api("label/__name__/values") if n.startswith("sepwatch_")}
    unknown = {n for n in names if n not in CATALOGUE_SERIES and not n.endswith("_created")}
    assert names and not unknown, unknown

    # The project's rules evaluate against real series without errors, and a
    # worker without an Elasticsearch sink (es_sink_up stays 0) is not "down".
    def evaluated() -> list[dict[str, Any]]:
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        return rules if all(r["health"] != "unknown" for r in rules) else []

    rules = wait_until(evaluated, "every rule evaluated", timeout=30, unready=NOT_YET)
    assert len(rules) == sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not broken, broken

    # Nothing pending either, once the rules have been evaluated three more
    # times over the worker's series: a counter born with a burst of events is
    # not a silent stream.
    evaluations: set[str] = set()

    def three_more() -> bool:
        evaluations.update(g["lastEvaluation"] for g in prom.api("rules")["groups"][:1])
        return len(evaluations) > 3

    wait_until(three_more, "three more evaluations of the rules", timeout=30, unready=NOT_YET)
    alerts = prom.api("alerts")["alerts"]
    assert not alerts, [(a["labels"], a["state"]) for a in alerts]
