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
from datetime import date
from functools import cache
from operator import itemgetter
from types import UnionType
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import SchemaValidator

from detectors.masking import _luhn, identifier_spans
from schemas import ControlReview, DevicePosture, DlpAlert, EventAdapter, SaasAccess

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
AnyEvent = SaasAccess | DevicePosture | DlpAlert | ControlReview


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
        # The event a JSON record holds, if its strings are known to hold no
        # identifier (`clean_events`); else pydantic-core's ValidationError.
        self.parse_clean: Callable[[bytes], AnyEvent] = clean_events().validate_json

    def validate_json(self, raw: bytes) -> tuple[AnyEvent, bool]:
        """The event a JSON record holds, and whether it is known to hold no
        identifier: parsed by `clean_events` if it can be, which checks its
        strings as it parses them (almost every record); else by the
        contract's validator, whose ValidationError it raises, and to be
        looked at (`event`)."""
        try:
            return self.parse_clean(raw), True
        except ValidationError:
            return EventAdapter.validator.validate_json(raw), False

    def text(self, value: str) -> str:
        return pseudonymise_text(self.key, value)

    def event(self, event: E) -> tuple[E, tuple[str, ...]]:
        """The event with identifiers pseudonymised, and the fields that held
        one (a declared field's name, `object.name`, or `extra` for what the
        contract does not name). The event itself when none did. A value made
        longer than its field allows raises pydantic's ValidationError.

        Admission runs this on every event the check while parsing refuses
        (`validate_json`). For one without an identifier (a date in a file
        name) it costs one byte translation of its string fields joined, whose
        class shape is then found among the few shapes known to be clean
        (`_MASK_CLASSES`), and the same for a file name."""
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
        number = type(value) is int and not _declared(path, model)
        if number and identifier_number(value, path):
            hits.append(_label(path, model))
            return pseudonym(self.key, str(value))
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


# -- Numbers ---------------------------------------------------------------------
#
# A vendor may send a card number or an RRN as a JSON number, in a field the
# contract does not name. The masks read any nine digits or more as an account
# number, and so would take every epoch time and 64-bit record id a vendor
# keeps for one: a number is read narrowly instead.
#
# - A card: 13 to 19 digits passing the Luhn check.
# - An RRN or alien registration number: 13 digits, the first six a date
#   (YYMMDD) and the seventh the gender and century digit (1-8: 1900s and
#   2000s, citizens and foreigners) of which that date is a real one. The
#   masks check no RRN checksum (numbers issued since October 2020 carry none).
# - No account number, no other number.
# - Epoch times stay: a number in or under a field whose name says it is a
#   time (`timestamp`, `unixTime`, `date_create`, `completed_at`) is not read; ten
#   digits (seconds) is no card nor RRN anywhere; thirteen digits up to 2100 in
#   milliseconds (the contract's latest event time) is never read as a card.
_EPOCH_MS_END = 4_102_444_800_000  # 2100-01-01T00:00:00Z
_CENTURY = {"1": 1900, "2": 1900, "5": 1900, "6": 1900, "3": 2000, "4": 2000, "7": 2000, "8": 2000}
_TIME_WORDS = {"time", "times", "timestamp", "ts", "date", "datetime", "epoch", "ms", "millis"}
_TIME_WORDS |= {"milliseconds", "at", "created", "updated", "modified", "expires", "expiry"}
_TIME_WORDS |= {"seen", "since", "until"}
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


def identifier_number(value: int, path: str) -> bool:
    """Whether a JSON number at `path` (`vendor.card.pan`) is a card number or
    an RRN. Under a field named as a time (`completed_at.value`), never."""
    digits = str(value)
    if value < 0 or not 13 <= len(digits) <= 19 or _names_a_time(path):
        return False
    epoch_ms = len(digits) == 13 and value < _EPOCH_MS_END
    return (not epoch_ms and _luhn(digits)) or (len(digits) == 13 and _rrn(digits))


