"""The data the logs pipeline passes along: sources → chunks → records → outputs → acks.

* A **source** (the app's stdout/stderr, or one tailed file) produces :class:`Chunk` objects: the
  complete lines read in one go, in order, with the file offsets needed for checkpoints.
* The pipeline turns each line into a :data:`Record` (a plain ``dict``; the cheapest mapping in
  CPython) and runs the processors, plain callables ``record -> record | None`` (``None`` drops).
* Each output receives :class:`Batch` objects. A batch's ``marks`` say, per checkpoint key, the
  file offset up to which every line is *in this batch or in an earlier one*. Once an output has
  accepted a batch it calls the batch's ``ack``; a file's checkpoint advances to a mark only when
  every output has acked it. Records of one source stay in order in every output.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Batch", "Chunk", "PermanentError", "Processor", "Record", "RetryableError"]

#: One log record. Keys the pipeline always sets: ``message`` (str), ``time`` (float, Unix
#: seconds). Stream sources add ``stream`` ("stdout"/"stderr"); file sources add ``file`` (path)
#: and ``offset`` (byte offset of the line's start). ``truncated: True`` marks a line cut at
#: ``max_line_bytes``. Parsers add their fields; enrichment adds its own.
Record = dict[str, Any]

#: A processor: returns the (possibly new or mutated) record, or ``None`` to drop it.
Processor = Callable[[Record], "Record | None"]


@dataclass(slots=True)
class Chunk:
    """Complete lines read from one source in one go, in order.

    ``lines`` hold the bytes without the newline (a line cut at ``max_line_bytes`` holds its first
    ``max_line_bytes`` bytes; its index is in ``cut`` with the line's full length in the file,
    newline excluded). For a file, ``start`` is the offset of ``lines[0]`` and ``end`` the offset
    just past the last newline consumed (the checkpoint mark once everything before it is
    delivered); for streams both are 0. ``key`` is the checkpoint key (``None`` for streams).
    """

    source: str  # "stdout", "stderr", or the file's path
    key: str | None
    lines: list[bytes]
    start: int = 0
    end: int = 0
    cut: Mapping[int, int] = field(default_factory=dict)
    time: float = 0.0


@dataclass(slots=True)
class Batch:
    """Records handed to one output, in order, plus what acking them means for checkpoints."""

    records: list[Record]
    marks: dict[str, int] = field(default_factory=dict)
    ack: Callable[[Batch], None] | None = None
    size: int = 0  # approximate bytes, for buffer accounting


class RetryableError(Exception):
    """An output could not deliver a batch now (connection refused, 5xx, 429, timeout)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """An output refused a batch for good (4xx other than 408/429): never retried."""
