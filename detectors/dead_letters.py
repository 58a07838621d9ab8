"""Dead letters: what could not be processed, with why, and nothing raw in it."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from detectors.masking import mask_text
from schemas.policy_file import dotted

MAX_ERRORS = 20  # validation errors kept in a dead letter
MAX_MESSAGE = 300  # characters of one error's message or path kept
RAW_KEEP = 4096  # characters of the original record kept (masked) for the analyst
_MARGIN = 1024  # characters masked past RAW_KEEP: longer than any identifier
# A JSON \uXXXX escape: a surrogate pair, or one code unit.
_ESCAPE = re.compile(
    r"\\u([dD][89abAB][0-9a-fA-F]{2})\\u([dD][c-fC-F][0-9a-fA-F]{2})|\\u([0-9a-fA-F]{4})"
)


def _unescape(match: re.Match[str]) -> str:
    if match.group(1):
        high, low = int(match.group(1), 16), int(match.group(2), 16)
        return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    char = chr(int(match.group(3), 16))
    # Kept escaped where the character would change how the record reads as JSON.
    if not char.isprintable() or char in '"\\' or 0xD800 <= ord(char) <= 0xDFFF:
        return match.group(0)
    return char


def _cut(text: str) -> str:
    # Cut with a margin masked first, so the cut cannot split an identifier.
    if len(text) <= MAX_MESSAGE:
        return text
    return mask_text(text[: MAX_MESSAGE + 64])[:MAX_MESSAGE] + "…"


def reason_of(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    """One line for people and the structured list for tools; no input values,
    since an input value is exactly what may hold an identifier."""
    errors = []
    found = exc.errors(include_input=False, include_url=False, include_context=False)
    # Bounded: a record under the size limit can still hold thousands of errors,
    # or one message quoting a near-megabyte input, and a dead letter must stay
    # far below what the broker takes in one record.
    for err in found[:MAX_ERRORS]:
        # Some messages repeat the input (an unknown `stream` tag, say): masked too.
        msg = mask_text(_cut(err["msg"]))
        path = mask_text(_cut(dotted(tuple(err["loc"]))))
        errors.append({"path": path, "type": err["type"], "msg": msg})
    text = "; ".join(f"{e['path'] or '(record)'}: {e['msg']}" for e in errors[:5])
    if len(found) > 5:
        text += f"; and {len(found) - 5} more"
    return mask_text(text), errors


def dead_letter(
    raw: bytes, reason: str, *, where: dict[str, Any], errors: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    # Escapes decoded first: "\u0039\u0030..." spells digits the masks would
    # not see, and an escape's hex digits next to an identifier hide its start.
    # Mask before cutting, so the cut cannot split an identifier past the masks;
    # only a margin past what is kept is masked, so a 1 MiB record costs no more.
    head = raw[: (RAW_KEEP + _MARGIN) * 6].decode("utf-8", errors="replace")
    masked = mask_text(_ESCAPE.sub(_unescape, head)[: RAW_KEEP + _MARGIN])
    return {
        **where,
        "reason": mask_text(reason),
        "errors": errors or [],
        "raw_masked": masked[:RAW_KEEP],
        "raw_bytes": len(raw),
        "raw_truncated": len(raw) > RAW_KEEP,
    }
