"""The corpus check: every vendor file under tests/fixtures/vendors through its
adapter (`python -m bench.adapters --corpus tests/fixtures/vendors`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters import ADAPTERS
from adapters.mapping import VendorMapping
from bench.adapters import corpus, print_corpus, source_of_file
from tests.adapters.conftest import VENDORS

# What adapt_one says when an adapter met a shape it did not check for: a bug
# of the adapter's, never what a record in the corpus may end in.
GENERIC = "unexpected shape ("


def test_every_corpus_file_maps_or_is_refused_for_a_specific_reason(
    mapping: VendorMapping, capsys: pytest.CaptureFixture[str]
) -> None:
    reports = corpus(VENDORS, mapping)
    assert {r.path for r in reports if r.source is None} == set()
    for r in reports:
        assert r.counts.records > 0, r.path
        generic = [reason for reason in r.counts.dead_reasons if GENERIC in reason]
        assert not generic, (r.path, generic)
    # Every source the corpus holds gives events somewhere in it.
    sources = {r.source for r in reports}
    assert sources == set(ADAPTERS)
    with_events = {r.source for r in reports if r.counts.events}
    assert with_events == sources
    print_corpus(reports)
    out = capsys.readouterr().out
    assert "okta-misrouted-slack-audit.log" in out and "unrecognised shape for okta" in out
    assert "skipped    2  Blocked" in out


def test_every_corpus_file_has_its_provenance_beside_it(mapping: VendorMapping) -> None:
    """One convention (tests/fixtures/vendors/README.md): `<file>.provenance.md`
    beside it, saying where the records came from and what they are."""
    missing, empty = [], []
    for r in corpus(VENDORS, mapping):
        provenance = VENDORS / r.path.parent / f"{r.path.name}.provenance.md"
        if not provenance.is_file():
            missing.append(str(r.path))
        elif len(provenance.read_text().strip().splitlines()) < 3:  # a title, then the source
            empty.append(str(r.path))
    assert (missing, empty) == ([], [])
    # No provenance left for a file that is gone.
    for provenance in VENDORS.rglob("*.provenance.md"):
        assert provenance.with_name(provenance.name.removesuffix(".provenance.md")).is_file()


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("okta-logs-page.json", "okta"),
        ("day/okta.json", "okta"),
        ("entra-signin-graph-page.json", "entra-signin"),
        ("zscaler-nss-web.jsonl", "zscaler-zia"),
        ("google-workspace-drive-elastic.log", "google-workspace"),
        ("cef-dlp.log", "cef-dlp"),
        ("README.md", None),
        ("splunk-export.json", None),
    ],
)
def test_a_corpus_file_is_named_after_its_source(name: str, source: str | None) -> None:
    assert source_of_file(Path(name)) == source
