"""The spool: memory up to a bound, then segment files, FIFO; a failing disk means backpressure."""

from __future__ import annotations

import os
from pathlib import Path

from sidecar_plugins.logs._model import Batch
from sidecar_plugins.logs._spool import Spool, SpoolItem

from tests.plugins.logs.helpers import RecordingLog as Events


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def item(n: int, size: int = 100, mark: int | None = None) -> SpoolItem:
    records = [{"message": f"m{n}", "time": 1.5, "n": n}]
    return SpoolItem(records, {"f": mark} if mark is not None else {}, size)


def drain(spool: Spool) -> list[SpoolItem]:
    out = []
    while (got := spool.pop()) is not None:
        out.append(got)
    return out


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.spool")) if directory.exists() else []


def test_memory_only_is_fifo_and_accounted(tmp_path: Path) -> None:
    """Below the memory bound nothing touches the disk; pop returns items in order."""
    spool = Spool(str(tmp_path / "s"), memory_max_bytes=1000, disk_max_bytes=10_000, log=Events())
    for n in range(5):
        assert spool.offer(item(n))
    assert (spool.records, spool.bytes, spool.memory_bytes, len(spool)) == (5, 500, 500, 5)
    assert [i.records[0]["n"] for i in drain(spool)] == [0, 1, 2, 3, 4]
    assert (spool.records, spool.bytes, spool.memory_bytes) == (0, 0, 0)
    assert not (tmp_path / "s").exists()


def test_spills_to_segments_in_order_and_deletes_them(tmp_path: Path) -> None:
    """Beyond memory, items go to segment files; they come back in order and the files go away."""
    directory = tmp_path / "spool"
    spool = Spool(
        str(directory),
        memory_max_bytes=300,
        disk_max_bytes=1_000_000,
        segment_max_bytes=200,
        log=Events(),
    )
    for n in range(20):
        assert spool.offer(item(n, mark=n * 10))
    assert spool.memory_bytes == 300
    assert len(segments(directory)) > 2
    assert spool.disk_bytes == sum(p.stat().st_size for p in directory.glob("*.spool"))
    first = [spool.pop() for _ in range(4)]
    assert spool.offer(item(20, mark=200))  # disk not empty: joins the disk tail, not memory
    rest = drain(spool)
    got = [i for i in [*first, *rest] if i is not None]
    assert [i.records[0]["n"] for i in got] == list(range(21))
    assert [i.marks for i in got] == [{"f": n * 10} for n in range(21)]
    assert got[10].records == [{"message": "m10", "time": 1.5, "n": 10}]
    assert segments(directory) == []
    assert (spool.disk_bytes, spool.records, spool.bytes) == (0, 0, 0)
    assert spool.offer(item(21))  # disk empty again: back to memory
    assert segments(directory) == []


def test_full_disk_refuses_until_drained(tmp_path: Path) -> None:
    """When memory and disk are full offer() says no (the caller waits), never drops."""
    spool = Spool(
        str(tmp_path / "s"),
        memory_max_bytes=100,
        disk_max_bytes=200,
        segment_max_bytes=1,  # one item per segment: each pop frees its bytes
        log=Events(),
    )
    accepted = 0
    while spool.offer(item(accepted)) and accepted < 100:
        accepted += 1
    assert 2 <= accepted < 10
    assert not spool.offer(item(99))
    assert spool.pop() is not None
    assert spool.pop() is not None
    assert spool.offer(item(accepted))


def test_no_disk_spool_means_memory_only(tmp_path: Path) -> None:
    """spool_max_bytes = 0: the memory bound alone applies."""
    spool = Spool(str(tmp_path / "s"), memory_max_bytes=200, disk_max_bytes=0, log=Events())
    assert spool.offer(item(0))
    assert spool.offer(item(1))
    assert not spool.offer(item(2))
    assert not (tmp_path / "s").exists()


def test_an_item_larger_than_memory_is_admitted_when_memory_is_empty(tmp_path: Path) -> None:
    """A single huge batch never deadlocks: an empty buffer takes it."""
    spool = Spool(str(tmp_path / "s"), memory_max_bytes=10, disk_max_bytes=0, log=Events())
    assert spool.offer(item(0, size=10_000))
    assert not spool.offer(item(1))


def test_unwritable_directory_is_backpressure_logged_once_then_recovers(tmp_path: Path) -> None:
    """ENOTDIR/EACCES/ENOSPC: offer() refuses, one event, counted; the disk is retried later."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    log, clock = Events(), Clock()
    spool = Spool(
        str(blocker / "spool"),
        memory_max_bytes=100,
        disk_max_bytes=10_000,
        retry_interval=5.0,
        log=log,
        clock=clock,
    )
    assert spool.offer(item(0))
    assert not spool.offer(item(1))
    assert spool.errors == 1
    assert spool.retry_at == 1005.0
    assert not spool.offer(item(1))  # within the retry interval the disk is not touched
    assert spool.errors == 1
    clock.now += 6
    assert not spool.offer(item(1))
    assert spool.errors == 2
    assert log.names() == ["spool_failed"]
    assert log.events[0][2]["error"].startswith("[Errno 20]")
    blocker.unlink()
    clock.now += 6
    assert spool.offer(item(1))
    assert log.names() == ["spool_failed", "spool_write_recovered"]
    assert [i.records[0]["n"] for i in drain(spool)] == [0, 1]


def test_unreadable_segment_keeps_marks_and_counts_lost_records(tmp_path: Path) -> None:
    """A damaged segment loses its records (counted) but its marks and acks still come back."""
    directory = tmp_path / "s"
    acked: list[Batch] = []
    records = [{"message": "x"}, {"message": "y"}]
    origin = Batch(records, {"f": 30}, ack=acked.append)
    spool = Spool(str(directory), memory_max_bytes=0, disk_max_bytes=10_000, log=Events())
    assert spool.offer(item(0, mark=10))  # memory (empty buffers take one item)
    assert spool.offer(item(1, mark=20))
    assert spool.offer(SpoolItem(records, {"f": 30}, 100, origin))
    (segment,) = directory.glob("*.spool")
    segment.write_bytes(b"\x00\x00\x00\x05garbage")
    got = drain(spool)
    assert [i.marks for i in got] == [{"f": 10}, {"f": 20}, {"f": 30}]
    assert [i.lost for i in got] == [0, 1, 2]
    stand_in = got[2].origin
    assert stand_in is not None
    assert stand_in.ack == origin.ack
    assert stand_in.marks == {"f": 30}
    assert stand_in.records == []  # a spilled batch's records are not kept in memory
    assert spool.lost_records == 3
    assert spool.records == 0


def test_clear_removes_only_leftover_segments(tmp_path: Path) -> None:
    """At start the spool deletes its own files from a previous run and nothing else."""
    directory = tmp_path / "s"
    directory.mkdir()
    (directory / "000000000001.spool").write_bytes(b"old")
    (directory / "000000000002.spool").write_bytes(b"old")
    (directory / "keep.txt").write_text("mine")
    spool = Spool(str(directory), memory_max_bytes=10, disk_max_bytes=10, log=Events())
    assert spool.clear() == 2
    assert os.listdir(directory) == ["keep.txt"]
    assert (
        Spool(str(tmp_path / "missing"), memory_max_bytes=1, disk_max_bytes=1, log=None).clear()
        == 0
    )
