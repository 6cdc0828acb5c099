"""What every output driver shares: the :class:`Output` protocol, typed send errors, encoders.

A driver's ``send`` either returns (the whole batch was accepted) or raises:

* :class:`~sidecar_plugins.logs._model.RetryableError` (here :class:`RetryLater`): try again
  later; ``retry_after`` is the server's wish, ``records`` (if set) the part still to send
  because the rest was accepted or rejected already (Elasticsearch items);
* :class:`~sidecar_plugins.logs._model.PermanentError` (here :class:`Rejected`): refused for
  good; ``count`` records (all when ``None``) are counted as rejected and never retried.

``kind`` names the failure for metrics and one-time log events: ``connect``, ``timeout``,
``http_503``, ``write_ENOSPC``, ``es_item_400``, ... Drivers never mutate the records they are
given: the same dicts go to every output.
"""

from __future__ import annotations

import errno
import time
from typing import Any, Protocol

import msgspec

from .._model import PermanentError, Record, RetryableError

__all__ = [
    "Output",
    "Rejected",
    "RetryLater",
    "encode_array",
    "encode_json",
    "encode_lines",
    "error_kind",
    "os_error_kind",
    "record_time",
]


class Output(Protocol):
    """One driver per output kind. ``open`` and ``close`` are idempotent.

    A driver may also count the bytes it wrote in an int attribute ``bytes_sent`` (after
    compression); the delivery reports it as ``bytes_out``.
    """

    name: str

    async def open(self) -> None:
        """Prepare sessions or files; may be lazy (connect on first send)."""

    async def send(self, records: list[Record]) -> None:
        """Deliver ``records`` in order, bounded by the output's ``timeout``."""

    async def close(self) -> None:
        """Release sockets, sessions and files."""


class RetryLater(RetryableError):
    """Raised by a driver's ``send`` when the batch (or ``records`` of it) should be resent."""

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        retry_after: float | None = None,
        records: list[Record] | None = None,
        rejected: int = 0,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.kind = kind
        self.records = records
        self.rejected = rejected


class Rejected(PermanentError):
    """Raised by a driver's ``send`` when the output refused ``count`` records for good."""

    def __init__(self, message: str, *, kind: str, count: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.count = count


def error_kind(err: BaseException) -> str:
    """The metrics label of a send failure."""
    kind = getattr(err, "kind", None)
    if isinstance(kind, str):
        return kind
    if isinstance(err, RetryableError):
        return "retryable"
    if isinstance(err, PermanentError):
        return "rejected"
    if isinstance(err, TimeoutError):
        return "timeout"
    if isinstance(err, OSError):
        return os_error_kind("io", err)
    return "internal"


def os_error_kind(prefix: str, err: OSError) -> str:
    """``write_ENOSPC`` from ``("write", OSError(ENOSPC))``; ``write_error`` without an errno."""
    name = errno.errorcode.get(err.errno or 0)
    return f"{prefix}_{name}" if name else f"{prefix}_error"


def _fallback(obj: Any) -> Any:
    """Values JSON cannot hold (sets, exceptions, custom objects) are written as text."""
    if isinstance(obj, set | frozenset):
        return list(obj)
    return str(obj)


_JSON = msgspec.json.Encoder(enc_hook=_fallback)


def encode_lines(records: list[Record]) -> bytes:
    """JSON lines: one compact object per record, each ending in ``\\n``."""
    return _JSON.encode_lines(records)


def encode_array(records: list[Record]) -> bytes:
    """One JSON array of the records."""
    return _JSON.encode(records)


def encode_json(value: Any) -> bytes:
    """One record (or any value) as compact JSON."""
    return _JSON.encode(value)


def record_time(record: Record) -> float:
    """The record's ``time`` (Unix seconds), or now when it is missing or not a number."""
    value = record.get("time")
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    return time.time()
