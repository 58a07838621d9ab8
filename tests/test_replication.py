"""Replication settings with production defaults (issue 19): Kafka topics
and the findings indices keep copies wherever the cluster can hold them."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors.pseudonyms import Pseudonymiser
from streams.elastic import replicas_for, template_body
from streams.kafka_io import KafkaUnavailable, Replication
from streams.settings import Settings


@pytest.mark.parametrize(
    ("brokers", "factor", "min_insync"), [(1, 1, 1), (2, 2, 1), (3, 3, 2), (6, 3, 2)]
)
def test_the_defaults_follow_the_cluster(brokers: int, factor: int, min_insync: int) -> None:
    assert Replication.for_cluster(brokers) == Replication(factor, min_insync)
    assert Replication.for_cluster(brokers).configs() == {"min.insync.replicas": str(min_insync)}


def test_settings_win_and_impossible_ones_are_refused_with_the_reason() -> None:
    assert Replication.for_cluster(5, 5) == Replication(5, 4)
    assert Replication.for_cluster(3, 3, 3) == Replication(3, 3)
    with pytest.raises(KafkaUnavailable, match="REPLICATION_FACTOR is 3, but the cluster has 1"):
        Replication.for_cluster(1, 3)
    with pytest.raises(KafkaUnavailable, match="MIN_INSYNC_REPLICAS is 3, more than"):
        Replication.for_cluster(3, 2, 3)


def test_findings_indices_get_a_replica_where_a_second_data_node_holds_it() -> None:
    assert [replicas_for(None, n) for n in (1, 2, 5)] == [0, 1, 1]
    assert replicas_for(2, 1) == 2  # asked for: what Elasticsearch makes of it is its own
    settings = template_body("f", replicas=replicas_for(None, 3))["template"]["settings"]
    assert settings["number_of_replicas"] == 1


def test_the_faust_app_gets_the_resolved_replication_and_every_bootstrap_server(
    tmp_path: Path,
) -> None:
    from schemas.policy_file import load_policy
    from streams.topology import build_app

    policy = load_policy(Path(__file__).parents[1] / "deploy" / "policy" / "example.yaml")
    settings = Settings(
        state_dir=tmp_path,
        web_port=0,
        broker="127.0.0.1:27192, 127.0.0.1:27194,127.0.0.1:27196",
        replication_factor=3,
        min_insync_replicas=2,
    )
    app = build_app(settings, policy, pseudonyms=Pseudonymiser(b"replication-test-key"))
    assert app.conf.topic_replication_factor == 3
    assert [(u.host, u.port) for u in app.conf.broker] == [
        ("127.0.0.1", 27192),
        ("127.0.0.1", 27194),
        ("127.0.0.1", 27196),
    ]
    assert not (app.conf.web_tables_enabled or app.conf.web_router_enabled)
