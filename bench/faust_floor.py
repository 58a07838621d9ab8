"""A Faust agent that does nothing with what it reads: the floor of
faust-streaming's per-event cost, for `bench.stream` to print beside the
worker (run by it as `python -m bench.faust_floor worker --without-web`).

Environment: FLOOR_BROKER, FLOOR_TOPICS (comma-separated), FLOOR_EVENTS
(how many to read). Prints `rate <events/s>` and exits.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

import faust

TOPICS = os.environ["FLOOR_TOPICS"].split(",")
EVENTS = int(os.environ["FLOOR_EVENTS"])

app = faust.App(
    f"floor-{uuid.uuid4().hex[:8]}",
    broker=f"kafka://{os.environ['FLOOR_BROKER']}",
    store="memory://",
    web_enabled=False,
    value_serializer="raw",
    key_serializer="raw",
    consumer_auto_offset_reset="earliest",
    stream_buffer_maxsize=8192,
)
source = app.topic(*TOPICS, key_type=bytes, value_type=bytes)
seen = {"n": 0, "t0": 0.0}


@app.agent(source)
async def read_only(stream: Any) -> None:
    async for _ in stream.events():
        if seen["n"] == 0:
            seen["t0"] = time.perf_counter()
        seen["n"] += 1
        if seen["n"] >= EVENTS:
            print(f"rate {EVENTS / (time.perf_counter() - seen['t0']):.0f}", flush=True)
            os._exit(0)


@app.task
async def quiet() -> None:
    for name in ("", "aiokafka", "faust", "mode"):
        logging.getLogger(name).setLevel(logging.WARNING)


if __name__ == "__main__":
    app.main()
