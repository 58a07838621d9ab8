"""End-of-input markers that only a holder of the key can send.

A stage partition that has a marker from every input partition decides every
join still waiting at once, as replay does at the end of its file. On a live
stream a marker sent by mistake, or forged by anyone who may write an input
topic, decides early: false SEP-007s, missed DLP correlations (issue 19). So
`sepwatch produce` sends markers only when asked (`--end-of-input`), signed
with HMAC-SHA256 under `SEPWATCH_END_OF_INPUT_KEY`, and the validator honours
only markers whose signature holds. The signature covers the topic, the
partition, the claimed end and when it was sent; input topics carry the
broker's append time (a producer cannot set it), so a copy of an honoured
marker written again later is refused as stale, and a copy within the window
as a replay (the validator keeps the last one honoured per input partition).
This works on an unsecured broker too; on a secured cluster an ACL on the
input topics still decides who may write events at all."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from dataclasses import dataclass, field

from pydantic import SecretStr

# How far a marker's signed send time may be from its append time: producer
# clocks are within a second of the broker's (NTP); a producer retrying through
# a broker failover appends within its delivery timeout (2 minutes).
MAX_MARKER_AGE_S = 150.0


class MarkerKeyMissing(ValueError):
    """End-of-input markers asked for without a key to sign them."""

    def __init__(self) -> None:
        super().__init__(
            "an end-of-input marker needs a signing key: set SEPWATCH_END_OF_INPUT_KEY "
            "(the workers need the same key to honour it)"
        )


def _signature(key: SecretStr, topic: str, partition: int, max_ts: float, sent_at: float) -> str:
    message = f"{topic}\n{partition}\n{max_ts!r}\n{sent_at!r}".encode()
    return hmac.new(key.get_secret_value().encode(), message, hashlib.sha256).hexdigest()


def signed_marker(
    key: SecretStr, topic: str, partition: int, max_ts: float, sent_at: float
) -> bytes:
    """The value of the marker for one input partition."""
    sig = _signature(key, topic, partition, max_ts, sent_at)
    return json.dumps({"max_ts": max_ts, "sent_at": sent_at, "sig": sig}).encode()


@dataclass
class MarkerCheck:
    """Judges the markers read from the input partitions; remembers the last
    honoured per partition, so a copy of it is a replay (the same record read
    again after a failed delivery is not)."""

    key: SecretStr | None
    # (topic, partition) -> (sent_at, offset) of the last marker honoured there.
    honoured: dict[tuple[str, int], tuple[float, int]] = field(default_factory=dict)

    def judge(
        self, topic: str, partition: int, offset: int, raw: bytes, appended: float
    ) -> str | None:
        """None if the marker is honoured, else why not (a metric label)."""
        if self.key is None:
            return "no_key"
        try:
            marker = json.loads(raw)
            max_ts, sent_at, sig = marker["max_ts"], marker["sent_at"], marker["sig"]
            if not all(isinstance(v, int | float) for v in (max_ts, sent_at)):
                return "unsigned"
            expected = _signature(self.key, topic, partition, float(max_ts), float(sent_at))
        except (ValueError, TypeError, KeyError, RecursionError):
            return "unsigned"
        if not isinstance(sig, str) or not hmac.compare_digest(sig, expected):
            return "bad_signature"
        if not math.isfinite(sent_at) or abs(appended - sent_at) > MAX_MARKER_AGE_S:
            return "stale"
        last_sent, last_offset = self.honoured.get((topic, partition), (-math.inf, -1))
        if last_sent >= sent_at and last_offset != offset:
            return "replayed"
        self.honoured[(topic, partition)] = (sent_at, offset)
        return None
