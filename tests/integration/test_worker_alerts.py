"""The alert router inside a real `sepwatch worker`: findings of a streamed
day reach a signed webhook, every critical one notified, waived ones never."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.kafka_io import ensure_topics, produce
from streams.topics import Topics
from tests.integration.conftest import MARKER_KEY, POLICY, Worker
from tests.integration.receivers import SignedWebhook
from tests.integration.settle import settled
from tests.integration.test_stream import _day, _replayed

pytestmark = pytest.mark.integration
SECRET = "s3cret-for-tests"


class Receiver:
    """A signed webhook served from its own event loop while the test waits."""

    def __init__(self) -> None:
        self.hook = SignedWebhook(SECRET)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.Event()
            async with self.hook:
                self._ready.set()
                await self._stop.wait()

        self.loop.run_until_complete(main())

    def __enter__(self) -> Receiver:
        self.thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)

    def notifications(self) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in self.hook.accepted()]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def test_a_worker_notifies_every_critical_finding_once_and_never_a_waived_one(
    broker: str, prefix: str, tmp_path: Path, receiver: Receiver
) -> None:
    policy = yaml.safe_load(POLICY.read_text())
    policy["alerting"]["routes"] = [
        {"name": "critical", "match": {"severity": "critical"}, "channels": ["siem"]}
    ]
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(yaml.safe_dump(policy, allow_unicode=True))
    lines = _day(seed=17)
    want = _replayed(lines)
    critical = {k for k, f in want.items() if f["severity"] == "critical" and f["status"] == "open"}
    waived = {k for k, f in want.items() if f["status"] == "waived"}
    assert critical, "the simulated day should hold critical findings"
    ensure_topics(broker, Topics(prefix), 4, retention_ms=3_600_000)
    env = {
        "SEPWATCH_CHANNELS__SIEM__KIND": "webhook",
        "SEPWATCH_CHANNELS__SIEM__URL": receiver.hook.url + "/intake",
        "SEPWATCH_CHANNELS__SIEM__SECRET": SECRET,
    }
    worker = Worker(broker, prefix, tmp_path / "state", tmp_path / "w.log", policy_path, env=env)
    try:
        worker.wait_ready()
        produce(lines, broker, Topics(prefix), end_of_input=True, marker_key=MARKER_KEY)
        deadline = time.monotonic() + 120
        notified: set[str] = set()
        while time.monotonic() < deadline and not critical <= notified:
            time.sleep(0.5)
            notified = {
                fid
                for n in receiver.notifications()
                if n["kind"] == "firing"
                for fid in n["finding_ids"]
            }
        # Every finding read and its notifications delivered (the router
        # commits after delivery): a second notification would be here now.
        settled(broker, Topics(prefix), alerts=True)
    finally:
        worker.stop()
    firing = [n for n in receiver.notifications() if n["kind"] == "firing"]
    per_finding: dict[str, int] = {}
    for n in firing:
        for fid in n["finding_ids"]:
            per_finding[fid] = per_finding.get(fid, 0) + 1
    assert set(per_finding) == critical, "only the critical route, every critical finding"
    assert all(c == 1 for c in per_finding.values()), "a finding notified twice"
    assert not (set(per_finding) & waived)
    assert all(n["severity"] == "critical" for n in firing)
    assert receiver.hook.requests and all(r.status == 200 for r in receiver.hook.requests)
