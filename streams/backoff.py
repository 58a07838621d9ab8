"""One backoff for every retry in sepwatch: exponential, capped, with full
jitter (each delay drawn between half the step and the step), so that
workers retrying one broker, node or receiver do not retry in step."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class Backoff:
    """Delays of `first`, `2 * first`, ... up to `cap` seconds, jittered.
    `next_delay` counts the attempts; `reset` after a success."""

    first: float = 0.5
    cap: float = 30.0
    attempt: int = 0

    def delay(self, attempt: int) -> float:
        """The delay before retry `attempt` (0: the first retry)."""
        step = min(self.cap, self.first * 2**attempt)
        return random.uniform(step / 2, step)

    def next_delay(self) -> float:
        delay = self.delay(self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
