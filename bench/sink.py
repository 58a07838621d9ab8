"""Elasticsearch sink benchmark on a real broker and a real node: findings/s
the sink sustains from the findings topic into Elasticsearch, beside the bare
bulk helper indexing the same documents in the same run, and latency from a
finding's append to Kafka to its document being searchable at an offered rate.

    python -m bench.sink                              # 100k findings, 3 runs, 1,000/s for 30 s
    python -m bench.sink --findings 50000 --runs 5 --rate 1000 --seconds 60

It starts its own broker (port 19192) and node (port 19250) with the
project's scripts, and stops them after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from elasticsearch import Elasticsearch
from elasticsearch.helpers import async_bulk
from kafka import KafkaProducer

from schemas import Finding
from streams.elastic import async_client, document, index_for, template_body
from streams.kafka_io import ensure_topics
from streams.settings import Settings
from streams.sink import FindingsSink
from streams.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
KAFKA = ROOT / "deploy" / "local" / "kafka.sh"
ES = ROOT / "deploy" / "local" / "elasticsearch.sh"
KAFKA_PORT, ES_PORT = "19192", "19250"
BROKER, ES_URL = f"127.0.0.1:{KAFKA_PORT}", f"http://127.0.0.1:{ES_PORT}"
RULES = [
    ("SEP-001", "high"),
    ("SEP-002", "medium"),
    ("SEP-003", "critical"),
    ("SEP-006", "high"),
    ("SEP-007", "medium"),
]


def findings(n: int, seed: str) -> list[bytes]:
    """Findings as the engine writes them (one a tenth event on findings-heavy load)."""
    start = datetime(2026, 11, 2, tzinfo=UTC)
    out = []
    for i in range(n):
        rule, severity = RULES[i % len(RULES)]
        f = Finding(
            finding_id=f"{rule}-{seed}-{i:09d}",
            rule_id=rule,  # type: ignore[arg-type]
            rule_name=f"rule {rule}",
            severity=severity,  # type: ignore[arg-type]
            status="open",
            timestamp=start + timedelta(seconds=i),
            detected_at=start + timedelta(seconds=i, milliseconds=300),
            entity=("HQ", "BR-SEOUL-GN", "BR-BUSAN-HU", "SUB-VN")[i % 4],
            user_id=f"u-{i % 40_000:05d}",
            device_id=f"lt-{i % 50_000:05d}",
            saas_app=("m365-teams", "m365-onedrive", "dropbox")[i % 3],
            evidence_event_ids=[f"e-{seed}-{i}", f"p-{seed}-{i}"],
            summary=f"User u-{i % 40_000:05d} used an app it should not have.",
            regulation="Electronic Financial Supervisory Regulation, detailed rules, 2026-04-20",
            details={"reason": "not_in_registry"},
        )
        out.append(f.model_dump_json().encode())
    return out


def publish(topic: str, values: list[bytes], rate: float = 0.0) -> None:
    producer = KafkaProducer(bootstrap_servers=BROKER, linger_ms=5, batch_size=256 * 1024)
    t0 = time.perf_counter()
    for i, v in enumerate(values):
        producer.send(topic, key=json.loads(v)["finding_id"].encode(), value=v)
        if rate and i % 50 == 0:
            ahead = i / rate - (time.perf_counter() - t0)
            if ahead > 0:
                producer.flush()
                time.sleep(ahead)
    producer.flush()
    producer.close()


async def bare_bulk(values: list[bytes], index: str) -> float:
    """The ceiling: the client's bulk helper over documents already built."""
    es = async_client(ES_URL)
    await es.indices.put_index_template(name=index, **template_body(index))
    now = datetime.now(UTC)
    docs = []
    for v in values:
        f = Finding.model_validate_json(v)
        docs.append(
            {
                "_op_type": "create",
                "_index": index_for(f.timestamp, index),
                "_id": f.finding_id,
                "_source": document(f, ingested=now),
            }
        )
    t0 = time.perf_counter()
    ok, _ = await async_bulk(es, docs, chunk_size=1000, raise_on_error=False)
    elapsed = time.perf_counter() - t0
    await es.close()
    assert ok == len(values), f"bare bulk stored {ok} of {len(values)}"
    return len(values) / elapsed


