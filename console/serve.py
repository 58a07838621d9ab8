"""Run the console under uvicorn until Ctrl-C (or SIGTERM)."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

import uvicorn
from rich.console import Console as Terminal

from console.app import create_app
from streams.settings import Settings


def server(settings: Settings) -> uvicorn.Server:
    """A uvicorn server for the console. Its own access log is off: it prints
    query strings, and a filter may hold what someone typed; the console logs
    method, path and status itself (console/app.py)."""
    config = uvicorn.Config(
        create_app(settings),
        host=settings.console_host,
        port=settings.console_port,
        access_log=False,
        log_level="info",
        # X-Forwarded-Proto/For only from a proxy on this host.
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1",
        server_header=False,
    )
    return uvicorn.Server(config)


def run_until_stopped(settings: Settings) -> None:
    """Serve until Ctrl-C or SIGTERM. uvicorn shuts down gracefully on the
    signal, then raises it again for the caller: here that is the expected end."""
    with contextlib.suppress(KeyboardInterrupt):
        server(settings).run()


def serve(settings: Settings, err: Terminal) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    err.print(
        f"[bold]console[/] at http://{settings.console_host}:{settings.console_port}/ "
        f"(findings from {settings.es_url}, {settings.es_index}); Ctrl-C stops it"
    )
    run_until_stopped(settings)


class InThread:
    """The console under uvicorn in a thread, on a free port of 127.0.0.1: for
    the browser tests and the benchmark, which talk to it over real HTTP."""

    def __init__(self, settings: Settings) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> InThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the console did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
