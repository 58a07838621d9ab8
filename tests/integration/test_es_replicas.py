"""The findings template's replicas on a real Elasticsearch (issue 19): by
default one where a second data node could hold it, none on a single node
(the test node), and what SEPWATCH_ES_REPLICAS says when set."""

from __future__ import annotations

from elasticsearch import Elasticsearch

from streams.indices import put_template


def _replicas(es: Elasticsearch, name: str) -> str:
    [template] = es.indices.get_index_template(name=name)["index_templates"]
    return str(template["index_template"]["template"]["settings"]["index"]["number_of_replicas"])


def test_the_template_replicas_follow_the_data_nodes_or_the_setting(
    elasticsearch: str, prefix: str
) -> None:
    es = Elasticsearch(elasticsearch, request_timeout=30)
    name = f"{prefix.rstrip('.')}-findings"
    try:
        assert es.cluster.health()["number_of_data_nodes"] == 1
        put_template(es, name)
        assert _replicas(es, name) == "0"
        put_template(es, name, 1)
        assert _replicas(es, name) == "1"
    finally:
        es.indices.delete_index_template(name=name)
        es.close()