def _rrn(digits: str) -> bool:
    century = _CENTURY.get(digits[6])
    if century is None:
        return False
    try:
        date(century + int(digits[:2]), int(digits[2:4]), int(digits[4:6]))
    except ValueError:
        return False
    return True


def _names_a_time(path: str) -> bool:
    return any(w.lower() in _TIME_WORDS for w in _WORDS.findall(path))


def _declared(path: str, model: type[Any]) -> bool:
    """Whether `path` is a field the contract names (`size`, `object.size`),
    whose number is a number."""
    top, _, rest = path.partition(".")
    info = model.model_fields.get(top)
    if info is None:
        return False
    if not rest:
        return True
    kinds = [_bare(k) for k in _options(info.annotation)]
    kinds += [_bare(get_args(k)[0]) for k in kinds if get_origin(k) is list]
    return any(_is_model(k) and rest in k.model_fields for k in kinds)


def _label(path: str, model: type[Any]) -> str:
    """A bounded metric label for where an identifier was: the declared field,
    `object.name`, or `extra` for anything the contract does not name."""
    top = path.split(".", 1)[0]
    if top == "object":
        return "object.name" if path == "object.name" else "extra"
    return top if top in model.model_fields else "extra"


# -- Known clean at parsing ----------------------------------------------------
#
# Almost every event holds no identifier, and looking at its fields in Python
# costs about a tenth of replay. So the event's JSON is parsed by a validator
# built from the contract's own schema in which every string the pseudonymiser
# reads must also match one pattern, checked in pydantic-core (Rust) as it
# parses. The pattern accepts only text in which the masks can find nothing
# (it cannot say "does not contain", so it spells out what clean text is):
#
# - no run of more than eight digits (digits joined by up to three
#   separators, as an RRN's are), but a dotted IPv4 address: so no RRN
#   (thirteen), card, account or licence number (nine or more);
# - no ASCII letter directly before a run of eight (a passport, M12345678);
# - no run of three or more, one letter and a run of four or more (the 2021
#   passport, M123A4567).
#
# The pattern reads ASCII, where a digit is 0-9 and a separator what the
# masks' `\s`, dots and dashes are, and a few blocks of other text in which
# there is no digit, space or dash of any script (Hangul, kana, CJK
# ideographs, Latin and other letters before the first other digits, U+0660;
# a test holds them to it): a string with any other character (a full-width
# digit, a non-breaking space) is refused and looked at in Python. Unicode
# classes (`\d`) would cost six times as much. A record refused (an
# identifier, or merely a date in a file name, or a field the contract does
# not name) is parsed again by the contract's validator and looked at in
# Python (`Pseudonymiser.event`), as before.
QUIET = (
    r"\xa1-\x{65f}\x{1100}-\x{11ff}\x{3040}-\x{30ff}\x{3130}-\x{318f}"
    r"\x{4e00}-\x{9fff}\x{ac00}-\x{d7a3}"
)
_SEPARATOR = r"\t-\r\x1c-\x1f .\-"


