"""Chunks in, batches out: multiline joining, records, processors, fan-out, checkpoint acks.

Every chunk of every source goes through :meth:`Pipeline.feed` (one task at a time; sources
await it, so a slow output slows reading, never memory). Records are plain dicts built in one
comprehension per chunk. A file chunk's checkpoint mark is its end offset, held back by the
bytes of a multiline group still open; :class:`Acks` commits a mark once every output has
delivered it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from ._checkpoint import CheckpointStore
from ._delivery import Delivery
from ._model import Batch, Chunk, Processor, Record
from ._multiline import Joiner, MultilineConfig
from ._processors import run_chain_batch

__all__ = ["WRITE_INTERVAL", "Acks", "Pipeline", "PipelineStats"]

#: The checkpoint file is written (without fsync) at most this often after deliveries; 0:
#: after every delivered batch, so a ``kill -9`` repeats only the batches in flight.
WRITE_INTERVAL = 0.0


@dataclass
class PipelineStats:
    """Counters for ``/metrics`` (read at scrape time, never touched per line elsewhere)."""

    lines_in: dict[str, int] = field(default_factory=dict)  # per source
    bytes_in: dict[str, int] = field(default_factory=dict)
    records: int = 0
    truncated: dict[str, int] = field(default_factory=dict)
    invalid_utf8: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # per reason

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count


class Acks:
    """Commits a file's checkpoint once every output delivered the lines up to a mark."""

    def __init__(self, outputs: int, store: CheckpointStore | None) -> None:
        self._delivered: list[dict[str, int]] = [{} for _ in range(outputs)]
        self._store = store
        self._written = float("-inf")

    def callback(self, index: int) -> Callable[[dict[str, int]], None]:
        """The ``on_delivered`` of output ``index``."""
        return lambda marks: self.delivered(index, marks)

    def delivered(self, index: int, marks: Mapping[str, int]) -> None:
        """Output ``index`` delivered everything up to ``marks``; commit what all have, and
        write the checkpoints (without fsync, at most every ``WRITE_INTERVAL``: a ``kill -9``
        then repeats at most the batches in flight; the housekeeping writes any skipped write
        within 250 ms and fsyncs every ``checkpoint_interval``)."""
        mine = self._delivered[index]
        store = self._store
        committed = False
        for key, offset in marks.items():
            if offset > mine.get(key, -1):
                mine[key] = offset
            if store is not None:
                low = min(d.get(key, -1) for d in self._delivered)
                if low >= 0:
                    store.commit(key, low)
                    committed = True
        if committed and store is not None:
            now = time.monotonic()
            if now - self._written >= WRITE_INTERVAL:
                self._written = now
                store.flush(sync=False)

    def forget(self, key: str) -> None:
        for delivered in self._delivered:
            delivered.pop(key, None)


