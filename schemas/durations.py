"""Durations as people write them in a policy: `30s`, `10m`, `24h`, `7d`, `1h30m`."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([dhms])")
_WHOLE = re.compile(r"(?:\d+[dhms])+")


def parse_duration(value: Any) -> timedelta:
    """Accept `10m`-style strings, whole seconds as a number, or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("a duration is written like 30s, 10m, 24h or 7d, not a boolean")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip().lower()
        if _WHOLE.fullmatch(text):
            return timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _PART.findall(text)))
        raise ValueError(f"{value!r} is not a duration; write it like 30s, 10m, 24h, 7d or 1h30m")
    raise ValueError(f"a duration is a string like 10m, not {type(value).__name__}")


def format_duration(value: timedelta) -> str:
    """The shortest `1h30m`-style text for a whole number of seconds."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in _UNITS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^(\d+[dhms])+$", "examples": ["60s", "10m"]}),
]
