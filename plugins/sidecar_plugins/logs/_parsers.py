"""Parsers: structure from a record's ``message`` (or another string field).

Formats: ``json`` (an object per line, decoded with msgspec), ``logfmt`` (``key=value``,
``key="quoted \\"value\\""``, a bare ``key`` is ``true``; a line needs at least one ``=`` pair),
``regex`` (named groups become fields; groups that did not take part are left out) and ``plain``
(never fails, adds nothing). A list of formats tries each in turn; the first that parses wins.

What a successful parse does to the record (:class:`ParseConfig` options):

* the parsed fields are merged into the record, or stored as one map under ``target``;
* ``message``: the first of ``message_key`` (default ``message``, then ``msg``) found among the
  parsed fields becomes the record's ``message`` (non-string values as their JSON text); if none
  is there, ``message`` keeps the raw line. ``raw_key`` keeps the raw line under that key too;
* parsed fields never overwrite the pipeline's own keys (``message``, ``time``, ``stream``,
  ``file``, ``offset``, ``truncated``): such a field gets a trailing underscore (``time_``),
  where the ``timestamp`` processor finds it by default;
* ``types`` converts string values of named fields to ``int``, ``float`` or ``bool`` (a value
  that does not convert stays a string).

A line that does not parse (invalid JSON, JSON that is not an object, no logfmt pair, no regex
match, or the field missing) is kept unchanged, with ``parse_error`` set to the format's name
(``"json"``; for a list, the names joined by ``","``). Nothing is ever dropped here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgspec

from ._filters import Step
from ._model import Processor, Record

__all__ = [
    "FORMATS",
    "PIPELINE_KEYS",
    "Parse",
    "ParseConfig",
    "parse_logfmt",
]

#: The record keys the pipeline owns; parsed fields with these names get a trailing "_".
PIPELINE_KEYS = ("message", "time", "stream", "file", "offset", "truncated")
FORMATS = ("json", "logfmt", "regex", "plain")

FieldParser = Callable[[str], "dict[str, Any] | None"]

_json_decode = msgspec.json.decode
_json_encode = msgspec.json.encode
_LOGFMT = re.compile(r'([^\s="]+)(?:(=)(?:"((?:[^"\\]|\\.)*)"|([^\s"]*)))?|(")|\S')
_GO_ESCAPES = re.compile(r"\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|.)", re.DOTALL)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def _unescape(text: str) -> str:
    """The body of a logfmt quoted value (Go's strconv.Quote escapes) as text."""
    try:
        value = _json_decode(f'"{text}"')
    except (ValueError, RecursionError):
        value = None
    if type(value) is str:
        return value

    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if len(code) > 1:  # \uXXXX or \xHH
            return chr(int(code[1:], 16))
        return _ESCAPES.get(code, code)

    return _GO_ESCAPES.sub(one, text)


def parse_logfmt(text: str) -> dict[str, Any] | None:
    """``a=1 b="x y" c`` → ``{"a": "1", "b": "x y", "c": True}``; ``None`` if not logfmt."""
    fields: dict[str, Any] = {}
    pairs = 0
    for key, eq, quoted, bare, stray in _LOGFMT.findall(text):
        if stray:
            return None  # an unterminated or misplaced quote
        if not key:
            continue  # stray characters between pairs
        if eq:
            pairs += 1
            if quoted:
                fields[key] = _unescape(quoted) if "\\" in quoted else quoted
            else:
                fields[key] = bare
        else:
            fields[key] = True
    return fields if pairs else None


def _parse_json(text: str) -> dict[str, Any] | None:
    if not text.startswith("{") and not text.lstrip().startswith("{"):
        return None  # not an object: skip the decoder (and its exception)
    try:
        value = _json_decode(text)
    except msgspec.ValidationError:  # valid JSON beyond msgspec's numbers (ints over 64 bits)
        value = _json_stdlib(text)
    except (ValueError, RecursionError):  # msgspec's DecodeError is a ValueError
        return None
    return value if type(value) is dict else None


def _json_stdlib(text: str) -> Any:
    """The rare line msgspec cannot represent, with the stdlib (arbitrary-size ints)."""
    import json

    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _parse_plain(text: str) -> dict[str, Any] | None:
    return {}


def _regex_parser(pattern: str) -> FieldParser:
    search = re.compile(pattern).search

    def parse(text: str) -> dict[str, Any] | None:
        match = search(text)
        if match is None:
            return None
        return {k: v for k, v in match.groupdict().items() if v is not None}

    return parse


def _convert(value: Any, kind: str) -> Any:
    if type(value) is not str:
        return value
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
    except ValueError:
        return value
    low = value.lower()
    return True if low in _TRUE else False if low in _FALSE else value


class ParseConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``parse = "json"`` (or ``"logfmt"``, ``"plain"``, a list tried in order, or this table)
    parses the string in ``field``. Parsed fields are merged into the record (or put under
    ``target``); the first of ``message_key`` found becomes ``message``, else the raw line stays
    there (``raw_key`` keeps it too); a field named like one of the pipeline's keys (``time``,
    ``stream``, ...) gets a trailing ``_``. ``format = "regex"`` takes a ``pattern`` with named
    groups. ``types`` converts fields to ``int``, ``float`` or ``bool``. A line that does not
    parse is kept as it is, with ``parse_error`` set to the format's name.
    """

    format: str
    field: str = "message"
    pattern: str | None = None
    message_key: str | list[str] = msgspec.field(default_factory=lambda: ["message", "msg"])
    target: str | None = None
    raw_key: str | None = None
    types: dict[str, Literal["int", "float", "bool"]] = {}

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            msg = f"format: expected one of {', '.join(FORMATS)}, got {self.format!r}"
            raise ValueError(msg)
        if (self.format == "regex") != (self.pattern is not None):
            msg = "pattern: required with format 'regex', and only there"
            raise ValueError(msg)
        if self.pattern is not None:
            try:
                compiled = re.compile(self.pattern)
            except re.error as err:
                msg = f"pattern: invalid regex {self.pattern!r}: {err}"
                raise ValueError(msg) from None
            if not compiled.groupindex:
                msg = f"pattern: needs named groups like (?P<level>\\w+), got {self.pattern!r}"
                raise ValueError(msg)
        for key in ("field", "target", "raw_key"):
            value = getattr(self, key)
            if value is not None and not value:
                msg = f"{key}: must not be empty"
                raise ValueError(msg)
        if self.target in PIPELINE_KEYS or self.raw_key in PIPELINE_KEYS:
            msg = f"target/raw_key: {', '.join(PIPELINE_KEYS)} belong to the pipeline"
            raise ValueError(msg)

    def message_keys(self) -> tuple[str, ...]:
        return (self.message_key,) if isinstance(self.message_key, str) else tuple(self.message_key)

    def parser(self) -> FieldParser:
        """``text -> fields | None`` for this format."""
        if self.format == "json":
            return _parse_json
        if self.format == "logfmt":
            return parse_logfmt
        if self.format == "regex":
            assert self.pattern is not None
            return _regex_parser(self.pattern)
        return _parse_plain


def parse_configs(value: str | ParseConfig | list[str | ParseConfig]) -> list[ParseConfig]:
    """The ``parse`` value as configs: a format name is ``ParseConfig(format=name)``."""
    items = value if isinstance(value, list) else [value]
    if not items:
        msg = "expected a format or a list of formats"
        raise ValueError(msg)
    configs = []
    for item in items:
        if isinstance(item, str):
            if item not in FORMATS or item == "regex":
                msg = (
                    f"unknown format {item!r} (use json, logfmt or plain, or a table like "
                    "{format = 'regex', pattern = '...'})"
                )
                raise ValueError(msg)
            item = ParseConfig(format=item)
        configs.append(item)
    return configs


class _Merge:
    """Puts one parser's fields into the record as its :class:`ParseConfig` says."""

    __slots__ = ("_msg_keys", "_raw_key", "_target", "_types")

    def __init__(self, config: ParseConfig) -> None:
        self._msg_keys = config.message_keys()
        self._target = config.target
        self._raw_key = config.raw_key
        self._types = tuple(config.types.items())

    def merge(self, record: Record, fields: dict[str, Any], raw: str) -> Record:
        for key, kind in self._types:
            if key in fields:
                fields[key] = _convert(fields[key], kind)
        if self._raw_key is not None:
            record[self._raw_key] = raw
        if self._target is not None:
            record[self._target] = fields
            return record
        for key in self._msg_keys:
            if key in fields:
                value = fields.pop(key)
                record["message"] = value if type(value) is str else _json_encode(value).decode()
                break
        for key in PIPELINE_KEYS:
            if key in fields:
                fields[key + "_"] = fields.pop(key)
        record.update(fields)
        return record


class Parse(Step):
    """Parses a string field with the first format that accepts it (see the module doc)."""

    __slots__ = ("_error", "_field", "_merge", "_parse", "_parsers")

    def __init__(self, name: str, configs: Sequence[ParseConfig]) -> None:
        super().__init__(name)
        self._parsers = tuple((c.field, c.parser(), _Merge(c).merge) for c in configs)
        self._field, self._parse, self._merge = self._parsers[0]
        self._error = ",".join(c.format for c in configs)

    def function(self) -> Processor:
        return self._parse_one if len(self._parsers) == 1 else self.__call__

    def _parse_one(self, record: Record) -> Record | None:
        """The common case of one format, without the loop."""
        text = record.get(self._field)
        if type(text) is str:
            fields = self._parse(text)
            if fields is not None:
                return self._merge(record, fields, text)
        record["parse_error"] = self._error
        return record

    def __call__(self, record: Record) -> Record | None:
        for field, parse, merge in self._parsers:
            text = record.get(field)
            if type(text) is str:
                fields = parse(text)
                if fields is not None:
                    return merge(record, fields, text)
        record["parse_error"] = self._error
        return record
