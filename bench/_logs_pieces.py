"""Where the logs pipeline's time goes: CPU per line of each stage, in-process, for
``bench/logs.py --pieces``.

Each stage runs alone over the benchmark's inputs (plain and JSON lines), in this process
pinned to core 0, and is timed with ``time.process_time`` (best of three):

- **tail**: ``FileTailer.poll`` from the head to the end (reads and splits into lines);
- **records**: ``Pipeline.feed`` of those chunks into an output that keeps the batches: records
  with message, time, file and offset, in batches of 1000;
- **processors**: the same with ``parse = "json"`` and ``enrich``, minus records;
- **encode**: the file output's JSON lines (``encode_lines``) per batch;
- **write**: ``os.write`` of those bytes to a file (the page cache);
- **spool round trip**: every batch through a disk-only ``Spool`` (what a batch costs once the
  memory buffer is full and it goes to disk and back);
- **checkpoint write**: ``CheckpointStore.flush(sync=False)`` once per batch (the plugin writes
  the checkpoints after every delivered batch).

The first five are the work every line needs; the real command adds the event loop, the
delivery, threads and start-up. Compare the sum with "lines/CPU-s" of the end-to-end tables.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import anyio
import msgspec
from sidecar_plugins.logs._checkpoint import CheckpointStore
from sidecar_plugins.logs._delivery import Delivery, estimate_size
from sidecar_plugins.logs._model import Batch, Chunk, Record
from sidecar_plugins.logs._pipeline import Pipeline, PipelineStats
from sidecar_plugins.logs._processors import ProcessorConfig, build_chain
from sidecar_plugins.logs._spool import Spool, SpoolItem
from sidecar_plugins.logs._tail import FileTailer, TailConfig
from sidecar_plugins.logs.outputs._base import encode_lines

from bench._common import print_table

__all__ = ["report_pieces"]

_ROUNDS = 3
_PROCESSORS: list[dict[str, Any]] = [{"parse": "json"}, {"enrich": {"fields": {"env": "bench"}}}]


class _NullLog:
    """A structlog-like logger that drops everything."""

    def bind(self, **_: Any) -> _NullLog:
        return self

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


class _Sink:
    """Stands in for an output's delivery: takes the batches the pipeline hands it, and keeps
    them only if asked (records that stay alive make the garbage collector slower)."""

    def __init__(self, *, keep: bool) -> None:
        self.keep = keep
        self.batches: list[list[Record]] = []

    async def put(self, batch: Batch) -> None:
        if self.keep:
            self.batches.append(batch.records)


def _best(run: Callable[[], object]) -> float:
    """The least CPU seconds of a few runs of ``run``."""
    best = float("inf")
    for _ in range(_ROUNDS):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def _chunks(path: Path, state: str) -> list[Chunk]:
    store = CheckpointStore(tempfile.mkdtemp(dir=state), log=_NullLog())
    store.load()
    tailer = FileTailer(TailConfig(paths=[str(path)], start_at="head"), store, log=_NullLog())
    tailer.scan()
    chunks: list[Chunk] = []
    while polled := tailer.poll():
        chunks += polled
    tailer.close()
    return chunks


def _feed(
    chunks: list[Chunk], processors: list[dict[str, Any]], *, keep: bool = False
) -> list[list[Record]]:
    chain = build_chain([msgspec.convert(p, ProcessorConfig) for p in processors])
    sink = _Sink(keep=keep)

    async def main() -> None:
        deliveries = cast("list[Delivery]", [sink])
        stats = PipelineStats()
        pipeline = Pipeline(chain, deliveries, multiline={}, stats=stats, log=_NullLog())
        for chunk in chunks:
            await pipeline.feed(chunk)

    anyio.run(main)
    return sink.batches


def _spool_round_trip(batches: list[list[Record]], state: str) -> None:
    spool = Spool(
        tempfile.mkdtemp(dir=state), memory_max_bytes=0, disk_max_bytes=1 << 40, log=_NullLog()
    )
    for records in batches:
        spool.offer(SpoolItem(records, {}, estimate_size(records)))
    while spool.pop() is not None:
        pass


def _checkpoint_writes(count: int, state: str) -> None:
    store = CheckpointStore(tempfile.mkdtemp(dir=state), log=_NullLog())
    store.load()
    store.track("k", path="/var/log/app.log", dev=1, ino=2, fingerprint="f", offset=0)
    for offset in range(1, count + 1):
        store.commit("k", offset)
        store.flush(sync=False)


def measure(path: Path, kind: str, state: str) -> dict[str, float]:
    """µs of CPU per line for each stage, on one input."""
    lines = sum(1 for _ in path.open("rb"))
    per_line = 1e6 / lines
    out: dict[str, float] = {"tail": _best(lambda: _chunks(path, state)) * per_line}
    chunks = _chunks(path, state)
    records = _best(lambda: _feed(chunks, []))
    out["records"] = records * per_line
    processors: list[dict[str, Any]] = _PROCESSORS if kind == "json" else []
    if processors:
        out["processors"] = (_best(lambda: _feed(chunks, processors)) - records) * per_line
    batches = _feed(chunks, processors, keep=True)
    out["encode"] = _best(lambda: [encode_lines(b) for b in batches]) * per_line
    encoded = [encode_lines(b) for b in batches]
    fd = os.open(os.path.join(state, f"out-{kind}"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        out["write"] = _best(lambda: [os.write(fd, data) for data in encoded]) * per_line
    finally:
        os.close(fd)
    out["spool"] = _best(lambda: _spool_round_trip(batches, state)) * per_line
    out["checkpoint"] = _best(lambda: _checkpoint_writes(len(batches), state)) * per_line
    return out


def report_pieces(inputs: dict[str, Path], work: Path) -> None:
    """Print the table of stages (µs of CPU per line) for the plain and the JSON input."""
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})  # the core sidecar-run gets in the end-to-end runs
    state = str(work / "pieces")
    os.makedirs(state, exist_ok=True)
    results = {kind: measure(path, kind, state) for kind, path in inputs.items()}
    work_stages = ("tail", "records", "processors", "encode", "write")
    labels = {
        "tail": "tail: read and split (FileTailer.poll)",
        "records": "records and batches (Pipeline.feed)",
        "processors": 'processors: parse = "json" + enrich',
        "encode": "encode JSON lines (file output)",
        "write": "write (os.write, page cache)",
        "spool": "spool round trip, if the buffer is full",
        "checkpoint": "checkpoint write per batch of 1000",
    }
    rows = []
    for stage, label in labels.items():
        if stage == "spool":
            sums = [sum(r.get(s, 0.0) for s in work_stages) for r in results.values()]
            rows.append(["sum of the work above", *(f"{s:.2f}" for s in sums)])
            rows.append(["= lines/s on one core", *(f"{1e6 / s:,.0f}" for s in sums)])
        cells = [f"{r[stage]:.2f}" if stage in r else "-" for r in results.values()]
        rows.append([label, *cells])
    print()
    print("-- where the time goes: CPU µs per line, in-process, best of 3 --")
    print_table(["stage", *(f"{k} input" for k in results)], rows)
