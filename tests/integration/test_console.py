"""The SOC console in a real browser (Debian's chromium, headless, driven by
Playwright) against real Elasticsearch nodes holding a replayed simulated day:
the shared plain node (the local operator: filter, a finding, the overview's
figures, Korean, the screenshots in docs/images/) and a secured node (sign-in
with Elasticsearch users: an analyst acknowledges, a read-only user cannot, a
POST without the CSRF token is refused)."""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch
from elasticsearch.helpers import bulk
from PIL import Image

from bench.harness import free_port
from console.i18n import WORDS
from console.serve import InThread as ConsoleServer
from schemas import Finding
from streams.elastic import document, index_for
from streams.indices import put_template
from streams.kafka_io import ensure_topics
from streams.lifecycle import lifecycle_index, record
from streams.settings import Settings
from streams.topics import Topics
from tests.integration.conftest import POLICY, ROOT
from tests.integration.test_secure_elasticsearch import INDEX as SECURE_INDEX
from tests.integration.test_secure_elasticsearch import SecureNode
from tests.integration.test_secure_elasticsearch import secure_es as secure_es  # a fixture
from tests.integration.test_stream import _day, _replayed

pytestmark = pytest.mark.integration
CHROMIUM = Path("/usr/bin/chromium")
IMAGES = ROOT / "docs" / "images"
ENTITY = "HQ"


@pytest.fixture(scope="module")
def day() -> list[dict[str, Any]]:
    return list(_replayed(_day(users=40, hours=3)).values())


