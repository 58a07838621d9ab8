"""The findings' indices made ready: their templates (the findings', and the
lifecycle records' beside them) and the least-privilege roles that read and
write them (`sepwatch elasticsearch setup --roles`).

Above streams/elastic.py and streams/lifecycle.py, which it joins, so that
neither of those imports the other back."""

from __future__ import annotations

from typing import Any

from elasticsearch import Elasticsearch

from streams.elastic import access_index, replicas_for, template_body
from streams.lifecycle import lifecycle_index, put_lifecycle_template


def writer_role(index: str) -> dict[str, Any]:
    """What the worker's sink needs, and no more: create findings (never
    overwrite or delete one: `create_doc` allows only a new id), and have the
    month's index made by writing to it (`auto_configure`: from the template an
    admin installed, with its mapping and alias; never an index of its own
    making). No delete: retention is an administrator's job (`sepwatch
    elasticsearch retention`). No cluster privilege. Read, and create
    lifecycle records (never change one), for the vendors' DLP retractions
    (streams/retractions.py): they find the findings of the undone match and
    resolve them as this user."""
    return {
        "cluster": [],
        "indices": [
            {
                "names": [index, f"{index}-*"],
                "privileges": ["create_doc", "auto_configure", "read"],
            },
            {"names": [lifecycle_index(index)], "privileges": ["read", "create_doc"]},
        ],
    }


def analyst_role(index: str) -> dict[str, Any]:
    """What `findings list/show/ack/resolve/reopen/waive/export` and `report`
    need: read findings (never change one), and add lifecycle records (never
    change or delete one). `_security/_authenticate` needs no privilege."""
    return {
        "cluster": [],
        "indices": [
            # The findings, and the access tally the report reads beside them.
            {
                "names": [index, f"{index}-*", access_index(index)],
                "privileges": ["read", "view_index_metadata"],
            },
            {
                "names": [lifecycle_index(index)],
                "privileges": ["read", "view_index_metadata", "create_doc"],
            },
        ],
    }


def reader_role(index: str) -> dict[str, Any]:
    """Read the findings and their lifecycle records, add none (the console
    shows such a person no triage buttons, and Elasticsearch refuses their
    records anyway)."""
    return {
        "cluster": [],
        "indices": [
            {
                "names": [index, f"{index}-*", access_index(index), lifecycle_index(index)],
                "privileges": ["read", "view_index_metadata"],
            }
        ],
    }


def put_template(es: Elasticsearch, index: str, replicas: int | None = None) -> None:
    """The findings template, and the lifecycle records' (streams/lifecycle.py)."""
    data_nodes = es.cluster.health()["number_of_data_nodes"] if replicas is None else 0
    body = template_body(index, replicas=replicas_for(replicas, data_nodes))
    es.indices.put_index_template(name=index, **body)
    put_lifecycle_template(es, index)