def _clean_pattern() -> str:
    s, gap = f"[{_SEPARATOR}]", f"[{_SEPARATOR}]{{0,3}}"
    # Not a digit; neither a digit nor a letter; neither a digit nor a separator.
    nd = rf"[\x00-/:-\x7f{QUIET}]"
    letter, not_letter = "[A-Za-z]", rf"[\x00-/:-@\[-`{{-\x7f{QUIET}]"
    nds = rf"[\x00-\x08\x0e-\x1b!-,/:-\x7f{QUIET}]"
    other_char = rf"[\x00-\x08\x0e-\x1b!-,/:-@\[-`{{-\x7f{QUIET}]"  # none of the three
    breaks = rf"(?:{nds}|{s}{{4}})"  # ends a run: letters too
    # Digit runs (digits joined by up to three separators): one or two
    # digits, three to seven, eight, exactly three; or an IPv4 address.
    small, three = rf"[0-9](?:{gap}[0-9])?", rf"[0-9](?:{gap}[0-9]){{2}}"
    mid, eight = rf"[0-9](?:{gap}[0-9]){{2,6}}", rf"[0-9](?:{gap}[0-9]){{7}}"
    ipv4 = r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}"
    # What lies between two runs: ending in a letter (one alone, or more),
    # or not, and ending the run before it either way.
    other = rf"{nd}*(?:{other_char}|{s}{{4}}|{breaks}{nd}*{not_letter})"
    letters = rf"{nd}+{letter}"
    to_small = rf"(?:{other}|{nd}*{letter}){small}"
    to_big = rf"(?:{other}(?:{mid}|{eight}|{ipv4})|{letters}(?:{mid}|{ipv4}))"
    after_small = rf"{letter}(?:{mid}|{ipv4})"  # one letter after one or two digits
    after_big = rf"{letter}{three}"  # one letter after three digits or more
    from_big = (
        rf"(?:{to_big}|{after_big}|(?:{to_small})+(?:{to_big}|{after_small}))*(?:{to_small})*"
    )
    first_big = rf"(?:(?:{nd}*{not_letter})?(?:{mid}|{eight}|{ipv4})|{nd}*{letter}(?:{mid}|{ipv4}))"
    from_small = rf"(?:{to_small})*(?:(?:{to_big}|{after_small}){from_big})?"
    from_start = rf"{nd}*{small}{from_small}|{first_big}{from_big}"
    return rf"^(?:{from_start})?{nd}*$"


@cache
def clean_events() -> SchemaValidator:
    """The contract's event validator, but refusing any record in which a
    string the pseudonymiser reads may hold an identifier, or which has a
    field the contract does not name."""
    models: list[type[BaseModel]] = []
    schema = _checked(EventAdapter.core_schema, _clean_pattern(), False, models)
    # pydantic-core builds a model the schema names from the class's own
    # validator where the class is complete (its "prebuilt" validator), which
    # checks none of this: built while the classes say they are not.
    for model in models:
        type.__setattr__(model, "__pydantic_complete__", False)
    try:
        validator = SchemaValidator(schema)
    finally:
        for model in models:
            type.__setattr__(model, "__pydantic_complete__", True)
    # Were the checks skipped (another pydantic-core), every identifier would
    # pass as clean: refuse to start instead.
    try:
        validator.validate_json(_PLANTED)
    except ValidationError:
        return validator
    raise RuntimeError("the pseudonymiser's parsing check refuses nothing (pydantic-core?)")


# An access whose user id is a card number (made up).
_PLANTED = (
    b'{"stream": "saas_access", "event_id": "e", "timestamp": "2026-01-01T00:00:00Z",'
    b' "entity": "HQ", "user_id": "4111111111111111", "saas_app": "a", "action": "login",'
    b' "network_zone": "internal"}'
)


def _checked(schema: Any, pattern: str, object_ref: bool, models: list[type[BaseModel]]) -> Any:
    """`schema` with every string it validates also matched against
    `pattern`, and no field the contract does not name allowed. Within the
    object (`object_ref`) only the name: its digest is not an identifier.
    The model classes met are added to `models`."""
    if isinstance(schema, list):
        return [_checked(s, pattern, object_ref, models) for s in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    if kind == "str":
        if "pattern" not in schema:
            return {**schema, "pattern": pattern}
        return {"type": "chain", "steps": [schema, {"type": "str", "pattern": pattern}]}
    if kind == "model-fields":
        fields = {}
        for name, field in schema["fields"].items():
            kept = name in _SKIP or (object_ref and name != "name")
            inside = name == _OBJECT
            fields[name] = field if kept else _checked(field, pattern, inside, models)
        return {**schema, "fields": fields, "extra_behavior": "forbid"}
    out = {
        k: v if k in ("metadata", "config") else _checked(v, pattern, object_ref, models)
        for k, v in schema.items()
    }
    if kind == "model":
        models.append(schema["cls"])
        out["config"] = {**schema.get("config", {}), "extra_fields_behavior": "forbid"}
    return out