async def sink_run(prefix: str, n: int) -> float:
    settings = Settings(broker=BROKER, topic_prefix=prefix, es_url=ES_URL, es_index=f"{prefix}f")
    sink = FindingsSink(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    while sink.settled == 0:
        await asyncio.sleep(0.005)
    t0 = time.perf_counter()
    first = sink.settled
    while sink.settled < n:
        await asyncio.sleep(0.005)
        if task.done():
            task.result()
    elapsed = time.perf_counter() - t0
    stop.set()
    await task
    return (n - first) / elapsed


def throughput(n: int, runs: int) -> tuple[list[float], list[float]]:
    # A first index on a fresh node pays for JIT warm-up; neither side should.
    asyncio.run(bare_bulk(findings(min(n, 5000), "warm"), f"warm{uuid.uuid4().hex[:6]}"))
    bare, sink = [], []
    for r in range(runs):
        values = findings(n, f"t{r}{uuid.uuid4().hex[:6]}")
        prefix = f"bs{uuid.uuid4().hex[:6]}."
        ensure_topics(BROKER, Topics(prefix), 4, retention_ms=3_600_000)
        publish(Topics(prefix).findings, values)
        bare.append(asyncio.run(bare_bulk(values, f"bare{uuid.uuid4().hex[:6]}")))
        sink.append(asyncio.run(sink_run(prefix, n)))
        print(f"  run {r + 1}: bare bulk {bare[-1]:,.0f}/s, sink {sink[-1]:,.0f}/s", flush=True)
    return bare, sink


def latency(rate: float, seconds: float) -> tuple[list[float], int]:
    """Offered at `rate`: append to the findings topic -> searchable (count-visible)."""
    n = int(rate * seconds)
    prefix = f"bl{uuid.uuid4().hex[:6]}."
    index = f"{prefix}f"
    ensure_topics(BROKER, Topics(prefix), 4, retention_ms=3_600_000)
    settings = Settings(broker=BROKER, topic_prefix=prefix, es_url=ES_URL, es_index=index)
    values = findings(n, prefix)
    written: list[str] = []
    visible_at: list[float] = []
    es = Elasticsearch(ES_URL)

    async def main() -> None:
        sink = FindingsSink(settings)
        sink.on_written = written.extend
        stop = asyncio.Event()
        task = asyncio.create_task(sink.run(stop))
        await asyncio.sleep(1.0)
        producer = asyncio.get_running_loop().run_in_executor(
            None, publish, Topics(prefix).findings, values, rate
        )
        # Writes become visible in the order ES acknowledged them (one shard:
        # a refresh shows everything acknowledged before it), so the k-th
        # written document is searchable at the first count that reaches k.
        seen = 0
        deadline = time.monotonic() + seconds + 60
        while seen < n and time.monotonic() < deadline:
            try:
                seen = int(es.count(index=index)["count"]) if es.indices.exists(index=index) else 0
            except Exception:
                seen = 0
            now = time.time()
            visible_at.extend([now] * (seen - len(visible_at)))
            await asyncio.sleep(0.05)
        await producer
        stop.set()
        await task

    asyncio.run(main())
    appended = _append_times(Topics(prefix).findings)
    lat = [visible_at[k] - appended[fid] for k, fid in enumerate(written[: len(visible_at)])]
    return lat, n


def _append_times(topic: str) -> dict[str, float]:
    from streams.kafka_io import read_topics

    return {r.key.decode(): r.timestamp / 1000 for r in read_topics(BROKER, [topic], 120)}


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--findings", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    a = ap.parse_args()
    env = {**os.environ, "SEPWATCH_KAFKA_PORT": KAFKA_PORT, "SEPWATCH_ES_PORT": ES_PORT}
    subprocess.run([str(KAFKA), "up"], check=True, env=env)
    subprocess.run([str(ES), "up"], check=True, env=env)
    try:
        print(f"throughput: {a.findings:,} findings, {a.runs} runs", flush=True)
        bare, sink = throughput(a.findings, a.runs)
        mb, ms = statistics.median(bare), statistics.median(sink)
        print(f"latency: {a.rate:,.0f} findings/s offered for {a.seconds:.0f} s", flush=True)
        lat, n = latency(a.rate, a.seconds)
        print()
        print("| measure | median | range |")
        print("|---|---|---|")
        print(f"| bare bulk helper, docs/s | {mb:,.0f} | {min(bare):,.0f}-{max(bare):,.0f} |")
        print(f"| sink from Kafka, findings/s | {ms:,.0f} | {min(sink):,.0f}-{max(sink):,.0f} |")
        print(f"| sink / bare bulk | {ms / mb:.2f} | target >= 0.80 |")
        print(
            f"| append -> searchable at {a.rate:,.0f}/s ({len(lat):,} of {n:,}) | "
            f"p50 {pct(lat, 50) * 1000:,.0f} ms | p99 {pct(lat, 99) * 1000:,.0f} ms "
            "(target p99 < 2 s) |"
        )
    finally:
        subprocess.run([str(ES), "down"], check=False, env=env)
        subprocess.run([str(KAFKA), "down"], check=False, env=env)


if __name__ == "__main__":
    main()
