"""Timestamps: a record's event ``time`` from one of its fields.

``timestamp`` (:class:`TimestampConfig`) sets ``time`` from the first of its fields present
(default ``time_``, ``timestamp``, ``ts``, ``@timestamp``; a parsed ``time`` lands in ``time_``):
RFC 3339/ISO 8601 text, epoch numbers (seconds, or ms/µs/ns told apart by size), RFC 2822, the
Common Log Format, or a ``strptime`` format. Times without an offset are in ``timezone``. The
source field is removed unless ``keep``; on failure ``time`` stays the read time and
``parse_error`` is ``"timestamp"``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, tzinfo
from email.utils import parsedate_to_datetime
from typing import Any

import msgspec

from ._filters import MISSING, Step
from ._model import Record

__all__ = ["Timestamp", "TimestampConfig"]

_EPOCH_FORMATS = {"epoch": 1.0, "epoch_ms": 1e3, "epoch_us": 1e6, "epoch_ns": 1e9}
_CLF = "%d/%b/%Y:%H:%M:%S %z"


def _number(text: str) -> float | None:
    """``"1714564800"``, ``"-1.5"`` → a float; anything else (dates included) → None."""
    digits = text[1:] if text[:1] == "-" else text
    if digits.isascii() and (
        digits.isdigit() or (digits.count(".") == 1 and digits.replace(".", "").isdigit())
    ):
        return float(text)
    return None


def _epoch(value: float, scale: float | None) -> float | None:
    if value != value or value in (float("inf"), float("-inf")):
        return None
    if scale is None:  # seconds until ~5138 AD; then ms, µs, ns by magnitude
        size = abs(value)
        scale = 1.0 if size < 1e11 else 1e3 if size < 1e14 else 1e6 if size < 1e17 else 1e9
    return value / scale


def _timestamp_parser(fmt: str, zone: tzinfo | None) -> Callable[[Any], float | None]:
    """``value -> Unix seconds | None`` for a ``format``; naive times are in ``zone`` (None:
    the local time zone)."""

    def aware(moment: datetime) -> float | None:
        if moment.tzinfo is None and zone is not None:
            moment = moment.replace(tzinfo=zone)
        try:
            return moment.timestamp()
        except (OverflowError, OSError, ValueError):  # beyond what the platform represents
            return None

    def text(value: str) -> float | None:
        try:
            return aware(datetime.fromisoformat(value))
        except ValueError:
            if not auto:
                return None
        number = _number(value)
        if number is not None:
            return _epoch(number, None)
        try:
            return aware(parsedate_to_datetime(value))
        except (TypeError, ValueError, IndexError):
            pass
        try:
            return aware(datetime.strptime(value, _CLF))
        except ValueError:
            return None

    if "%" in fmt:

        def strptime(value: Any) -> float | None:
            if type(value) is not str:
                return None
            try:
                return aware(datetime.strptime(value, fmt))
            except ValueError:
                return None

        return strptime
    scale = _EPOCH_FORMATS.get(fmt)
    auto = fmt == "auto"
    numeric = auto or scale is not None

    def parse(value: Any) -> float | None:
        kind = type(value)
        if kind is int or kind is float:
            return _epoch(value, scale) if numeric else None
        if kind is not str:
            return None
        if scale is not None:
            number = _number(value)
            return None if number is None else _epoch(number, scale)
        if auto and value.isascii() and value.isdigit():  # the common epoch string, cheaply
            return _epoch(float(value), None)
        return text(value)  # RFC 3339 first: the common case

    return parse


def _zone(name: str) -> tzinfo | None:
    """``UTC``, ``local`` (None: the platform's rules, DST included) or an IANA zone."""
    if name.upper() == "UTC":
        return UTC
    if name == "local":
        return None
    from zoneinfo import ZoneInfo

    return ZoneInfo(name)


class TimestampConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``timestamp = "ts"`` (or this table) sets the record's ``time`` from the first of
    ``field`` present: ``format = "auto"`` reads RFC 3339/ISO 8601, epoch numbers (s, ms, µs or
    ns, told apart by size), RFC 2822 and the Common Log Format; ``rfc3339``, ``epoch``,
    ``epoch_ms``, ``epoch_us``, ``epoch_ns`` or a ``strptime`` format (``%d/%b/%Y:%H:%M:%S %z``)
    read only that. Times without an offset are in ``timezone`` (``UTC``, ``local`` or an IANA
    name). The field is removed unless ``keep``; a value that does not read leaves ``time`` as
    read and sets ``parse_error = "timestamp"``.
    """

    field: str | list[str] = msgspec.field(
        default_factory=lambda: ["time_", "timestamp", "ts", "@timestamp"]
    )
    format: str = "auto"
    timezone: str = "UTC"
    keep: bool = False

    def fields(self) -> tuple[str, ...]:
        return (self.field,) if isinstance(self.field, str) else tuple(self.field)

    def __post_init__(self) -> None:
        if not self.fields() or not all(self.fields()) or "time" in self.fields():
            msg = f"field: expected field names other than 'time', got {self.field!r}"
            raise ValueError(msg)
        known = ("auto", "rfc3339", *_EPOCH_FORMATS)
        if self.format not in known and "%" not in self.format:
            msg = (
                f"format: expected {', '.join(known)} or a strptime format like "
                f"'%d/%b/%Y:%H:%M:%S %z', got {self.format!r}"
            )
            raise ValueError(msg)
        try:
            _zone(self.timezone)
        except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
            msg = (
                f"timezone: unknown time zone {self.timezone!r} "
                "(use 'UTC', 'local' or an IANA name like 'Europe/Berlin')"
            )
            raise ValueError(msg) from None


class Timestamp(Step):
    """Sets ``time`` from a field (see the module doc)."""

    __slots__ = ("_fields", "_keep", "_parse")

    def __init__(self, name: str, config: TimestampConfig) -> None:
        super().__init__(name)
        self._fields = config.fields()
        self._keep = config.keep
        self._parse = _timestamp_parser(config.format, _zone(config.timezone))

    def __call__(self, record: Record) -> Record | None:
        for field in self._fields:
            value = record.get(field, MISSING)
            if value is MISSING:
                continue
            seconds = self._parse(value)
            if seconds is None:
                record["parse_error"] = "timestamp"
            else:
                record["time"] = seconds
                if not self._keep:
                    del record[field]
            return record
        return record
