"""Python's cyclic garbage collector, tuned for a process that keeps state.

The engines keep many small, long-lived objects (postures, pending decisions,
table values) and allocate a few short-lived ones per event. With the default
thresholds (a collection every 700 allocations net) the collector rescans the
kept state thousands of times over a large input: ~8 % of a busy worker's
time, most of it in full collections (measured with gc.callbacks).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def long_lived_state() -> Iterator[None]:
    """Freeze what exists now (never scanned again) and collect the young
    generation every 50,000 allocations instead of 700, until the end."""
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
