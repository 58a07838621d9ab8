"""The SOC console: server-rendered pages over the findings in Elasticsearch
(Starlette + Jinja2, htmx shipped in the package for the live parts).

Every change is a POST carrying the session's CSRF token; a triage action is
a lifecycle record added by `streams.lifecycle.record` with the signed-in
person's own credentials (the node stamps who they are), then copied to the
lifecycle topic, as `findings ack|resolve|reopen|waive` do. Logs name the
path and status only: never a query string (a filter may hold what someone
typed) and never a credential."""

from __future__ import annotations

import csv
import io
import json
import logging
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from elasticsearch import ApiError, AuthorizationException
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from console import queries
from console.auth import COOKIE, Gate, Person, SignInRefused
from console.i18n import LANGS, WORDS, pick_lang
from detectors import CATALOGUE
from review.i18n import rule_text
from schemas.policy_file import PolicyFile
from streams.elastic import STATUSES, FindingNotFound, get_finding
from streams.lifecycle import ACTIONS, TransitionRefused, actor_name, record, records_of
from streams.settings import Settings

log = logging.getLogger("sepwatch.console")
HERE = Path(__file__).parent
SEVERITIES = ("critical", "high", "medium", "low")
# The actions that say why (as the CLI's --note/--reason, which it requires).
WITH_REASON = ("resolve", "reopen", "waive")
EXPORT_COLUMNS = (
    "finding_id",
    "timestamp",
    "rule_id",
    "severity",
    "status",
    "entity",
    "saas_app",
    "user_id",
    "device_id",
    "summary",
)


