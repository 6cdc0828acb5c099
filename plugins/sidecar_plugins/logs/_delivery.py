"""One output's delivery: queue, batch by size and time, send, retry with backoff, report.

The pipeline hands every output the same :class:`Batch` objects through :meth:`Delivery.put`.
They queue in a :class:`~._spool.Spool` (memory, then disk). :meth:`Delivery.run` takes records
in order into an output batch until it holds ``batch_max_records`` records or
``batch_max_bytes`` bytes, or ``batch_timeout`` has passed since its first record, and sends it.
One batch is in flight at a time and a failed batch is retried before anything after it, so
records arrive in the order they were put (a pipeline batch may be split between two output
batches; only its last part carries its marks).

Retries: capped exponential backoff with jitter (``retry_initial`` doubling up to
``retry_max``, each delay drawn from its upper half), or the server's ``Retry-After`` (up to
:data:`RETRY_AFTER_CAP`); unlimited unless ``max_retries`` is set, after which the batch is
dropped and counted. A permanent refusal (4xx) counts the records as rejected and moves on.

After each output batch is accepted, rejected or dropped, ``on_delivered(marks)`` is called
with the merged marks (max per key) of the pipeline batches it completed, in order; a batch's
own ``ack`` (if set) is called too, with the batch (or, if it went through the disk spool, an
equal batch without its records).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskStatus

from ._model import Batch, PermanentError, Record, RetryableError
from ._spool import Spool, SpoolItem
from .outputs import Output, OutputConfig, Rejected, RetryLater, error_kind

__all__ = [
    "RETRY_AFTER_CAP",
    "Delivery",
    "DeliveryStats",
    "backoff_delay",
    "estimate_size",
    "retry_delay",
]

#: The longest ``Retry-After`` honoured, in seconds (or ``retry_max`` if that is longer).
RETRY_AFTER_CAP = 300.0
#: ``output_buffer_full`` (put() has to wait) is logged at most once per this many seconds.
FULL_LOG_INTERVAL = 60.0
#: A healthy output's full memory buffer makes the pipeline wait this long before spilling.
SPILL_AFTER = 1.0
#: Bytes added per record to its message length when a batch does not say its size.
RECORD_OVERHEAD = 96


def estimate_size(records: list[Record]) -> int:
    """Approximate JSON bytes of ``records``: message lengths (of a sample) plus an overhead."""
    count = len(records)
    sample = records if count <= 32 else records[:: count // 16]
    try:
        total = sum(len(r.get("message", "")) for r in sample)
    except TypeError:
        total = sum(len(str(r.get("message", ""))) for r in sample)
    return (total * count // len(sample) if sample else 0) + RECORD_OVERHEAD * count


def backoff_delay(
    attempt: int, initial: float, maximum: float, rng: random.Random | None = None
) -> float:
    """The wait before retry ``attempt`` (from 1): ``initial * 2**(attempt-1)``, capped, jitter."""
    base = min(maximum, initial * 2.0 ** min(attempt - 1, 60))
    return base * (0.5 + 0.5 * (rng or random).random())


def retry_delay(
    retry_after: float | None,
    attempt: int,
    initial: float,
    maximum: float,
    rng: random.Random | None = None,
) -> float:
    """The server's ``Retry-After`` (at most :data:`RETRY_AFTER_CAP` or ``maximum``), or backoff."""
    if retry_after is not None and retry_after > 0:
        return min(float(retry_after), max(RETRY_AFTER_CAP, maximum))
    return backoff_delay(attempt, initial, maximum, rng)


@dataclass
class DeliveryStats:
    """Counters and gauges of one output (read by the metrics collector)."""

    records_in: int = 0
    records_out: int = 0
    bytes_out: int = 0
    batches_out: int = 0
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    rejected_records: int = 0
    retries_exhausted_records: int = 0
    spool_lost_records: int = 0
    buffered_records: int = 0
    buffered_bytes: int = 0
    spooled_bytes: int = 0
    spool_errors: int = 0
    last_error: str | None = None


@dataclass(slots=True)
class _OutBatch:
    records: list[Record] = field(default_factory=list)
    parts: list[SpoolItem] = field(default_factory=list)  # pipeline batches completed here
    size: float = 0.0
    ready: bool = False


