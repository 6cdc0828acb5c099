"""One output's queue: a bounded memory buffer that spills to segment files on disk, FIFO.

Items enter memory while it holds less than ``memory_max_bytes`` and nothing is on disk; beyond
that they are appended to segment files under the spool directory (MessagePack frames with a
4-byte length prefix, one file per segment of at most ``segment_max_bytes``) while the files
total less than ``disk_max_bytes``. Once anything is on disk, new items follow it to disk, so
the order is always memory first, then disk, oldest first. Segment files are deleted once read.
Only records go to disk; marks and acks stay in memory (they are small), so even an unreadable
segment still advances checkpoints (its records are counted as lost).
Appends and reads are plain synchronous syscalls without fsync (the page cache absorbs them;
a spilled batch costs one MessagePack encoding and one append), and no file stays open.

The spool is cleared when an output starts: its records were never acknowledged, so file
sources re-read them from their checkpoints; records of the app's streams spooled by a run that
crashed are gone. When the disk is full or unwritable (``ENOSPC``, ``EACCES``), :meth:`offer`
says no (the caller waits: backpressure, never loss), logs once and retries the disk after
``retry_interval`` seconds.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from ._model import Batch, Record

__all__ = ["Spool", "SpoolItem"]

_HEADER = struct.Struct(">I")
_SUFFIX = ".spool"
_ENCODER = msgspec.msgpack.Encoder(enc_hook=str)
_DECODER = msgspec.msgpack.Decoder(list[dict[str, Any]])


@dataclass(slots=True)
class SpoolItem:
    """One glue batch in the queue: its records, marks, size and (for its ack) the batch."""

    records: list[Record]
    marks: dict[str, int]
    size: int
    origin: Batch | None = None
    lost: int = 0  # records that could not be read back from disk


@dataclass(slots=True)
class _OnDisk:
    count: int
    size: int
    marks: dict[str, int]
    origin: Batch | None


@dataclass(slots=True)
class _Segment:
    path: str
    items: int = 0
    bytes: int = 0
    read: int = 0
    offset: int = 0
    broken: bool = False
    sealed: bool = False


@dataclass(slots=True)
class _Failure:
    until: float = 0.0
    logged: set[str] = field(default_factory=set)


class Spool:
    """FIFO of :class:`SpoolItem`: memory up to a bound, then segment files up to a bound."""

    def __init__(
        self,
        directory: str,
        *,
        memory_max_bytes: int,
        disk_max_bytes: int,
        log: Any,
        segment_max_bytes: int | None = None,
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.memory_max_bytes = memory_max_bytes
        self.disk_max_bytes = disk_max_bytes
        self.segment_max_bytes = segment_max_bytes or max(
            64 * 1024, min(8 * 1024 * 1024, disk_max_bytes // 8)
        )
        self.retry_interval = retry_interval
        self.log = log
        self._clock = clock
        self._memory: deque[SpoolItem] = deque()
        self.memory_bytes = 0
        self._disk: deque[_OnDisk] = deque()
        self._segments: deque[_Segment] = deque()
        self._seq = 0
        self._failure = _Failure()
        self.disk_bytes = 0
        self.records = 0
        self.bytes = 0
        self.errors = 0
        self.lost_records = 0

    def __len__(self) -> int:
        return len(self._memory) + len(self._disk)

    @property
    def retry_at(self) -> float | None:
        """When (on the spool's clock) a failed disk is tried again; ``None`` when it is fine."""
        return self._failure.until if self._failure.until > self._clock() else None

    def clear(self) -> int:
        """Delete segment files a previous run left behind; how many were deleted."""
        try:
            names = [n for n in os.listdir(self.directory) if n.endswith(_SUFFIX)]
        except OSError:
            return 0
        removed = 0
        for name in names:
            try:
                os.unlink(os.path.join(self.directory, name))
                removed += 1
            except OSError as err:
                self.log.warning("spool_clear_failed", path=name, error=str(err))
        return removed

    @property
    def spilling(self) -> bool:
        """Items are on disk: new ones go behind them, to disk too."""
        return bool(self._disk)

    def offer(self, item: SpoolItem, *, disk: bool = True) -> bool:
        """Queue ``item`` in memory or (with ``disk``) on disk; False when that is full (or the
        disk fails)."""
        if not self._disk and (
            not self._memory or self.memory_bytes + item.size <= self.memory_max_bytes
        ):
            self._memory.append(item)
            self.memory_bytes += item.size
        elif not disk or not self._disk_usable() or not self._write(item):
            return False
        self.records += len(item.records)
        self.bytes += item.size
        return True

    def pop(self) -> SpoolItem | None:
        """The oldest item, or ``None`` when the spool is empty."""
        if self._memory:
            item = self._memory.popleft()
            self.memory_bytes -= item.size
        elif self._disk:
            item = self._read(self._disk.popleft())
        else:
            return None
        self.records -= len(item.records) + item.lost
        self.bytes -= item.size
        return item

    def _disk_usable(self) -> bool:
        return bool(self.disk_max_bytes) and self._failure.until <= self._clock()

    def _fail(self, action: str, err: OSError) -> None:
        self.errors += 1
        if action == "write":
            self._failure.until = self._clock() + self.retry_interval
        key = f"{action}:{err.errno}"
        if key not in self._failure.logged:
            self._failure.logged.add(key)
            self.log.warning(
                "spool_failed",
                action=action,
                directory=self.directory,
                error=str(err),
                retry_in=self.retry_interval,
            )

    def _write(self, item: SpoolItem) -> bool:
        payload = _ENCODER.encode(item.records)
        frame = _HEADER.pack(len(payload)) + payload
        if self._disk and self.disk_bytes + len(frame) > self.disk_max_bytes:
            return False
        segment = self._segments[-1] if self._segments else None
        new = segment is None or segment.sealed
        if segment is None or new:
            self._seq += 1
            segment = _Segment(os.path.join(self.directory, f"{self._seq:012d}{_SUFFIX}"))
        try:
            if new:
                os.makedirs(self.directory, exist_ok=True)
            _append(segment.path, frame, segment.bytes)
        except OSError as err:
            if new:
                with contextlib.suppress(OSError):
                    os.unlink(segment.path)
            self._fail("write", err)
            return False
        if new:
            self._segments.append(segment)
        segment.items += 1
        segment.bytes += len(frame)
        segment.sealed = segment.bytes >= self.segment_max_bytes
        self.disk_bytes += len(frame)
        if self._failure.until:
            self._failure.until = 0.0
            self._failure.logged = {k for k in self._failure.logged if not k.startswith("write:")}
            self.log.info("spool_write_recovered", directory=self.directory)
        origin = item.origin
        if origin is not None:  # keep the ack, not the records
            origin = Batch([], origin.marks, origin.ack, origin.size)
        self._disk.append(_OnDisk(len(item.records), item.size, item.marks, origin))
        return True

    def _read(self, meta: _OnDisk) -> SpoolItem:
        segment = self._segments[0]
        records: list[Record] | None = None
        if not segment.broken:
            try:
                with open(segment.path, "rb") as handle:
                    handle.seek(segment.offset)
                    (length,) = _HEADER.unpack(handle.read(_HEADER.size))
                    records = _DECODER.decode(handle.read(length))  # short reads fail here
                segment.offset += _HEADER.size + length
            except (OSError, struct.error, msgspec.DecodeError) as err:
                segment.broken = True
                error = err if isinstance(err, OSError) else OSError(0, str(err))
                self._fail("read", error)
        segment.read += 1
        if segment.read == segment.items:
            # Read completely: delete it (a segment still being written is sealed with it).
            self._segments.popleft()
            self.disk_bytes -= segment.bytes
            try:
                os.unlink(segment.path)
            except OSError as err:
                self._fail("delete", err)
        if records is None:
            self.lost_records += meta.count
            return SpoolItem([], meta.marks, meta.size, meta.origin, lost=meta.count)
        return SpoolItem(records, meta.marks, meta.size, meta.origin)


def _append(path: str, frame: bytes, expected: int) -> None:
    """Append ``frame`` to ``path`` (which holds ``expected`` bytes); undo a partial write."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(frame)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, expected)
            raise
    finally:
        os.close(fd)