def _load(es: Elasticsearch, index: str, findings: list[dict[str, Any]]) -> None:
    """The replayed findings, stored as the sink stores them, beside an empty
    lifecycle index (with, on a secured node, the pipeline naming the actor)."""
    put_template(es, index)
    actions = []
    for raw in findings:
        f = Finding.model_validate(raw)
        actions.append(
            {
                "_op_type": "create",
                "_index": index_for(f.timestamp, index),
                "_id": f.finding_id,
                "_source": document(f),
            }
        )
    ok, errors = bulk(es, actions, refresh="wait_for", raise_on_error=False)
    assert not errors and ok == len(findings)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium for the module (the system's: never a download)."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail("no /usr/bin/chromium: run deploy/local/debian-packages.sh (make system)")
    # launch() gives chromium a fresh temporary --user-data-dir of its own
    # (Playwright refuses one in args; it is removed when the browser closes).
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


@pytest.fixture(scope="module")
def plain(elasticsearch: str, day: list[dict[str, Any]]) -> Iterator[tuple[ConsoleServer, str]]:
    index = f"console-{uuid.uuid4().hex[:8]}-findings"
    es = Elasticsearch(elasticsearch, request_timeout=60)
    _load(es, index, day)
    settings = Settings(es_url=elasticsearch, es_index=index, policy=POLICY, broker="127.0.0.1:1")
    with ConsoleServer(settings) as server:
        yield server, index
    es.indices.delete(index=f"{index}-*,{lifecycle_index(index)}")
    es.indices.delete_index_template(name=index)
    es.indices.delete_index_template(name=lifecycle_index(index))
    es.close()


def _not_blank(path: Path) -> None:
    with Image.open(path) as img:
        gray = img.convert("L")
        dark = sum(gray.histogram()[:128])
    assert dark > 2000, f"{path} looks blank ({dark} dark pixels)"


def test_findings_filter_a_finding_and_korean_on_the_plain_node(
    browser: Any, plain: tuple[ConsoleServer, str], day: list[dict[str, Any]]
) -> None:
    server, _ = plain
    IMAGES.mkdir(parents=True, exist_ok=True)
    ctx = browser.new_context(locale="ko-KR", viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.goto(f"{server.url}/findings")
    # Security off: the page says so, and the operator is the local one.
    assert "보안(인증)이 꺼져" in page.inner_text(".banner")
    assert page.inner_text("#whoami") == "local-operator"
    assert page.locator("html").get_attribute("lang") == "ko"
    assert "탐지 결과" in page.inner_text("h1")
    page.screenshot(path=str(IMAGES / "console-findings.png"))
    _not_blank(IMAGES / "console-findings.png")

    # Filter by rule and entity with the form: the choice lands in the URL and
    # every row and the count follow it.
    by_rule = Counter((f["rule_id"], f["entity"]) for f in day)
    (rule, entity), want = by_rule.most_common(1)[0]
    page.select_option("select[name=rule]", rule)
    page.select_option("select[name=entity]", entity)
    page.click("form.filters button[type=submit]")
    page.wait_for_url(f"**rule={rule}**")
    assert f"entity={entity}" in page.url
    rows = page.locator("#rows tr")
    assert rows.count() == min(want, 50)
    assert set(rows.locator("td:nth-child(2)").all_inner_texts()) == {rule}
    assert f"{want:,}" in page.inner_text("h1 small")
    # The facet counts: each severity's count equals the replayed findings'.
    sev = Counter(f["severity"] for f in day if (f["rule_id"], f["entity"]) == (rule, entity))
    options = page.locator("select[name=severity] option").all_inner_texts()
    for s, n in sev.items():
        assert f"{s} ({n:,})" in options

    # A shared URL opens the same view.
    shared = ctx.new_page()
    shared.goto(page.url)
    assert shared.locator("#rows tr").count() == rows.count()
    shared.close()

    # A finding, by keyboard: the first row's link, then Enter.
    first = rows.first.locator("a")
    first.focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**/findings/*")
    assert rule in page.inner_text("h1")
    assert "관련 규정" in page.inner_text("main")
    page.screenshot(path=str(IMAGES / "console-finding.png"), full_page=True)

    page.goto(f"{server.url}/policy")
    assert "SaaS 등록부" in page.inner_text("main")
    page.screenshot(path=str(IMAGES / "console-policy.png"), full_page=True)

    # Switch to English and back: a real link.
    page.click("header a[lang=en]")
    assert page.locator("html").get_attribute("lang") == "en"
    assert "SaaS registry" in page.inner_text("main")
    ctx.close()


def test_overview_figures_equal_the_replayed_findings(
    browser: Any, elasticsearch: str, plain: tuple[ConsoleServer, str], day: list[dict[str, Any]]
) -> None:
    server, index = plain
    ctx = browser.new_context(locale="ko-KR", viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.goto(f"{server.url}/overview?entity={ENTITY}")
    mine = [f for f in day if f["entity"] == ENTITY and f["status"] in ("open", "acknowledged")]
    assert mine, "the simulated day has open findings at HQ"
    assert int(page.inner_text("#open-total")) == len(mine)
    want = Counter((f["rule_id"], f["severity"]) for f in mine)
    got: Counter[tuple[str, str]] = Counter()
    for row in page.locator("#open-by-rule tbody tr").all():
        rid = row.get_attribute("data-rule")
        for cell in row.locator("td").all():
            n = int(cell.inner_text())
            if n:
                got[(str(rid), str(cell.get_attribute("data-severity")))] = n
    assert got == want
    # The trend's days (its table for screen readers) add up to the last 30 days' findings.
    start = (datetime.now(UTC) - timedelta(days=29)).date().isoformat()
    recent = [f for f in day if f["entity"] == ENTITY and f["timestamp"][:10] >= start]
    cells = page.locator(".trend + table td:nth-child(2)").all_inner_texts()
    assert sum(int(c) for c in cells) == len(recent)
    # Every entity is offered, not only the one shown.
    links = page.locator("nav.entities a").all_inner_texts()
    assert set(links[1:]) == {f["entity"] for f in day}
    page.screenshot(path=str(IMAGES / "console-overview.png"), full_page=True)
    _not_blank(IMAGES / "console-overview.png")
    assert "미처리 탐지 결과" in page.inner_text("main")

    # A finding resolved by a lifecycle record (its document unchanged) leaves
    # the open figures, and the findings page counts and filters it as resolved.
    done = next(f for f in mine if f["user_id"])
    es = Elasticsearch(elasticsearch, request_timeout=30)
    record(es, index, done["finding_id"], "resolve", at=datetime.now(UTC), reason="patched")
    es.close()
    page.reload()
    assert int(page.inner_text("#open-total")) == len(mine) - 1
    cell = page.locator(
        f"#open-by-rule tr[data-rule='{done['rule_id']}'] td[data-severity='{done['severity']}']"
    )
    assert int(cell.inner_text()) == want[(done["rule_id"], done["severity"])] - 1
    page.goto(f"{server.url}/findings?status=resolved&entity={ENTITY}")
    assert page.locator("#rows tr a").all_inner_texts() == [done["rule_id"]]
    resolved = f"{WORDS['ko']['resolved']} (1)"
    assert resolved in page.locator("select[name=status] option").all_inner_texts()
    # Under a user filter (a field the records lack) the count is as exact.
    page.goto(f"{server.url}/findings?user={done['user_id']}")
    assert resolved in page.locator("select[name=status] option").all_inner_texts()
    ctx.close()


# -- the secured node: people sign in with their Elasticsearch users --------------

READER = "sepwatch-reader"  # deploy/local/elasticsearch.sh: the read-only file-realm user


@pytest.fixture(scope="module")
def secured(
    broker: str,
    secure_es: SecureNode,
    day: list[dict[str, Any]],
) -> Iterator[tuple[ConsoleServer, Elasticsearch, str]]:
    admin = secure_es.client("elastic", secure_es.admin_password)
    # The node is the session's and its roles name one findings alias, which
    # test_secure_elasticsearch's worker also writes: each module finds it
    # holding only what it writes itself, whichever runs first.
    _forget_findings(admin)
    _load(admin, SECURE_INDEX, day)
    # The records' copies go to the lifecycle topic, as the CLI's do.
    prefix = f"console{uuid.uuid4().hex[:8]}."
    ensure_topics(broker, Topics(prefix), 1, retention_ms=3_600_000)
    reader_password = (secure_es.ca.parents[2] / f"{READER}-password").read_text().strip()
    settings = Settings(
        es_url=secure_es.url,
        es_index=SECURE_INDEX,
        es_ca_file=secure_es.ca,
        es_username="sepwatch-analyst",
        es_password=secure_es.analyst_password,
        policy=POLICY,
        broker=broker,
        topic_prefix=prefix,
    )
    with ConsoleServer(settings) as server:
        yield server, admin, reader_password
    _forget_findings(admin)
    admin.close()


def _forget_findings(admin: Elasticsearch) -> None:
    """The findings and lifecycle records under the secured node's alias (its
    templates, pipeline and roles stay)."""
    admin.indices.delete(
        index=f"{SECURE_INDEX}-*,{lifecycle_index(SECURE_INDEX)}",
        ignore_unavailable=True,
        allow_no_indices=True,
    )


def _records(admin: Elasticsearch, fid: str) -> list[dict[str, Any]]:
    """The finding's lifecycle records in Elasticsearch, read as the superuser."""
    admin.indices.refresh(index=lifecycle_index(SECURE_INDEX))
    hits = admin.search(
        index=lifecycle_index(SECURE_INDEX),
        query={"term": {"sepwatch.finding_id": fid}},
        sort=[{"sepwatch.seq": "asc"}],
    )["hits"]["hits"]
    return [h["_source"] for h in hits]


def _stored_status(admin: Elasticsearch, fid: str) -> str:
    """The status in the finding's own document (never changed by triage)."""
    hits = admin.search(index=SECURE_INDEX, query={"ids": {"values": [fid]}})["hits"]["hits"]
    return str(hits[0]["_source"]["sepwatch"]["status"])


def _sign_in(browser: Any, url: str, user: str, password: str) -> Any:
    ctx = browser.new_context(locale="ko-KR", viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    page.goto(f"{url}/findings")
    page.wait_for_url("**/signin")
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", password)
    page.click("form.signin button")
    page.wait_for_url("**/findings")
    return page


def test_an_analyst_acknowledges_as_herself_a_reader_cannot_and_csrf_is_required(
    browser: Any,
    secure_es: SecureNode,
    secured: tuple[ConsoleServer, Elasticsearch, str],
) -> None:
    server, admin, reader_password = secured
    # A wrong password is refused, and never echoed.
    ctx = browser.new_context()
    bad = ctx.new_page()
    bad.goto(f"{server.url}/signin")
    bad.fill("input[name=user]", "sepwatch-analyst")
    bad.fill("input[name=password]", "not-the-password")
    bad.click("form.signin button")
    assert bad.locator(".error").count() == 1
    assert "not-the-password" not in bad.content()
    ctx.close()

    page = _sign_in(browser, server.url, "sepwatch-analyst", secure_es.analyst_password)
    assert page.inner_text("#whoami") == "sepwatch-analyst"
    cookie = next(c for c in page.context.cookies() if c["name"] == "sepwatch_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.goto(f"{server.url}/findings?status=open")
    page.locator("#rows tr a").first.click()
    page.wait_for_url("**/findings/*")
    fid = page.url.rsplit("/", 1)[1]

    # A POST without the token (another site's form, a script) is refused.
    refused = page.request.post(f"{server.url}/findings/{fid}/acknowledge", form={"note": "x"})
    assert refused.status == 403
    assert _records(admin, fid) == []

    page.click("#acknowledge")
    page.wait_for_selector("#status.status-acknowledged")
    # A lifecycle record naming the person the node authenticated; the
    # finding's own document is as the engine stored it.
    (acked,) = _records(admin, fid)
    assert acked["sepwatch"]["actor"]["username"] == "sepwatch-analyst"
    assert acked["sepwatch"]["actor"]["realm"]["type"] == "file"
    assert (acked["sepwatch"]["from_status"], acked["sepwatch"]["to_status"]) == (
        "open",
        "acknowledged",
    )
    assert _stored_status(admin, fid) == "open"
    assert "sepwatch-analyst" in page.inner_text("#lifecycle")
    assert page.locator("#triage + .error").count() == 0  # copied to the lifecycle topic

    # The read-only person sees the finding, no buttons; the server refuses anyway.
    reader = _sign_in(browser, server.url, READER, reader_password)
    reader.goto(f"{server.url}/findings/{fid}")
    assert reader.inner_text("#status") == WORDS["ko"]["acknowledged"]
    assert reader.locator("#read-only").count() == 1
    assert reader.locator("#reopen, #resolve, #acknowledge, #waive").count() == 0
    # With the reader's own valid token (from the sign-out form): still refused.
    token = reader.locator("input[name=csrf]").first.get_attribute("value")
    forged = reader.request.post(
        f"{server.url}/findings/{fid}/reopen", form={"csrf": token, "note": "x"}
    )
    assert forged.status == 403
    assert len(_records(admin, fid)) == 1
    reader.context.close()

    # Reopen, with a reason, as the analyst: the second record.
    page.reload()
    page.fill("form[action$='/reopen'] input[name=note]", "not fixed")
    page.click("#reopen")
    page.wait_for_selector("#status.status-open")
    reopened = _records(admin, fid)[1]
    assert reopened["sepwatch"]["actor"]["username"] == "sepwatch-analyst"
    assert reopened["event"] == {
        "action": "reopen",
        "kind": "event",
        "dataset": "sepwatch.lifecycle",
        "reason": "not fixed",
    }
    page.context.close()


def test_export_streams_the_filtered_set(
    plain: tuple[ConsoleServer, str], day: list[dict[str, Any]]
) -> None:
    import urllib.request

    server, _ = plain
    rule = Counter(f["rule_id"] for f in day).most_common(1)[0][0]
    with urllib.request.urlopen(f"{server.url}/findings/export.jsonl?rule={rule}") as resp:
        got = [json.loads(line) for line in resp.read().decode().splitlines()]
    assert sorted(f["finding_id"] for f in got) == sorted(
        f["finding_id"] for f in day if f["rule_id"] == rule
    )
    times = [f["timestamp"] for f in got]
    assert times == sorted(times, reverse=True)


def test_behind_a_proxy_the_trusted_header_names_the_person(
    elasticsearch: str, plain: tuple[ConsoleServer, str]
) -> None:
    import urllib.error
    import urllib.request

    _, index = plain
    settings = Settings(
        es_url=elasticsearch,
        es_index=index,
        policy=POLICY,
        broker="127.0.0.1:1",
        console_trusted_header="X-Forwarded-User",
    )
    with ConsoleServer(settings) as proxied:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{proxied.url}/findings")
        assert refused.value.code == 401
        ask = urllib.request.Request(
            f"{proxied.url}/findings", headers={"X-Forwarded-User": "kim.analyst"}
        )
        with urllib.request.urlopen(ask) as resp:
            assert '<b id="whoami">kim.analyst</b>' in resp.read().decode()


def test_the_console_command_says_where_and_stops_cleanly_on_ctrl_c(
    elasticsearch: str, plain: tuple[ConsoleServer, str]
) -> None:
    """`sepwatch console` (which `make demo` ends with): the address it prints
    answers, and Ctrl-C (SIGINT) ends it with status 0 and no traceback."""
    import signal
    import subprocess
    import sys
    import urllib.request

    _, index = plain
    port = free_port()
    env = {
        **os.environ,
        "SEPWATCH_ES_URL": elasticsearch,
        "SEPWATCH_ES_INDEX": index,
        "SEPWATCH_POLICY": str(POLICY),
        "SEPWATCH_CONSOLE_PORT": str(port),
        "COLUMNS": "200",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "console"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        said = ""
        # uvicorn says "running on" once its socket listens ("Application
        # startup complete" comes before the bind: too early to connect).
        while "Uvicorn running on" not in said:
            line = proc.stdout.readline()
            assert line, f"the console ended before serving:\n{said}"
            said += line
        assert f"http://127.0.0.1:{port}/" in said
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/findings") as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, said + rest
    assert "Traceback" not in rest and "Aborted" not in rest
    assert "Shutting down" in rest