class Delivery:
    """Delivers one output's batches in order, with batching, retries and a spool.

    ``buffer_max_bytes`` bounds the queue in memory; the batch being sent (at most
    ``batch_max_bytes``) comes on top. The spool directory is emptied when the delivery is
    created: its records were never acknowledged, so file sources re-read them from their
    checkpoints (records of the app's streams spooled by a crashed run are not replayed).
    """

    def __init__(
        self,
        output: Output,
        config: OutputConfig,
        *,
        spool_dir: str,
        on_delivered: Callable[[dict[str, int]], None],
        log: Any,
    ) -> None:
        self.output = output
        self.config = config
        self.log = log
        self.stats = DeliveryStats()
        self._on_delivered = on_delivered
        self._spool = Spool(
            spool_dir,
            memory_max_bytes=config.buffer_max_bytes,
            disk_max_bytes=config.spool_max_bytes,
            log=log,
        )
        removed = self._spool.clear()
        if removed:
            log.info("spool_cleared", directory=spool_dir, files=removed)
        self._rng = random.Random()  # noqa: S311  (jitter, not secrets)
        self._head: SpoolItem | None = None  # a pipeline batch taken in part
        self._head_pos = 0
        self._current: _OutBatch | None = None
        self._changed = anyio.Event()  # something was put, or a flush began
        self._space = anyio.Event()  # the spool has room again
        self._progress = anyio.Event()  # a batch completed, or the loop went idle or stopped
        self._flushing = False
        self._running = False
        self._full_logged = -FULL_LOG_INTERVAL
        self._rejected_kinds: set[str] = set()
        self._failures = 0

    # The pipeline's side.

    async def put(self, batch: Batch) -> None:
        """Queue ``batch``; waits while memory and spool are full (or the spool fails).

        While the output is healthy and only slower than the input, a full memory buffer
        first makes the pipeline wait (up to ``SPILL_AFTER``): spilling to disk is for an
        output that fails or stays behind, not for every burst."""
        await anyio.lowlevel.checkpoint()
        item = self._item(batch)
        if self._offer(item, disk=False):
            return
        if not self._failures and not self._spool.spilling:
            with anyio.move_on_after(SPILL_AFTER):
                while not self._offer(item, disk=False):
                    await self._progress.wait()
                return
        while not self._offer(item):
            now = time.monotonic()
            if now - self._full_logged >= FULL_LOG_INTERVAL:
                self._full_logged = now
                self.log.info(
                    "output_buffer_full",
                    buffered_bytes=self.stats.buffered_bytes,
                    spooled_bytes=self.stats.spooled_bytes,
                )
            event = self._space
            retry_at = self._spool.retry_at
            if retry_at is None:
                await event.wait()
            else:
                with anyio.move_on_after(max(0.0, retry_at - time.monotonic())):
                    await event.wait()

    def put_nowait(self, batch: Batch) -> bool:
        """Queue ``batch`` if that needs no waiting; False otherwise."""
        return self._offer(self._item(batch))

    async def flush(self) -> bool:
        """Deliver everything queued (retrying as usual; bound it with a cancel scope)."""
        self._flushing = True
        self._notify("_changed")
        try:
            while not self._empty():
                if self._running:
                    await self._progress.wait()
                else:
                    await self.output.open()
                    await self._step()
        finally:
            self._flushing = False
        return True

    # The loop.

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Batch, send and retry until cancelled."""
        await self.output.open()
        self._running = True
        task_status.started()
        try:
            while True:
                await self._step()
        finally:
            self._running = False
            self._notify("_progress")

    def _empty(self) -> bool:
        current = self._current
        return (
            (current is None or not (current.records or current.parts))
            and self._head is None
            and not len(self._spool)
        )

    async def _step(self) -> None:
        batch = self._current
        if batch is None:
            batch = self._current = _OutBatch()
        if not batch.ready:
            await self._collect(batch)
            batch.ready = True
        await self._send(batch)
        self._current = None
        self._complete(batch)

    async def _collect(self, batch: _OutBatch) -> None:
        deadline: float | None = None
        while not self._take(batch):
            if not batch.records and not batch.parts:
                self._notify("_progress")
                await self._changed.wait()
                continue
            now = anyio.current_time()
            if deadline is None:
                deadline = now + self.config.batch_timeout
            if self._flushing or now >= deadline:
                return
            with anyio.move_on_after(deadline - now):
                await self._changed.wait()

    def _take(self, batch: _OutBatch) -> bool:
        """Move queued records into ``batch``; True once it is full."""
        config = self.config
        try:
            while True:
                item = self._head
                if item is None:
                    item = self._spool.pop()
                    if item is None:
                        return False
                    self._head, self._head_pos = item, 0
                    if item.lost:
                        self.stats.spool_lost_records += item.lost
                records, pos = item.records, self._head_pos
                count = len(records) - pos
                per = item.size / len(records) if records else 0.0
                take = min(count, config.batch_max_records - len(batch.records))
                if per:
                    fit = int((config.batch_max_bytes - batch.size) // per)
                    take = min(take, max(fit, 0 if batch.records else 1))
                if take < count:
                    if take > 0:
                        batch.records.extend(records[pos : pos + take])
                        batch.size += take * per
                        self._head_pos = pos + take
                    return True
                batch.records.extend(records if pos == 0 else records[pos:])
                batch.size += count * per
                batch.parts.append(item)
                self._head = None
                if (
                    len(batch.records) >= config.batch_max_records
                    or batch.size >= config.batch_max_bytes
                ):
                    return True
        finally:
            self._sync()
            self._notify("_space")

    async def _send(self, batch: _OutBatch) -> None:
        if not batch.records:
            return
        stats = self.stats
        attempt = 0
        while True:
            try:
                await self.output.send(batch.records)
            except RetryableError as err:
                attempt += 1
                if isinstance(err, RetryLater) and err.records is not None:
                    done = len(batch.records) - len(err.records)
                    stats.rejected_records += err.rejected
                    stats.records_out += max(0, done - err.rejected)
                    batch.records = err.records
                if not self._retry(err, attempt, len(batch.records)):
                    stats.retries_exhausted_records += len(batch.records)
                    break
                await anyio.sleep(self._delay(err, attempt))
            except PermanentError as err:
                self._rejected(err, len(batch.records))
                break
            except Exception as err:  # a driver bug must not stop the pipeline
                attempt += 1
                self.log.error("output_send_crashed", error=repr(err), exc_info=err)
                if not self._retry(err, attempt, len(batch.records)):
                    stats.retries_exhausted_records += len(batch.records)
                    break
                await anyio.sleep(self._delay(err, attempt))
            else:
                stats.records_out += len(batch.records)
                if self._failures:
                    self.log.info("output_recovered", attempts=self._failures + 1)
                    self._failures = 0
                break
        stats.batches_out += 1
        sent = getattr(self.output, "bytes_sent", None)
        stats.bytes_out = sent if isinstance(sent, int) else stats.bytes_out + int(batch.size)

    def _count(self, err: BaseException) -> str:
        kind = error_kind(err)
        self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1
        self.stats.last_error = f"{kind}: {err}"
        return kind

    def _retry(self, err: BaseException, attempt: int, records: int) -> bool:
        """Count and log a failed attempt; False when ``max_retries`` is used up."""
        kind = self._count(err)
        limit = self.config.max_retries
        if limit is not None and attempt > limit:
            self.log.error(
                "output_batch_dropped", kind=kind, error=str(err), attempts=attempt, records=records
            )
            self._failures = 0
            return False
        self.stats.retries += 1
        self._failures += 1
        if attempt & (attempt - 1) == 0:  # 1, 2, 4, 8, ...: a long outage logs rarely
            self.log.warning(
                "output_send_failed", kind=kind, error=str(err), attempt=attempt, records=records
            )
        return True

    def _delay(self, err: BaseException, attempt: int) -> float:
        retry_after = getattr(err, "retry_after", None)
        if not isinstance(retry_after, int | float):
            retry_after = None
        config = self.config
        return retry_delay(retry_after, attempt, config.retry_initial, config.retry_max, self._rng)

    def _rejected(self, err: PermanentError, records: int) -> None:
        count = err.count if isinstance(err, Rejected) and err.count is not None else records
        count = min(count, records)
        self.stats.rejected_records += count
        self.stats.records_out += records - count
        kind = self._count(err)
        self._failures = 0
        if kind not in self._rejected_kinds:
            self._rejected_kinds.add(kind)
            self.log.warning("output_rejected", kind=kind, error=str(err), records=count)

    def _complete(self, batch: _OutBatch) -> None:
        marks: dict[str, int] = {}
        for item in batch.parts:
            for key, offset in item.marks.items():
                if offset > marks.get(key, -1):
                    marks[key] = offset
        try:
            self._on_delivered(marks)
        except Exception as err:
            self.log.error("on_delivered_failed", error=repr(err), exc_info=err)
        for item in batch.parts:
            origin = item.origin
            if origin is not None and origin.ack is not None:
                try:
                    origin.ack(origin)
                except Exception as err:
                    self.log.error("batch_ack_failed", error=repr(err), exc_info=err)
        self._sync()
        self._notify("_progress")

    # Bookkeeping.

    def _item(self, batch: Batch) -> SpoolItem:
        size = batch.size if batch.size > 0 else estimate_size(batch.records)
        return SpoolItem(batch.records, batch.marks, size, batch if batch.ack else None)

    def _offer(self, item: SpoolItem, *, disk: bool = True) -> bool:
        if not self._spool.offer(item, disk=disk):
            self._sync()
            return False
        self.stats.records_in += len(item.records)
        self._sync()
        self._notify("_changed")
        return True

    def _sync(self) -> None:
        stats, spool = self.stats, self._spool
        records, size = spool.records, spool.bytes
        if self._head is not None:
            left = len(self._head.records) - self._head_pos
            records += left
            if self._head.records:
                size += int(self._head.size * left / len(self._head.records))
        if self._current is not None:
            records += len(self._current.records)
            size += int(self._current.size)
        stats.buffered_records, stats.buffered_bytes = records, size
        stats.spooled_bytes, stats.spool_errors = spool.disk_bytes, spool.errors

    def _notify(self, name: str) -> None:
        event: anyio.Event = getattr(self, name)
        event.set()
        setattr(self, name, anyio.Event())
