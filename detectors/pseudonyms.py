"""Keyed pseudonyms for identifiers found in an event's fields.

A `user_id`, `device_id`, `entity`, file name or vendor id that holds a
resident registration number, a card number or any other identifier the
masks find (detectors.masking) is not masked but pseudonymised: the
identifier is replaced by `pii-` and 20 letters derived from it with
HMAC-SHA256 under the deployment's secret key. The same identifier always
gets the same pseudonym under one key, so a DLP alert and its upload by the
same person still join; without the key nobody can tell which identifier a
pseudonym stands for, or even test a guess.

Technical identifiers an operator needs (GUIDs, hashes, OS builds, Okta
object ids) are not identifiers of people and stay as they are.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from operator import itemgetter
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel

from detectors.masking import identifier_spans

PREFIX = "pii-"
# 80 bits. For n distinct identifiers the chance that any two share a pseudonym
# is about n^2 / 2^81: 4e-9 for 10^8 (a large bank's customers, accounts and
# cards together), 4e-5 for 10^10.
DIGEST_CHARS = 20
# Letters only, one per hex digit, no vowels: a pseudonym has no digit, so the
# masks never find an identifier in it (pseudonymising it again leaves it as it
# is), and it spells no word.
_LETTERS = str.maketrans("0123456789abcdef", "bcdfghjklmnpqrst")
PSEUDONYM = re.compile(rf"(?<![A-Za-z0-9-]){PREFIX}[b-t]{{{DIGEST_CHARS}}}(?![A-Za-z0-9])")

# What every identifier the masks find contains, once its separators are
# dropped: nine digits in a row (a number, an RRN), a letter and eight digits
# (a passport) or three digits, a letter and four digits (the 2021 passport).
# A file name's date (20261123) is none of these. For ASCII text this is asked
# of one byte translation (a C loop, no regular expression): separators
# dropped, digits to "0", letters to "a".
_SEPARATORS = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f.-"
_CLASSES = bytes(
    48 if chr(i).isdigit() else 97 if chr(i).isalpha() and i < 128 else 120 for i in range(256)
)
_SHAPES = (b"000000000", b"a00000000", b"000a0000")
# The same for other text, with digits of other scripts (`\d`) and other
# dashes, which the masks read as ASCII.
_SEP = "\\s.\\-\u2010-\u2015\u2212\ufe58\ufe63\uff0d\uff0e"
_MAYBE_IDENTIFIER = re.compile(
    rf"\d(?:[{_SEP}]{{0,3}}\d){{8}}|[A-Za-z][{_SEP}]{{0,3}}\d{{8}}|\d{{3}}[A-Za-z]\d{{4}}"
)
# The masks keep IPv4 addresses; one alone in a field (src_ip) is not looked at.
_IPV4 = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
# Clean shapes and values kept; cleared when full, which bounds their memory.
CLEAN_CACHE = 1 << 16

# An ASCII character's class in the masks' patterns (detectors.masking: the
# RRN, passport and number patterns), and nothing finer: "1" for a digit,
# "a" for a letter but "T" (a date's time), " ", "\t" for other whitespace,
# "-", "." and ":" as they are, "#" for anything else. The masks find an
# identifier in a text's class shape wherever they find one in the text (the
# patterns read no digit's value but an RRN's month and day, which "11"
# passes), so a shape they find none in is clean for every text of that
# shape: a source's ids, users, devices and addresses share a few. The
# shapes of clean text are kept; the masks decide a shape once.
_MASK_CLASSES = (
    bytes(
        49
        if chr(i).isdigit()
        else i
        if chr(i) in "T -.:"
        else 9
        if chr(i).isspace()
        else 97
        if chr(i).isalpha()
        else 35
        for i in range(128)
    )
    + b"#" * 128
)

# Identifiers of things, not of people: kept readable.
_TECHNICAL = re.compile(
    r"(?<![0-9A-Za-z])(?:"
    r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}"  # GUID
    # Hex digests and object ids, at their exact lengths (with a letter: all
    # digits is a number): SHA-512, SHA-256, SHA-1, MD5 and undashed GUIDs,
    # 12-byte object ids (Netskope's _id).
    r"|(?=[0-9]*[A-Fa-f])"
    r"(?:[0-9A-Fa-f]{128}|[0-9A-Fa-f]{64}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{32}|[0-9A-Fa-f]{24})"
    r"|[0-9]{1,2}(?:\.[0-9]{1,6}){2,3}"  # OS version and build: 10.0.19045.3803
    r"|00[a-z0-9][0-9A-Za-z]{17}"  # Okta object id: 00u1abcd2EFGH3ijk4x7
    r")(?![0-9A-Za-z])"
)

# Not pseudonymised: the stream tag, and the snippet, which the engine masks
# (rules.md, "Masking") and which is free text, not an identifier.
_SKIP = frozenset({"stream", "snippet"})
_OBJECT = "object"

E = TypeVar("E", bound=BaseModel)


def pseudonym(key: bytes, identifier: str) -> str:
    """The pseudonym of one identifier. Written with or without separators, in
    full-width or other digits, it is the same identifier and the same pseudonym."""
    digest = hmac.new(key, _canonical(identifier).encode(), hashlib.sha256).hexdigest()
    return PREFIX + digest[:DIGEST_CHARS].translate(_LETTERS)


def _canonical(identifier: str) -> str:
    """Letters and digits only, ASCII digits, upper case."""
    return "".join(
        str(int(c)) if c.isdecimal() else c.upper()
        for c in unicodedata.normalize("NFKC", identifier)
        if c.isalnum()
    )


def is_pseudonym_of(key: bytes, candidate: str, value: str) -> bool:
    """Whether `value` is the pseudonym of `candidate` under `key`."""
    return hmac.compare_digest(pseudonym(key, candidate), value.strip())


def may_hold_identifier(text: str) -> bool:
    """False for text in which the masks can find no identifier, quickly."""
    if not text.isascii():
        return _MAYBE_IDENTIFIER.search(text) is not None
    return _shape_may_hold(_shape(text)) and _IPV4.fullmatch(text) is None


def _shape(text: str) -> bytes:
    """ASCII text's shape: separators dropped, digits "0", letters "a"."""
    return text.encode().translate(_CLASSES, _SEPARATORS)


