"""Pending decisions ordered by the time the watermark must pass to release them."""

from __future__ import annotations

import heapq
import itertools
from collections import deque


class ReleaseQueue:
    """Keys ordered by release time. Events mostly arrive in time order, so
    in-order keys go to a FIFO (O(1)) and only the out-of-order rest to a heap."""

    def __init__(self) -> None:
        self._fifo: deque[tuple[float, int, str]] = deque()
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._fifo) + len(self._heap)

    def push(self, at: float, key: str) -> None:
        entry = (at, next(self._seq), key)
        if not self._fifo or at >= self._fifo[-1][0]:
            self._fifo.append(entry)
        else:
            heapq.heappush(self._heap, entry)

    def next_time(self) -> float:
        """The earliest release time held (infinity when empty)."""
        fifo, heap = self._fifo, self._heap
        if fifo and (not heap or fifo[0] <= heap[0]):
            return fifo[0][0]
        return heap[0][0] if heap else float("inf")

    def pop(self) -> str:
        """The key with the earliest release time (the queue must not be empty)."""
        fifo, heap = self._fifo, self._heap
        if fifo and (not heap or fifo[0] <= heap[0]):
            return fifo.popleft()[2]
        return heapq.heappop(heap)[2]

    def drain(self) -> list[tuple[float, str]]:
        """Everything held, earliest first; the queue is left empty."""
        out = sorted([*self._fifo, *self._heap])
        self._fifo.clear()
        self._heap.clear()
        return [(at, key) for at, _, key in out]
