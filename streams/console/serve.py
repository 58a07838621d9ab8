"""Run the console under uvicorn until Ctrl-C (or SIGTERM)."""

from __future__ import annotations

import logging

import uvicorn
from rich.console import Console as Terminal

from streams.console.app import create_app
from streams.settings import Settings


def server(settings: Settings) -> uvicorn.Server:
    """A uvicorn server for the console. Its own access log is off: it prints
    query strings, and a filter may hold what someone typed; the console logs
    method, path and status itself (streams/console/app.py)."""
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


def serve(settings: Settings, err: Terminal) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    err.print(
        f"[bold]console[/] at http://{settings.console_host}:{settings.console_port}/ "
        f"(findings from {settings.es_url}, {settings.es_index}); Ctrl-C stops it"
    )
    server(settings).run()
