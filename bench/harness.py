"""What the benchmarks and the integration tests both need around the
servers they start: a free loopback port, and waits on a condition within a
deadline instead of fixed sleeps. Here rather than in tests/ because the
tests may import the benchmarks but the benchmarks must not import the tests.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picked it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], object], timeout: float = 90, step: float = 0.2) -> bool:
    """Whether `check` came true within `timeout` s: for a caller whose
    assert (or comparison after) shows more than a name on failure (the
    worker's log, the findings missing)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def wait_until(
    check: Callable[[], T],
    what: str,
    timeout: float = 90,
    step: float = 0.2,
    unready: tuple[type[Exception], ...] = (),
) -> T:
    """`check()`'s first true result within `timeout` s, or an AssertionError
    saying `what` was awaited. An exception of a type in `unready` (a server
    not listening yet, say) counts as "not yet"; the last one is in the
    failure's message, since it is likely why."""
    deadline = time.monotonic() + timeout
    error: Exception | None = None
    while True:
        try:
            if result := check():
                return result
        except unready as exc:
            error = exc
        if time.monotonic() > deadline:
            last = f" (last error: {error!r})" if error is not None else ""
            raise AssertionError(f"not within {timeout:g} s: {what}{last}")
        time.sleep(step)