class Console:
    """The pages, bound to one settings object and one policy file."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.index = settings.es_index
        self.gate = Gate(settings)
        self.reports_dir = Path(tempfile.mkdtemp(prefix="sepwatch-console-reports-"))
        self.env = Environment(
            loader=PackageLoader("console", "templates"),
            autoescape=select_autoescape(["html", "j2"]),
        )
        self._reviews: tuple[float, list[Any] | None] = (-1e9, None)
        self._reading = threading.Lock()
        self._policy_file = PolicyFile(settings.policy)

    def _policy(self) -> Any:
        """The policy file, read again when it changes."""
        return self._policy_file.current()

    # -- plumbing ---------------------------------------------------------------
    def who(self, request: Request) -> Person | None:
        header = self.settings.console_trusted_header
        if header:
            user = request.headers.get(header)
            return self.gate.proxied(user) if user else None
        if not self.gate.security_on():
            return self.gate.local_operator()
        return self.gate.person(request.cookies.get(COOKIE))

    def render(self, request: Request, name: str, person: Person | None, **ctx: Any) -> Response:
        lang = pick_lang(request.cookies.get("lang"), request.headers.get("accept-language"))
        t = WORDS[lang]
        html = self.env.get_template(name).render(
            t=t,
            lang=lang,
            other_lang=LANGS[1 - LANGS.index(lang)],
            person=person,
            csrf=self.gate.csrf_token(person) if person else "",
            security_on=self.gate.security_on(),
            path=request.url.path,
            rule_title=lambda rid, name="", reg="": rule_text(lang, rid, name, reg),
            **ctx,
        )
        return HTMLResponse(html, status_code=ctx.get("status", 200))

    def cookie(self, response: Response, request: Request, name: str, value: str) -> None:
        response.set_cookie(
            name,
            value,
            httponly=True,
            samesite="strict",
            secure=self.settings.console_https or request.url.scheme == "https",
            path="/",
        )

    # -- sign-in ----------------------------------------------------------------
    async def sign_in_page(self, request: Request) -> Response:
        return self.render(request, "signin.html.j2", None, failed=False)

    async def sign_in(self, request: Request) -> Response:
        form = await request.form()
        try:
            person = await run_in_threadpool(
                self.gate.sign_in, str(form.get("user", "")), str(form.get("password", ""))
            )
        except SignInRefused:
            log.info("sign-in refused")
            return self.render(request, "signin.html.j2", None, failed=True, status=401)
        log.info("signed in: %s (%s)", person.user, "triage" if person.can_triage else "read-only")
        response = RedirectResponse("/findings", status_code=303)
        self.cookie(response, request, COOKIE, person.token)
        return response

    async def sign_out(self, request: Request) -> Response:
        person = self.who(request)
        form = await request.form()
        if person is None or not self.gate.csrf_ok(person, str(form.get("csrf", ""))):
            return PlainTextResponse("CSRF token missing or wrong", status_code=403)
        self.gate.sign_out(request.cookies.get(COOKIE))
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def switch_lang(self, request: Request) -> Response:
        to = request.query_params.get("to", "ko")
        back = request.query_params.get("next", "/")
        # Only a path of this site: never an open redirect.
        if not back.startswith("/") or back.startswith("//"):
            back = "/"
        response = RedirectResponse(back, status_code=303)
        self.cookie(response, request, "lang", to if to in LANGS else "ko")
        return response

    # -- findings ---------------------------------------------------------------
    async def findings(self, request: Request, person: Person) -> Response:
        params = dict(request.query_params)
        filters = queries.Filters.of(params)
        after = queries.decode_cursor(params.get("after"))
        rows_only = params.get("part") == "rows"  # the live table's poll: no counts
        found = await run_in_threadpool(
            queries.page, person.es, self.index, filters, after=after, facets=not rows_only
        )
        if rows_only:
            return self.render(request, "rows.html.j2", person, page=found)
        base = filters.params()
        return self.render(
            request,
            "findings.html.j2",
            person,
            page=found,
            filters=filters,
            base=base,
            query=urlencode(base),
            first=after is None,
            next_url="/findings?" + urlencode({**base, "after": found.next_cursor})
            if found.next_cursor
            else None,
            statuses=STATUSES,
            severities=SEVERITIES,
            rules=sorted(CATALOGUE),
        )

    async def export(self, request: Request, person: Person) -> Response:
        kind = request.path_params["kind"]
        filters = queries.Filters.of(dict(request.query_params))
        lines = _csv_lines if kind == "csv" else _jsonl_lines
        body = lines(queries.export(person.es, self.index, filters))
        media = "text/csv" if kind == "csv" else "application/x-ndjson"
        name = f"sepwatch-findings.{kind}"
        return StreamingResponse(
            iterate_in_threadpool(body),
            media_type=media,
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    async def finding(self, request: Request, person: Person, **ctx: Any) -> Response:
        fid = request.path_params["finding_id"]

        def read() -> tuple[dict[str, Any], list[dict[str, Any]]]:
            return get_finding(person.es, self.index, fid), records_of(person.es, self.index, fid)

        try:
            found, records = await run_in_threadpool(read)
        except FindingNotFound:
            return PlainTextResponse("no such finding", status_code=404)
        status = records[-1]["sepwatch"]["to_status"] if records else found["status"]
        return self.render(
            request,
            "finding.html.j2",
            person,
            f={**found, "status": status},
            records=records,
            actor_name=actor_name,
            actions=ACTIONS,
            with_reason=WITH_REASON,
            **ctx,
        )

    async def act(self, request: Request, person: Person) -> Response:
        verb = request.path_params["action"]
        fid = request.path_params["finding_id"]
        form = await request.form()
        if verb not in ACTIONS:
            return PlainTextResponse("no such action", status_code=404)
        if not person.can_triage:
            return PlainTextResponse("this account may not triage findings", status_code=403)
        reason = str(form.get("note", "")).strip() or None
        if verb in WITH_REASON and reason is None:
            return PlainTextResponse(f"{verb}: say why (note)", status_code=400)
        try:
            record_id, stored = await run_in_threadpool(
                record, person.es, self.index, fid, verb, at=datetime.now(UTC), reason=reason
            )
        except FindingNotFound:
            return PlainTextResponse("no such finding", status_code=404)
        except TransitionRefused as exc:
            return await self.finding(request, person, refused=str(exc), status=409)
        except AuthorizationException:
            return PlainTextResponse("Elasticsearch refused this account", status_code=403)
        log.info("%s: %s by %s", record_id, verb, actor_name(stored))
        if not await run_in_threadpool(self._published, record_id, stored):
            return await self.finding(request, person, not_on_topic=record_id)
        return RedirectResponse(f"/findings/{fid}", status_code=303)

    def _published(self, record_id: str, stored: dict[str, Any]) -> bool:
        """The record's copy on the lifecycle topic (the evidence `sepwatch
        evidence verify` checks Elasticsearch against), as the CLI makes it."""
        from review.evidence import publish_lifecycle
        from streams.kafka_io import KafkaUnavailable

        try:
            publish_lifecycle(self.settings, record_id, stored)
        except KafkaUnavailable as exc:
            log.warning("%s: not on the lifecycle topic: %s", record_id, exc)
            return False
        return True

    # -- overview, policy, reports -----------------------------------------------
    def _control_reviews(self) -> list[Any] | None:
        """The control reviews from Kafka, as last read (None: not read yet, or
        Kafka unreachable). A page never waits on Kafka: a stale copy is
        refreshed in the background, at most once a minute."""
        at, records = self._reviews
        if time.monotonic() - at > 60 and not self._reading.locked():
            threading.Thread(target=self._read_reviews, daemon=True).start()
        return records

    def _read_reviews(self) -> None:
        from review.reviews import read_reviews
        from streams.kafka_io import KafkaUnavailable
        from streams.topics import Topics

        with self._reading:
            try:
                found: list[Any] | None = read_reviews(
                    self.settings.kafka, Topics(self.settings.topic_prefix)
                )[0]
            except (KafkaUnavailable, OSError):
                log.warning("control reviews: Kafka unavailable at %s", self.settings.broker)
                found = None
            self._reviews = (time.monotonic(), found)

    def _overview(self, person: Person, entity: str | None) -> dict[str, Any]:
        from console.standing import standing

        now = datetime.now(UTC)
        reviews = self._control_reviews()
        ov = queries.overview(person.es, self.index, entity, now)
        return {
            "ov": ov,
            "st": standing(
                person.es,
                self.index,
                policy=self._policy(),
                reviews=reviews or [],
                entity=entity,
                entities=ov.entities,
                now=now,
            ),
            "reviews_read": reviews is not None,
            "severities": SEVERITIES,
        }

    async def overview(self, request: Request, person: Person) -> Response:
        entity = request.query_params.get("entity") or None
        ctx = await run_in_threadpool(self._overview, person, entity)
        return self.render(request, "overview.html.j2", person, entity=entity, **ctx)

    async def policy(self, request: Request, person: Person) -> Response:
        from detectors import mask_text

        pol = self._policy()
        return self.render(
            request,
            "policy.html.j2",
            person,
            pol=pol,
            policy_name=str(self.settings.policy),
            mask=mask_text,
            today=date.today(),
        )

    async def reports(self, request: Request, person: Person) -> Response:
        made = sorted(p.name for p in self.reports_dir.iterdir() if p.is_dir())
        today = datetime.now(UTC).date()
        return self.render(
            request,
            "reports.html.j2",
            person,
            made=made,
            default_period=f"{today.year}H{1 if today.month <= 6 else 2}",
        )

    async def make_report(self, request: Request, person: Person) -> Response:
        from review.gather import gather
        from review.period import Period, PeriodError
        from review.render import write

        form = await request.form()
        entity = str(form.get("entity", "")).strip() or None
        lang = str(form.get("lang", "ko"))
        try:
            half = Period.parse(str(form.get("period", "")))
        except PeriodError as exc:
            return PlainTextResponse(f"period: {exc}", status_code=400)
        if lang not in LANGS:
            return PlainTextResponse("lang: ko or en", status_code=400)
        pol = self._policy()

        def build() -> None:
            figures = gather(
                person.es,
                self.index,
                half,
                policy=pol,
                reviews=self._control_reviews() or [],
                entity=entity,
                lang=lang,
                appendix_limit=500,
                policy_name=str(self.settings.policy),
            )
            name = f"{half.label}-{_safe(entity or 'all')}-{lang}"
            write(figures, self.reports_dir / name)

        await run_in_threadpool(build)
        return RedirectResponse("/reports", status_code=303)

    async def report_file(self, request: Request, person: Person) -> Response:
        name = request.path_params["name"]
        file = request.path_params["file"]
        if file not in ("report.html", "report.pdf", "report.json") or name != _safe(name):
            return PlainTextResponse("no such report", status_code=404)
        path = self.reports_dir / name / file
        if not path.is_file():
            return PlainTextResponse("no such report", status_code=404)
        return FileResponse(path, filename=f"{name}-{file}")


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip(".")


def _csv_lines(found: Iterator[dict[str, Any]]) -> Iterator[str]:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(EXPORT_COLUMNS)
    for f in found:
        w.writerow([f.get(c) or "" for c in EXPORT_COLUMNS])
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
    yield buf.getvalue()


def _jsonl_lines(found: Iterator[dict[str, Any]]) -> Iterator[str]:
    for f in found:
        yield json.dumps(f, ensure_ascii=False) + "\n"


Handler = Callable[[Request, Person], Awaitable[Response]]


def _signed_in(console: Console, handler: Handler, *, change: bool = False) -> Any:
    """A page for a signed-in person; a change also needs the CSRF token."""

    async def endpoint(request: Request) -> Response:
        person = console.who(request)
        if person is None:
            if change or console.settings.console_trusted_header:
                return PlainTextResponse("sign in first", status_code=401)
            return RedirectResponse("/signin", status_code=303)
        if change:
            form = await request.form()
            token = form.get("csrf") or request.headers.get("x-csrf-token")
            if not console.gate.csrf_ok(person, str(token or "")):
                log.warning("refused a change without a valid CSRF token: %s", request.url.path)
                return PlainTextResponse("CSRF token missing or wrong", status_code=403)
        try:
            return await handler(request, person)
        except AuthorizationException:
            return PlainTextResponse("Elasticsearch refused this account", status_code=403)
        except queries.SearchFailed as exc:
            log.warning("Elasticsearch: %s on %s", exc, request.url.path)
            code = 403 if exc.status == 403 else 502
            return PlainTextResponse(f"Elasticsearch: {exc}", status_code=code)
        except ApiError as exc:
            log.warning("Elasticsearch: %s on %s", exc.meta.status, request.url.path)
            return PlainTextResponse(f"Elasticsearch: {exc.meta.status}", status_code=502)

    return endpoint


class _AccessLog:
    """Method, path, status and time: no query string, no header."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [0]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        await self.app(scope, receive, sending)
        ms = (time.perf_counter() - started) * 1000
        log.info("%s %s %d %.0f ms", scope["method"], scope["path"], status[0], ms)


def _headers(app: Any) -> Any:
    """No framing by other sites, no sniffing, and scripts from this site only."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] += [
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (
                        b"content-security-policy",
                        b"default-src 'self'; style-src 'self' 'unsafe-inline'; "
                        b"img-src 'self' data:; frame-ancestors 'none'",
                    ),
                ]
            await send(message)

        await app(scope, receive, sending)

    return wrapped


def create_app(settings: Settings) -> Any:
    console = Console(settings)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        console.gate.close()

    def home(_: Request) -> Response:
        return RedirectResponse("/findings", status_code=303)

    s = _signed_in
    routes = [
        Route("/", home),
        Route("/signin", console.sign_in_page),
        Route("/signin", console.sign_in, methods=["POST"]),
        Route("/signout", console.sign_out, methods=["POST"]),
        Route("/lang", console.switch_lang),
        Route("/findings", s(console, console.findings)),
        Route("/findings/export.{kind:str}", s(console, console.export)),
        Route("/findings/{finding_id}", s(console, console.finding)),
        Route(
            "/findings/{finding_id}/{action}",
            s(console, console.act, change=True),
            methods=["POST"],
        ),
        Route("/overview", s(console, console.overview)),
        Route("/policy", s(console, console.policy)),
        Route("/reports", s(console, console.reports)),
        Route("/reports", s(console, console.make_report, change=True), methods=["POST"]),
        Route("/reports/{name}/{file}", s(console, console.report_file)),
        Mount("/static", StaticFiles(packages=[("console", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.console = console
    return _AccessLog(_headers(app))