def _shape_may_hold(shape: bytes) -> bool:
    # Seven digits in a row come in two of the shapes: most text has neither.
    if b"0000000" not in shape and b"000a0000" not in shape:
        return False
    return any(s in shape for s in _SHAPES)


def pseudonymise_text(key: bytes, text: str) -> str:
    """`text` with every identifier in it replaced by its pseudonym; the very
    same object when it holds none."""
    if not may_hold_identifier(text):
        return text
    spans = identifier_spans(text)
    if not spans:
        return text
    technical = [m.span() for m in _TECHNICAL.finditer(text)]
    parts, at = [], 0
    for start, end in spans:
        if any(t0 <= start and end <= t1 for t0, t1 in technical):
            continue
        parts += [text[at:start], pseudonym(key, text[start:end])]
        at = end
    if at == 0:
        return text
    parts.append(text[at:])
    return "".join(parts)


class Pseudonymiser:
    """Pseudonymises the string fields of canonical events under one key."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("a pseudonym key cannot be empty")
        self.key = key
        self._fields_of: dict[type[Any], _Fields] = {}
        # Class shapes of clean ASCII text (okta-11-ev0049540 is
        # aaaa-11-aa1111111), and clean values of other text (file names).
        self._clean_shapes: set[bytes] = set()
        self._clean_values: set[str | None] = {None}

    def text(self, value: str) -> str:
        return pseudonymise_text(self.key, value)

    def event(self, event: E) -> tuple[E, tuple[str, ...]]:
        """The event with identifiers pseudonymised, and the fields that held
        one (a declared field's name, `object.name`, or `extra` for what the
        contract does not name). The event itself when none did. A value made
        longer than its field allows raises pydantic's ValidationError.

        Admission runs this on every event. For one without an identifier
        (almost every event) it costs one byte translation of its string fields
        joined, whose class shape is then found among the few shapes known to
        be clean (`_MASK_CLASSES`), and the same for a file name."""
        fields = self._fields_of.get(type(event))
        if fields is None:
            fields = self._fields_of[type(event)] = _string_fields(type(event))
        values = event.__dict__
        text = "\x00".join(filter(None, fields.scalars(values)))
        shapes = self._clean_shapes
        # Written out, not in helpers: a call per event is a cost that shows.
        if (
            (
                (text.isascii() and text.encode().translate(_MASK_CLASSES) in shapes)
                or self._clean_text(text)
            )
            and not event.__pydantic_extra__
            and (
                (nested := values.get(_OBJECT)) is None
                or (
                    not nested.__pydantic_extra__
                    and (
                        (name := nested.name) is None
                        or (name.isascii() and name.encode().translate(_MASK_CLASSES) in shapes)
                        or self._clean_value(name)
                    )
                )
            )
            and ((rest := fields.nested(values)) == fields.unset or self._clean_nested(rest))
        ):
            return event, ()
        hits: list[str] = []
        model = type(event)
        data = {}
        for name, value in event.model_dump().items():
            if name in _SKIP:
                data[name] = value
                continue
            # A field the contract does not name is kept as sent: its name too.
            kept = name if name in model.model_fields else self._walk(name, name, hits, model)
            data[kept] = self._walk(value, name, hits, model)
        if not hits:
            return event, ()
        return model.model_validate(data), tuple(hits)

    def _clean_text(self, text: str) -> bool:
        """Whether the masks can find no identifier in `text`; the class
        shapes of clean ASCII text are kept."""
        if not text.isascii():
            return _MAYBE_IDENTIFIER.search(text) is None
        shape = text.encode().translate(_MASK_CLASSES)
        if shape in self._clean_shapes:
            return True
        if identifier_spans(shape.decode()):
            return False
        if len(self._clean_shapes) >= CLEAN_CACHE:
            self._clean_shapes.clear()
        self._clean_shapes.add(shape)
        return True

    def _clean_value(self, value: str | None) -> bool:
        """Whether a value holds no identifier. ASCII by its class shape;
        other text (file names in Hangul), which repeats, by value."""
        if value is None:
            return True
        if value.isascii():
            return value.encode().translate(_MASK_CLASSES) in self._clean_shapes or (
                self._clean_text(value)
            )
        if value in self._clean_values:
            return True
        if may_hold_identifier(value):
            return False
        if len(self._clean_values) >= CLEAN_CACHE:
            self._clean_values.clear()
            self._clean_values.add(None)
        self._clean_values.add(value)
        return True

    def _clean_nested(self, values: tuple[Any, ...]) -> bool:
        """Whether no list of strings (DLP data types, reviewed controls) or
        nested record (a sign-in's `auth`, a posture's `device_aliases`) may
        hold an identifier, in a declared field or one the contract does not
        name."""
        for value in values:
            for item in value if isinstance(value, list) else (value,):
                if item is None:
                    continue
                if isinstance(item, str):
                    if not self._clean_value(item):
                        return False
                elif item.__pydantic_extra__ or not all(
                    self._clean_value(v) for v in item.__dict__.values() if isinstance(v, str)
                ):
                    return False
        return True

    def _walk(self, value: Any, path: str, hits: list[str], model: type[Any]) -> Any:
        if isinstance(value, str):
            out = pseudonymise_text(self.key, value)
            if out is not value:
                hits.append(_label(path, model))
            return out
        if isinstance(value, dict):
            return {
                self._walk(k, f"{path}.{k}", hits, model): self._walk(v, f"{path}.{k}", hits, model)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self._walk(v, path, hits, model) for v in value]
        return value


@dataclass(frozen=True)
class _Fields:
    scalars: Callable[[dict[str, Any]], tuple[str | None, ...]]  # str, str | None
    # Lists of strings, records and lists of records but `object`, and what
    # `nested` gives when none of them is set.
    nested: Callable[[dict[str, Any]], tuple[Any, ...]]
    unset: tuple[None, ...]


def _string_fields(model: type[BaseModel]) -> _Fields:
    """The model's declared string fields, its lists of strings, and its
    nested records but the object (looked at apart: its digest is not an
    identifier). Enumerations (`Literal`) cannot hold an identifier."""
    scalars, lists, models = [], [], []
    for name, info in model.model_fields.items():
        if name in _SKIP or name == _OBJECT:
            continue
        kinds = [_bare(k) for k in _options(info.annotation)]
        items = [_bare(get_args(k)[0]) for k in kinds if get_origin(k) is list]
        if str in kinds:
            scalars.append(name)
        elif str in items:
            lists.append(name)
        elif any(_is_model(k) for k in kinds + items):
            models.append(name)
    # Every stream has event_id, entity and source: itemgetter returns a tuple.
    nested = (*lists, *models)
    if not nested:
        return _Fields(itemgetter(*scalars), lambda values: (), ())
    if len(nested) == 1:
        (name,) = nested
        return _Fields(itemgetter(*scalars), lambda values: (values[name],), (None,))
    return _Fields(itemgetter(*scalars), itemgetter(*nested), (None,) * len(nested))


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _options(annotation: Any) -> tuple[Any, ...]:
    """The members of a union (`X | None`), or the annotation alone."""
    return get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)


def _bare(annotation: Any) -> Any:
    """`str` for `Annotated[str, ...]`."""
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


def _label(path: str, model: type[Any]) -> str:
    """A bounded metric label for where an identifier was: the declared field,
    `object.name`, or `extra` for anything the contract does not name."""
    top = path.split(".", 1)[0]
    if top == "object":
        return "object.name" if path == "object.name" else "extra"
    return top if top in model.model_fields else "extra"