class Pipeline:
    """Turns chunks into records, runs the processors and hands batches to every output."""

    def __init__(
        self,
        chain: Sequence[Processor],
        deliveries: Sequence[Delivery],
        *,
        multiline: Mapping[str, MultilineConfig | None],
        stats: PipelineStats,
        log: Any,
        batch_records: int = 1000,
    ) -> None:
        self.chain = list(chain)
        self.batch_records = max(batch_records, 1)
        self.deliveries = list(deliveries)
        self.stats = stats
        self.log = log
        self._multiline = dict(multiline)
        self._joiners: dict[str, Joiner] = {}
        self._held: dict[str, Chunk] = {}  # source → its last chunk while a group is open
        self._lock = anyio.Lock()  # one chunk at a time: batches stay in order per source

    async def swap(
        self, chain: Sequence[Processor], deliveries: Sequence[Delivery], batch_records: int
    ) -> None:
        """Switch to a new processor chain and outputs between two chunks (a reload)."""
        async with self._lock:
            self.chain = list(chain)
            self.deliveries = list(deliveries)
            self.batch_records = max(batch_records, 1)

    def multiline_for(self, source: str, config: MultilineConfig | None) -> None:
        """Join lines of ``source`` with ``config`` (``None``: no joining)."""
        self._multiline[source] = config

    async def feed(self, chunk: Chunk) -> None:
        """Process one chunk and hand the records to every output (waits on backpressure)."""
        async with self._lock:
            await self._feed(chunk)

    async def _feed(self, chunk: Chunk) -> None:
        lines = chunk.lines
        if not lines:
            if chunk.key is not None and chunk.end:
                await self._send([], chunk.key, chunk.end)
            return
        stats = self.stats
        source = chunk.source
        stats.lines_in[source] = stats.lines_in.get(source, 0) + len(lines)
        stats.bytes_in[source] = stats.bytes_in.get(source, 0) + sum(map(len, lines)) + len(lines)
        config = self._multiline.get(source)
        records = self._joined(chunk, config) if config is not None else self._records(chunk)
        mark = chunk.end
        if config is not None and chunk.key is not None:
            pending = self._joiners[source].pending_lines()
            mark -= sum(map(len, pending)) + len(pending)
        await self._process(records, chunk.key, mark)

    async def flush_multiline(self, now: float | None = None, *, force: bool = False) -> None:
        """Emit multiline groups whose flush timeout passed (or all, with ``force``)."""
        now = time.time() if now is None else now
        async with self._lock:
            await self._flush_multiline(now, force)

    async def _flush_multiline(self, now: float, force: bool) -> None:
        for source, joiner in list(self._joiners.items()):
            groups = joiner.flush(now, force=force)
            if not groups:
                continue
            last = self._held.get(source)
            if last is None:
                continue
            records = self._from_groups(last, groups, now)
            mark = last.end if last.key is not None else 0
            if last.key is not None:
                pending = joiner.pending_lines()
                mark -= sum(map(len, pending)) + len(pending)
            await self._process(records, last.key, mark)

    async def _process(self, records: list[Record], key: str | None, mark: int) -> None:
        """Processors, then batches of at most ``batch_records``; a file batch's mark is where
        the next batch's first line starts (taken before the processors can drop or change
        records), so a checkpoint never waits for a whole large read to be delivered."""
        size = self.batch_records
        for start in range(0, max(len(records), 1), size):
            part = records[start : start + size]
            part_mark = mark
            if key is not None and start + size < len(records):
                part_mark = records[start + size]["offset"]
            if self.chain and part:
                part, dropped = run_chain_batch(self.chain, part)
                for reason, count in dropped.items():
                    self.stats.drop(reason, count)
            self.stats.records += len(part)
            await self._send(part, key, part_mark)

    async def _send(self, records: list[Record], key: str | None, mark: int) -> None:
        marks = {key: mark} if key is not None and mark > 0 else {}
        if not records and not marks:
            return
        for delivery in self.deliveries:
            await delivery.put(Batch(records, marks))

    def _records(self, chunk: Chunk) -> list[Record]:
        """One dict per line; the fast path decodes the whole chunk strictly in one pass."""
        t = chunk.time or time.time()
        lines = chunk.lines
        try:
            messages = [line.decode() for line in lines]
        except UnicodeDecodeError:
            messages = self._lossy(lines)
        if chunk.key is None:
            stream = chunk.source
            records = [{"message": m, "time": t, "stream": stream} for m in messages]
        else:
            path = chunk.source
            records = []
            offset = chunk.start
            cut = chunk.cut
            for i, m in enumerate(messages):
                records.append({"message": m, "time": t, "file": path, "offset": offset})
                offset += (cut[i] if cut and i in cut else len(lines[i])) + 1
        if chunk.cut:
            for i in chunk.cut:
                records[i]["truncated"] = True
            source = chunk.source
            self.stats.truncated[source] = self.stats.truncated.get(source, 0) + len(chunk.cut)
        return records

    def _lossy(self, lines: list[bytes]) -> list[str]:
        messages = []
        for line in lines:
            try:
                messages.append(line.decode())
            except UnicodeDecodeError:
                messages.append(line.decode("utf-8", "replace"))
                self.stats.invalid_utf8 += 1
        return messages

    def _joined(self, chunk: Chunk, config: MultilineConfig) -> list[Record]:
        joiner = self._joiners.get(chunk.source)
        if joiner is None:
            joiner = self._joiners[chunk.source] = Joiner(config)
        now = chunk.time or time.time()
        groups = joiner.feed(chunk.lines, now)
        self._held[chunk.source] = chunk
        return self._from_groups(chunk, groups, now)

    def _from_groups(
        self, chunk: Chunk, groups: list[tuple[bytes, int]], now: float
    ) -> list[Record]:
        """Records of joined groups; a file group's offset is where its first line starts."""
        if not groups:
            return []
        data = [g for g, _ in groups]
        piece = Chunk(chunk.source, chunk.key, data, time=now)
        records = self._records(piece)
        if chunk.key is not None:
            # Offsets: the groups end where the held lines begin; walk back from there.
            pending = self._joiners[chunk.source].pending_lines()
            end = chunk.end - (sum(map(len, pending)) + len(pending))
            for record, raw in zip(reversed(records), reversed(data), strict=True):
                end -= len(raw) + 1
                record["offset"] = end
        return records
