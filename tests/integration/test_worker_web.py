"""A worker's first start (issue 19): its web port serves /metrics and
/healthz, on the configured host only, and none of Faust's table or router
views, which serve table contents by key without authentication; every topic
it reads exists, so it logs no error about missing ones."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import psutil

from bench.harness import free_port
from streams.kafka_io import ensure_topics
from streams.topics import Topics
from tests.integration.conftest import Worker


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_web_port_serves_metrics_and_health_only_on_its_host(
    broker: str, prefix: str, tmp_path: Path
) -> None:
    topics = Topics(prefix)
    ensure_topics(broker, topics, 4, retention_ms=3_600_000)
    port = free_port()
    worker = Worker(broker, prefix, tmp_path / "state", tmp_path / "w.log", web_port=port)
    try:
        worker.wait_ready()
        base = f"http://127.0.0.1:{port}"
        assert _status(f"{base}/metrics") == 200
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as r:
            assert r.read() == b"ok\n"
        table = f"{base}/table/{prefix}worker-device-pending/"
        for url in (table, f"{table}0|x/", f"{base}/router/", f"{base}/router/{table}/0/"):
            assert _status(url) == 404, url
        listening = {
            c.laddr.ip
            for c in psutil.Process(worker.proc.pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        }
        assert listening == {"127.0.0.1"}  # the default SEPWATCH_WEB_HOST, nothing wider
        # The raw vendor topics exist with the others: a first start logs no
        # "Topic ...raw.<vendor> not found in cluster metadata" ERROR for each.
        assert "not found in cluster metadata" not in worker.log.read_text(errors="replace")
    finally:
        worker.stop()
