"""Masking of identifiers (rules.md, "Masking").

A resident or alien registration number keeps its first seven characters
(birth date and gender digit): `900101-1******`. Any other identifier keeps
at most its last four characters. `mask_text` is applied to every snippet
and to every raw line that goes to the dead letters.

Technical identifiers an operator needs to read are left whole: GUIDs,
hexadecimal hashes (MD5, SHA-1, SHA-256) and dotted version strings and OS
builds (`10.0.22631.2428`), unless a version's digits are a card number
(Luhn).
"""

from __future__ import annotations

import re
import sys
from functools import cache

# Each mask begins with what its first character must be and only then looks
# behind it ("[0-9](?<![0-9][0-9])": a digit with no digit before it): a
# pattern that opens with a character class lets the regex engine skip to the
# candidates, where a leading look-behind is tried at every position.
_FIRST_DIGIT = "[0-9](?<![0-9][0-9])"
# RRN / alien registration number: YYMMDD (a real month and day), an optional
# separator (with spaces around it), then 7 digits.
_RRN = re.compile(
    rf"({_FIRST_DIGIT}[0-9](?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01]))"
    r"\s?[\-.]?\s?([0-9])[0-9]{6}(?![0-9])"
)
# Passports: M12345678 and the 2021 form M123A4567.
_PASSPORT = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z](?:[0-9]{8}|[0-9]{3}[A-Za-z][0-9]{4})(?![A-Za-z0-9])"
)
# Dates, times and IPv4 addresses are kept as they are: they are not
# identifiers, and dead letters must stay readable. (Each after its first
# digit, which _NUMBERS reads first.)
_KEEP = (
    r"[0-9]{3}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2})?)?"
    r"|[0-9]{0,2}(?:\.[0-9]{1,3}){3}"
)
# Other long numbers (card, account, driver's licence 11-23-456789-01, phone):
# groups of digits joined by single separators, nine digits or more in all.
# Nine keeps a date (8 digits) readable; a space before a date ends the run.
_NUMBER = r"(?:(?:[\-.]|\s(?![0-9]{4}-[0-9]{2}-[0-9]{2}))?[0-9]){8,}"
_NUMBERS = re.compile(rf"{_FIRST_DIGIT}(?:(?P<keep>{_KEEP})|(?P<num>{_NUMBER}))(?![0-9])")


# What the masks match is ASCII: digits, letters (passports) and separators.
_HIDE = str.maketrans(
    dict.fromkeys("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", "*")
)


def _keep_last_four(match: re.Match[str]) -> str:
    text = match.group(0)
    # Where the last four letters and digits begin; all hidden if there are no more.
    cut, left = len(text), 4
    while left and cut:
        cut -= 1
        left -= text[cut].isalnum()
    head = text[:cut].translate(_HIDE)
    if left or head == text[:cut]:  # four or fewer: hide them all
        return text.translate(_HIDE)
    return head + text[cut:]


def _number(match: re.Match[str]) -> str:
    return match.group(0) if match.group("keep") else _keep_last_four(match)


_HEX = "[0-9a-fA-F]"
_TECHNICAL = re.compile(
    # A GUID (braces or not), or a hash: 32, 40 or 64 hex digits (one at least
    # a letter: checked after the match, a lookahead here costs every position).
    rf"(?<![0-9A-Za-z])(?:{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}"
    rf"|{_HEX}{{32}}(?:{_HEX}{{8}}(?:{_HEX}{{24}})?)?)(?![0-9A-Za-z])"
    # A version or OS build: a one- or two-digit major and minor, then one to
    # three dotted parts of at most six digits (no RRN, account or card layout).
    r"|(?<![0-9.])(?P<version>[0-9]{1,2}\.[0-9]{1,2}(?:\.[0-9]{1,6}){1,3})(?![0-9]|\.[0-9])"
)
_HEX_LETTER = re.compile("[a-fA-F]")
_DIGIT_GUID = re.compile("[0-9]{8}-[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{12}")


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def _is_card(version: str) -> bool:
    digits = version.replace(".", "")
    return 13 <= len(digits) <= 19 and _luhn(digits)


def _rrn(match: re.Match[str]) -> str:
    return f"{match.group(1)}-{match.group(2)}******"


# Dashes a number may be written with besides "-" (hyphen, minus, full-width).
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"


@cache
def _ascii_fold() -> dict[int, str]:
    """Every Unicode decimal digit to its ASCII digit, dashes to "-", the
    full-width stop to ".": a full-width RRN is the same identifier. Built on
    first use (a pass over every code point, a fraction of a second)."""
    table = {c: str(int(chr(c))) for c in range(128, sys.maxunicode + 1) if chr(c).isdecimal()}
    table.update({ord(d): "-" for d in _DASHES})
    table[0xFF0E] = "."
    return table


def mask_text(text: str) -> str:
    """Mask every identifier-shaped run in free text. Digits and dashes of
    other scripts are read (and written back) as ASCII, so they cannot hide an
    identifier from the masks."""
    if not text.isascii():
        text = text.translate(_ascii_fold())
    masked = _mask_plain(text)
    # Nothing identifier-shaped, or nothing a technical identifier needs (a
    # version's dot, a hash's hex letter; without either, a GUID all digits):
    # done. A card written 4111-1111-1111-1111 has a GUID's four dashes.
    if masked == text or (
        "." not in text
        and not _HEX_LETTER.search(text)
        and (text.count("-") < 4 or not _DIGIT_GUID.search(text))
    ):
        return masked
    parts: list[str] = []
    plain = 0
    for found in _TECHNICAL.finditer(text):
        token, version = found.group(0), found.group("version")
        if (version and _is_card(version)) or token.isdigit():  # a card; digits, no hash
            continue
        parts += (_mask_plain(text[plain : found.start()]), found.group(0))
        plain = found.end()
    if not parts:
        return masked
    parts.append(_mask_plain(text[plain:]))
    return "".join(parts)


def _mask_plain(text: str) -> str:
    text = _RRN.sub(_rrn, text)
    text = _PASSPORT.sub(_keep_last_four, text)
    return _NUMBERS.sub(_number, text)


def mask_identifier(value: str) -> str:
    """Mask one identifier known to be sensitive, whatever its shape."""
    if _RRN.fullmatch(value.strip()):
        return _RRN.sub(_rrn, value.strip())
    keep = value[-4:] if len(value) > 4 else ""
    return "*" * (len(value) - len(keep)) + keep


def identifier_spans(text: str) -> list[tuple[int, int]]:
    """Where `mask_text` finds an identifier in `text`: the (start, end) of
    each RRN, passport or long number, merged where they overlap. Positions
    are those of `text` as given (the ASCII folding keeps lengths)."""
    if not text.isascii():
        text = text.translate(_ascii_fold())
    found = [m.span() for m in _RRN.finditer(text)]
    found += [m.span() for m in _PASSPORT.finditer(text)]
    found += [m.span() for m in _NUMBERS.finditer(text) if m.group("num")]
    merged: list[tuple[int, int]] = []
    for start, end in sorted(found):
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged
