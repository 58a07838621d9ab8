"""The device identity graph (detectors/identity.py) and the engine's use of it."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from detectors import Engine, EngineState
from detectors.identity import IdentityGraph
from schemas import EventAdapter, Policy
from tests import cases

DAY = 86400.0
T0 = datetime(2026, 6, 1, tzinfo=UTC)
INTUNE = [
    ("intune_device_id", "i-1"),
    ("entra_device_id", "e-1"),
    ("serial", "sn1"),
    ("hostname", "pc-1"),
]
FALCON = [("falcon_aid", "f-1"), ("hostname", "pc-1"), ("serial", "sn1")]


def _graph() -> tuple[IdentityGraph, dict[str, Any], Counter[str]]:
    store: dict[str, Any] = {}
    stats: Counter[str] = Counter()
    return IdentityGraph(store, stats), store, stats


def test_one_laptop_named_by_intune_and_falcon_is_one_device() -> None:
    graph, _, stats = _graph()
    device = graph.learn("e-1", INTUNE, 0.0, "intune")
    assert graph.learn("f-1", FALCON, 10.0, "crowdstrike") == device == "e-1"
    for name in ("i-1", "e-1", "sn1", "pc-1", "f-1", "F-1"):
        assert graph.resolve(name) == "e-1"
    assert graph.resolve("unknown-id") == "unknown-id"
    assert stats["identity.conflicts"] == 0
    assert {n for n, _ in graph.aliases_of("e-1")} == {"i-1", "e-1", "sn1", "pc-1", "f-1"}


def test_a_reimaged_laptop_keeps_its_device_by_serial() -> None:
    graph, _, _ = _graph()
    graph.learn("e-1", INTUNE, 0.0, "intune")
    reimaged = [("intune_device_id", "i-2"), ("entra_device_id", "e-2"), ("serial", "sn1")]
    assert graph.learn("e-2", reimaged, 5 * DAY, "intune") == "e-1"
    assert graph.resolve("e-2") == "e-1"
    assert graph.resolve("e-1") == "e-1"  # the old id still names it until it expires


def test_a_hostname_alone_never_merges_two_serials_and_goes_to_the_newer() -> None:
    graph, _, stats = _graph()
    graph.learn("e-1", INTUNE, 0.0, "intune")
    other = [("falcon_aid", "f-9"), ("hostname", "pc-1"), ("serial", "sn9")]
    assert graph.learn("f-9", other, 10.0, "crowdstrike") == "f-9"
    assert graph.resolve("pc-1") == "f-9"  # the more recent assertion
    assert graph.resolve("sn1") == "e-1"
    assert stats["identity.conflicts"] == 1
    (conflict,) = graph.conflicts
    assert (conflict.alias, conflict.held_by, conflict.winner) == ("pc-1", "e-1", "f-9")


def test_an_older_assertion_loses_the_conflict_but_is_counted() -> None:
    graph, _, stats = _graph()
    graph.learn("f-9", [("falcon_aid", "f-9"), ("hostname", "pc-1"), ("serial", "sn9")], 10.0, "cs")
    graph.learn("e-1", INTUNE, 0.0, "intune")  # late, and older
    assert graph.resolve("pc-1") == "f-9"
    assert stats["identity.conflicts"] == 1
    assert graph.conflicts[0].winner == "f-9"


def test_a_hand_written_entry_overrides_what_is_learned() -> None:
    graph, _, _ = _graph()
    graph.learn("e-1", INTUNE, 100.0, "intune")
    pinned = [("mapping", "laptop-7"), ("falcon_aid", "f-1"), ("serial", "sn1")]
    assert graph.learn("laptop-7", pinned, 0.0, "crowdstrike") == "laptop-7"
    assert graph.resolve("sn1") == "laptop-7"  # older, but hand-written
    graph.learn("e-1", INTUNE, 200.0, "intune")  # a newer learned claim
    assert graph.resolve("sn1") == "laptop-7"
    assert graph.resolve("e-1") == "laptop-7"  # joined by its serial


def test_aliases_not_asserted_within_the_ttl_expire_and_free_their_device() -> None:
    graph, store, stats = _graph()
    graph.learn("e-1", INTUNE, 0.0, "intune")
    graph.learn("f-2", [("falcon_aid", "f-2"), ("serial", "sn2")], 40 * DAY, "cs")
    assert graph.expire(40 * DAY - 30 * DAY) == 4
    assert graph.resolve("pc-1") == "pc-1"
    assert graph.aliases_of("e-1") == []
    assert "d|e-1" not in store
    assert graph.resolve("sn2") == "f-2"
    assert stats["identity.aliases_expired"] == 4


def test_state_survives_a_json_changelog() -> None:
    graph, store, _ = _graph()
    graph.learn("e-1", INTUNE, 0.0, "intune")
    graph.learn("f-9", [("hostname", "pc-1"), ("serial", "sn9")], 9.0, "cs")
    restored = IdentityGraph({k: json.loads(json.dumps(v)) for k, v in store.items()})
    for name in ("i-1", "e-1", "sn1", "pc-1", "sn9"):
        assert restored.resolve(name) == graph.resolve(name)
    assert restored.conflicts == graph.conflicts
    restored.learn("f-1", FALCON, 20.0, "crowdstrike")
    assert restored.resolve("f-1") == "e-1"


KINDS = ("serial", "hostname", "entra_device_id", "falcon_aid")
postures = st.lists(
    st.tuples(
        st.sampled_from(["d1", "d2", "d3"]),
        st.lists(
            st.tuples(st.sampled_from(KINDS), st.sampled_from(["a", "b", "c", "x"])), max_size=4
        ),
        st.integers(0, 100),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(postures)
def test_the_graph_stays_consistent_and_bounded(learned: list[Any]) -> None:
    graph, store, stats = _graph()
    for device_id, aliases, ts in learned:
        device = graph.learn(device_id, aliases, float(ts), "s")
        for _, value in [*aliases, ("device_id", device_id)]:
            # Each alias is the posture's device's, unless it lost a conflict just now.
            lost = any(c.alias == value and c.winner != device for c in graph.conflicts)
            assert graph.resolve(value) == device or lost
    # Every alias is listed under exactly the device it resolves to, and back.
    listed = {n: k[2:] for k, names in store.items() if k.startswith("d|") for n in names}
    held = {k[2:]: v[0] for k, v in store.items() if k.startswith("a|")}
    assert listed == held
    assert len(graph.conflicts) <= 32
    assert stats["identity.conflicts"] >= len(graph.conflicts)
    graph.expire(101.0)
    assert set(store) <= {"conflicts"}


def _posture(at: timedelta, device: str, aliases: list[tuple[str, str]], **controls: Any) -> Any:
    base = {"managed": True, "edr_running": None, "disk_encrypted": None, "screen_lock": None}
    return EventAdapter.validate_python(
        {
            "stream": "device_posture",
            "event_id": f"p-{device}-{at.total_seconds()}",
            "timestamp": (T0 + at).isoformat(),
            "entity": "HQ",
            "device_id": device,
            "os_patch_age_days": None,
            "jailbroken": None,
            **base,
            **controls,
            "device_aliases": [{"kind": k, "value": v} for k, v in aliases],
            "source": "s",
        }
    )


def _access(at: timedelta, device: str, event_id: str) -> Any:
    return EventAdapter.validate_python(
        {
            "stream": "saas_access",
            "event_id": event_id,
            "timestamp": (T0 + at).isoformat(),
            "entity": "HQ",
            "user_id": "kim@bank.example",
            "device_id": device,
            "saas_app": "m365",
            "action": "view",
            "network_zone": "internal",
            "source": "entra",
        }
    )


def _day(access_device: str) -> list[Any]:
    """Intune speaks for MDM, encryption and screen lock under the Entra id;
    Falcon for EDR and patches under its agent id; the access names one alias."""
    m = timedelta(minutes=1)
    return [
        _posture(m, "e-1", INTUNE, disk_encrypted=True, screen_lock=True, jailbroken=False),
        _posture(2 * m, "f-1", FALCON, managed=None, edr_running=False, os_patch_age_days=1),
        _access(10 * m, access_device, "a-1"),
    ]


def test_an_access_is_judged_against_every_posture_of_its_device() -> None:
    policy = Policy.model_validate(cases.base_policy())
    for alias in ("e-1", "f-1", "PC-1"):
        findings = Engine(policy, now=lambda: T0).run(_day(alias))
        posture = [f for f in findings if f.rule_id in ("SEP-006", "SEP-007")]
        assert [f.rule_id for f in posture] == ["SEP-006"], alias  # EDR down, not "no posture"
        assert posture[0].device_id == "e-1"
        assert posture[0].details.get("device_alias") == (None if alias == "e-1" else alias)


def test_without_the_aliases_the_same_day_is_posture_unknown() -> None:
    policy = Policy.model_validate(cases.base_policy())
    day = _day("pc-1")
    day[1] = day[1].model_copy(update={"device_aliases": None})
    day[0] = day[0].model_copy(update={"device_aliases": None})
    findings = Engine(policy, now=lambda: T0).run(day)
    assert "SEP-007" in [f.rule_id for f in findings]  # the test above could fail


def test_the_graph_restored_from_the_engine_stores_judges_alike() -> None:
    policy = Policy.model_validate(cases.base_policy())
    day = _day("pc-1")
    first = Engine(policy, now=lambda: T0)
    for event in day[:2]:
        first.process(event)
    state = EngineState(
        **{
            k: {a: json.loads(json.dumps(b)) for a, b in v.items()}
            for k, v in vars(first.state).items()
        }
    )
    again = Engine(policy, now=lambda: T0, state=state)
    found = [*again.process(day[2]), *again.flush()]
    whole = Engine(policy, now=lambda: T0).run(day)
    assert [f.finding_id for f in found] == [f.finding_id for f in whole]
    assert "SEP-006" in [f.rule_id for f in found]


def test_a_device_is_named_alike_whichever_posture_came_first() -> None:
    """The stream reads Intune's and Falcon's topics interleaved as it may:
    the device holding the postures may differ, its name in findings not."""
    intune_first, _, _ = _graph()
    intune_first.learn("e-1", INTUNE, 0.0, "intune")
    intune_first.learn("f-1", FALCON, 0.0, "crowdstrike")
    falcon_first, _, _ = _graph()
    falcon_first.learn("f-1", FALCON, 0.0, "crowdstrike")
    falcon_first.learn("e-1", INTUNE, 0.0, "intune")
    assert falcon_first.resolve("e-1") == "f-1"  # where its postures are held
    for graph in (intune_first, falcon_first):
        assert [graph.name_of(n) for n in ("f-1", "pc-1", "sn1", "e-1")] == ["e-1"] * 4
    assert falcon_first.name_of("elsewhere") == "elsewhere"
