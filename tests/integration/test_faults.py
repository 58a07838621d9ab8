"""Fault injection (issue 7, part 2) on a small day: a worker SIGKILLed again
and again, the broker restarted under it, Elasticsearch stopped while findings
come and a worker killed meanwhile; afterwards every finding the replay gives
is in Elasticsearch exactly once and every critical finding reached a signed
webhook, delivered again only after a fault.

The scenario is bench.outages's; the suite runs it on a small day with each
outage only as long as it takes to show (the sink holding findings it cannot
index). The long form, a bank's day of 200,000 events with a minute's outage,
is `python -m bench.outages` (docs/BENCHMARKS.md).

Everything is real and on loopback: the broker and the node are the session's
own (deploy/local scripts, on SEPWATCH_TEST_KAFKA_PORT / SEPWATCH_TEST_ES_PORT),
the receiver is a signed webhook served by the run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.outages import day, one_run
from tests.integration.conftest import ES_PORT, PORT

pytestmark = [pytest.mark.integration, pytest.mark.slow]
EVENTS = int(os.environ.get("SEPWATCH_TEST_FAULT_EVENTS", "20000"))


def test_faults_lose_no_finding_and_duplicate_none(
    broker: str, elasticsearch: str, tmp_path: Path
) -> None:
    o = one_run(int(PORT), int(ES_PORT), day(EVENTS), outage_s=0.0, workdir=tmp_path)
    print(
        f"\n{o.events} events, {o.wanted} findings, {o.critical} critical; {o.seconds:.0f} s; "
        f"faults: {o.faults}; deliveries {o.deliveries}, ids delivered again {o.redelivered}"
    )
    assert o.critical, "the day should hold critical findings for this test to mean much"
    assert sum("SIGKILL" in f for f in o.faults) == 4, o.faults
    assert o.settled, "not everything stored, notified and committed in time"
    assert not o.lost, f"{len(o.lost)} findings lost: {o.lost[:5]}"
    assert not o.extra, f"{len(o.extra)} unexpected findings: {o.extra[:5]}"
    assert not o.stored_twice, f"stored more than once: {o.stored_twice[:5]}"
    assert o.not_notified == 0 and o.notified_unexpected == 0, (
        f"not notified {o.not_notified}, unexpected {o.notified_unexpected}"
    )
    assert not o.unexplained, f"delivered again with no fault after the first: {o.unexplained}"
