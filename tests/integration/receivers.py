"""Real notification receivers on loopback, for the alert router's tests.

HTTP receivers are aiohttp servers answering as the real services do (a
signed webhook that checks signatures and refuses stale or replayed
requests, a Slack-style and a PagerDuty-style endpoint, one that fails);
mail is received by aiosmtpd; Alertmanager is Debian's binary.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller

from bench.harness import free_port
from streams.alerts.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what the receiver answered

    def json(self) -> Any:
        return json.loads(self.body)


Answer = Callable[[web.Request, bytes], int]


@dataclass
class HttpReceiver:
    """Records every request and answers with `answer(request, body)`."""

    answer: Answer = lambda request, body: 200
    extra_headers: dict[str, str] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def accepted(self) -> list[Request]:
        return [r for r in self.requests if 200 <= r.status < 300]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = self.answer(request, body)
        self.requests.append(Request(request.path, dict(request.headers), body, status))
        return web.Response(status=status, headers=self.extra_headers if status >= 400 else {})

    async def __aenter__(self) -> HttpReceiver:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


class SignedWebhook(HttpReceiver):
    """Accepts only requests signed with `secret`, stamped within `tolerance_s`
    and never seen before (a replayed signature is refused)."""

    def __init__(self, secret: str, tolerance_s: float = 300.0) -> None:
        super().__init__(answer=self._verify)
        self.secret = secret
        self.tolerance_s = tolerance_s
        self.signatures: set[str] = set()

    def _verify(self, request: web.Request, body: bytes) -> int:
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        sig = request.headers.get(SIGNATURE_HEADER, "")
        if not verify_signature(self.secret, timestamp, body, sig, self.tolerance_s):
            return 401
        if sig in self.signatures:
            return 409
        self.signatures.add(sig)
        return 200


class MailReceiver:
    """An SMTP server (aiosmtpd) that keeps what it is given."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def __enter__(self) -> MailReceiver:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()


class Alertmanager:
    """Debian's prometheus-alertmanager on a free loopback port, no gossip."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which(ALERTMANAGER) is not None

    def __enter__(self) -> Alertmanager:
        config = self.workdir / "alertmanager.yml"
        config.write_text(
            "route:\n  receiver: blackhole\n  group_by: [group_key]\n"
            "receivers:\n  - name: blackhole\n"
        )
        self.log = (self.workdir / "alertmanager.log").open("wb")
        self.proc = subprocess.Popen(
            [
                ALERTMANAGER,
                f"--config.file={config}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    "alertmanager exited: " + (self.workdir / "alertmanager.log").read_text()
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError("alertmanager not ready in 30 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.log.close()

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=5) as r:
            result: list[dict[str, Any]] = json.loads(r.read())
            return result


async def wait_for(
    check: Callable[[], bool],
    timeout: float = 30.0,
    what: str = "",
    task: asyncio.Task[Any] | None = None,
) -> None:
    """Poll until `check()` holds, or fail after `timeout` seconds, or at once
    if `task` (the router under test) ended."""
    deadline = time.monotonic() + timeout
    while not check():
        if task is not None and task.done():
            task.result()  # its exception, if any
            raise AssertionError(f"the router stopped before: {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.1)
