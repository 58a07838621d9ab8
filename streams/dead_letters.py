"""Dead letters: what could not be processed, with why, and nothing raw in it."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from detectors.masking import mask_text
from streams.policy_file import dotted

RAW_KEEP = 4096  # bytes of the original record kept (masked) for the analyst


def reason_of(exc: ValidationError) -> tuple[str, list[dict[str, Any]]]:
    """One line for people and the structured list for tools; no input values,
    since an input value is exactly what may hold an identifier."""
    errors = []
    for err in exc.errors(include_input=False, include_url=False, include_context=False):
        # Some messages repeat the input (an unknown `stream` tag, say): masked too.
        msg = mask_text(err["msg"])
        errors.append(
            {"path": mask_text(dotted(tuple(err["loc"]))), "type": err["type"], "msg": msg}
        )
    text = "; ".join(f"{e['path'] or '(record)'}: {e['msg']}" for e in errors[:5])
    if len(errors) > 5:
        text += f"; and {len(errors) - 5} more"
    return mask_text(text), errors


def dead_letter(
    raw: bytes, reason: str, *, where: dict[str, Any], errors: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    # Mask before cutting, so the cut cannot split an identifier past the masks.
    masked = mask_text(raw.decode("utf-8", errors="replace"))
    return {
        **where,
        "reason": mask_text(reason),
        "errors": errors or [],
        "raw_masked": masked[:RAW_KEEP],
        "raw_bytes": len(raw),
        "raw_truncated": len(raw) > RAW_KEEP,
    }
