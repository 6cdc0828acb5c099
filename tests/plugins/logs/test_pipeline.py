"""The pipeline's bookkeeping: checkpoints wait for every output; batches carry exact marks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog
from sidecar_plugins.logs import _pipeline as pipeline_module
from sidecar_plugins.logs._checkpoint import CheckpointStore
from sidecar_plugins.logs._model import Batch, Chunk
from sidecar_plugins.logs._pipeline import Acks, Pipeline, PipelineStats
from sidecar_plugins.logs._tail import FileTailer, TailConfig

LOG = structlog.get_logger()


def tailed(tmp_path: Path, lines: int) -> tuple[CheckpointStore, Chunk]:
    """A real file read by a real tailer: its key is known to the store."""
    path = tmp_path / "app.log"
    path.write_text("".join(f"line {i}\n" for i in range(lines)))
    store = CheckpointStore(str(tmp_path / "state"), log=LOG)
    store.load()
    tailer = FileTailer(TailConfig(paths=[str(path)], start_at="head"), store, log=LOG)
    chunks = tailer.poll()
    tailer.close()
    assert len(chunks) == 1
    return store, chunks[0]


def test_a_checkpoint_advances_only_when_every_output_delivered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Output 0 alone is not enough; the commit is the lowest mark of all outputs, and it is
    written without waiting for the periodic flush (here with no throttle)."""
    monkeypatch.setattr(pipeline_module, "WRITE_INTERVAL", 0.0)
    store, chunk = tailed(tmp_path, 10)
    assert chunk.key is not None
    acks = Acks(2, store)
    acks.delivered(0, {chunk.key: chunk.end})
    assert store.get(chunk.key) == 0
    acks.delivered(1, {chunk.key: 20})
    assert store.get(chunk.key) == 20
    acks.delivered(1, {chunk.key: chunk.end})
    assert store.get(chunk.key) == chunk.end
    reloaded = CheckpointStore(str(tmp_path / "state"), log=LOG)
    reloaded.load()
    assert reloaded.get(chunk.key) == chunk.end  # written at once, without waiting a flush


class Recorder:
    """Stands in for a Delivery: keeps every batch it is given."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    async def put(self, batch: Batch) -> None:
        self.batches.append(batch)


@pytest.mark.anyio
async def test_batches_of_a_large_read_carry_the_offset_of_the_next_line(
    tmp_path: Path,
) -> None:
    """A 2,500-line read in batches of 1,000: marks 1,000 and 2,000 lines in, then the end,
    so a checkpoint never waits for a whole large read to be delivered."""
    _, chunk = tailed(tmp_path, 2500)
    recorder = Recorder()
    pipeline = Pipeline(
        [],
        [recorder],  # type: ignore[list-item]
        multiline={},
        stats=PipelineStats(),
        log=LOG,
        batch_records=1000,
    )
    await pipeline.feed(chunk)
    sizes = [len(b.records) for b in recorder.batches]
    assert sizes == [1000, 1000, 500]
    text = (tmp_path / "app.log").read_bytes()
    starts = [text.index(f"line {n}\n".encode()) for n in (1000, 2000)]
    marks = [b.marks[chunk.key] for b in recorder.batches]  # type: ignore[index]
    assert marks == [*starts, len(text)]
    first: Any = recorder.batches[1].records[0]
    assert first["offset"] == starts[0]
    assert first["message"] == "line 1000"


@pytest.mark.anyio
async def test_dropped_records_still_move_the_mark(tmp_path: Path) -> None:
    """A processor that drops everything: no records, but the checkpoint mark still moves."""
    _, chunk = tailed(tmp_path, 10)
    recorder = Recorder()

    def drop_all(record: dict[str, Any]) -> None:
        return None

    stats = PipelineStats()
    pipeline = Pipeline(
        [drop_all],
        [recorder],  # type: ignore[list-item]
        multiline={},
        stats=stats,
        log=LOG,
    )
    await pipeline.feed(chunk)
    assert [b.records for b in recorder.batches] == [[]]
    assert recorder.batches[0].marks == {chunk.key: chunk.end}
    assert sum(stats.dropped.values()) == 10
