"""The waits the benchmarks and the integration tests share: what they
return, and that a failing one says what it waited for."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from bench.harness import free_port, wait_for, wait_until


def _answers(*values: object) -> Iterator[object]:
    yield from values
    while True:
        yield values[-1]


def test_wait_until_returns_the_first_true_result() -> None:
    answers = _answers(None, [], ["found"])
    assert wait_until(lambda: next(answers), "a list", timeout=5, step=0) == ["found"]


def test_a_failing_wait_until_names_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"^not within 0\.05 s: the findings$"):
        wait_until(lambda: False, "the findings", timeout=0.05, step=0.01)


def test_an_unready_error_is_not_yet_and_named_on_failure() -> None:
    calls = 0

    def refused_twice() -> bool:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise ConnectionRefusedError("not listening")
        return True

    assert wait_until(refused_twice, "a server", timeout=5, step=0, unready=(OSError,))

    def refused() -> bool:
        raise ConnectionRefusedError("not listening")

    with pytest.raises(AssertionError, match=r"a server \(last error: .*not listening"):
        wait_until(refused, "a server", timeout=0.05, step=0.01, unready=(OSError,))
    # Any other error is the check's own failure, at once.
    with pytest.raises(ConnectionRefusedError):
        wait_until(refused, "a server", timeout=5)


def test_wait_for_says_whether_the_check_came_true() -> None:
    answers = _answers(0, 0, 3)
    assert wait_for(lambda: next(answers), timeout=5, step=0)
    assert not wait_for(lambda: False, timeout=0.05, step=0.01)


def test_free_port_can_be_listened_on() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
        s.listen()
