"""Delivery: batching by size and time, marks in order, retries, drops, rejections, the spool,
order across an outage, backpressure on an unwritable spool, and the shutdown flush."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from sidecar_plugins.logs._delivery import (
    RETRY_AFTER_CAP,
    Delivery,
    backoff_delay,
    estimate_size,
    retry_delay,
)
from sidecar_plugins.logs._model import Batch, Record
from sidecar_plugins.logs.outputs import (
    HttpConfig,
    OutputConfig,
    Rejected,
    RetryLater,
    StdoutConfig,
    make_output,
)

from sidecar_runtime import Duration
from tests.conftest import free_port
from tests.plugins.logs.helpers import RecordingLog as Events

pytestmark = pytest.mark.anyio


class Collector:
    """An in-memory output: keeps each batch; raises the queued failures first."""

    name = "collector"

    def __init__(self, *failures: BaseException, always: BaseException | None = None) -> None:
        self.batches: list[list[Record]] = []
        self.failures = list(failures)
        self.always = always
        self.calls = 0

    async def open(self) -> None:
        pass

    async def send(self, records: list[Record]) -> None:
        self.calls += 1
        if self.always is not None:
            raise self.always
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(list(records))

    async def close(self) -> None:
        pass

    @property
    def records(self) -> list[Record]:
        return [r for b in self.batches for r in b]


def recs(start: int, count: int) -> list[Record]:
    return [{"message": f"line {i}", "time": 1.0, "n": i} for i in range(start, start + count)]


def stdout_config(**keys: Any) -> StdoutConfig:
    """Delivery keys with fast retries; durations given as seconds."""
    fields: dict[str, Any] = {"retry_initial": 0.01, "retry_max": 0.02, "batch_timeout": 0.0}
    fields.update(keys)
    converted: dict[str, Any] = {
        k: Duration(v) if isinstance(v, float) else v for k, v in fields.items()
    }
    return StdoutConfig(**converted)


def delivery(
    output: Any, config: OutputConfig, tmp_path: Path, log: Events | None = None
) -> tuple[Delivery, list[dict[str, int]]]:
    marks: list[dict[str, int]] = []
    d = Delivery(
        output,
        config,
        spool_dir=str(tmp_path / "spool"),
        on_delivered=marks.append,
        log=log or Events(),
    )
    return d, marks


async def until(check: Callable[[], bool]) -> None:
    """Poll ``check`` for up to 5 s."""
    for _ in range(500):
        if check():
            return
        await anyio.sleep(0.01)
    raise AssertionError("condition not reached within 5 s")


@asynccontextmanager
async def running(d: Delivery) -> AsyncIterator[Delivery]:
    async with anyio.create_task_group() as tg:
        await tg.start(d.run)
        yield d
        tg.cancel_scope.cancel()


class Sink:
    """An HTTP server on a fixed 127.0.0.1 port taking JSON arrays; it can go down and come back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.records: list[Record] = []
        self.status = 200
        self.requests = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ingest"

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.status != 200:
            return web.Response(status=self.status, text="busy")
        self.records.extend(await request.json())
        return web.Response(status=200)

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/ingest", self.handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def down(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    target = Sink()
    try:
        yield target
    finally:
        await target.down()


def http_config(sink: Sink, **keys: Any) -> HttpConfig:
    fields: dict[str, Any] = {"retry_initial": 0.01, "retry_max": 0.05, "batch_timeout": 0.0}
    fields.update(keys)
    converted: dict[str, Any] = {
        k: Duration(v) if isinstance(v, float) else v for k, v in fields.items()
    }
    return HttpConfig(url=sink.url, **converted)


async def test_batches_by_record_count_and_only_the_last_part_carries_marks(
    tmp_path: Path,
) -> None:
    """7 records with batch_max_records = 3 go out as 3+3+1; the marks come with the last part."""
    out = Collector()
    d, marks = delivery(out, stdout_config(batch_max_records=3), tmp_path)
    await d.put(Batch(recs(0, 7), {"app.log": 70}))
    async with running(d):
        await until(lambda: len(marks) == 3)
    assert [len(b) for b in out.batches] == [3, 3, 1]
    assert out.records == recs(0, 7)
    assert marks == [{}, {}, {"app.log": 70}]
    assert (d.stats.records_in, d.stats.records_out, d.stats.batches_out) == (7, 7, 3)
    assert d.stats.buffered_records == 0


async def test_batches_by_bytes(tmp_path: Path) -> None:
    """batch_max_bytes bounds a batch by the records' sizes (at least one record per batch)."""
    out = Collector()
    d, _ = delivery(out, stdout_config(batch_max_bytes=250), tmp_path)
    await d.put(Batch(recs(0, 5), size=500))  # 100 bytes per record
    await d.put(Batch(recs(5, 1), size=1000))  # one record larger than a batch
    async with running(d):
        await until(lambda: len(out.records) == 6)
    assert [len(b) for b in out.batches] == [2, 2, 1, 1]


async def test_merges_marks_of_several_batches_in_one_send(tmp_path: Path) -> None:
    """Pipeline batches combined into one send report their merged marks (max per key)."""
    out = Collector()
    d, marks = delivery(out, stdout_config(), tmp_path)
    await d.put(Batch(recs(0, 2), {"a": 5}))
    await d.put(Batch(recs(2, 2), {"b": 7}))
    await d.put(Batch(recs(4, 1), {"a": 9}))
    async with running(d):
        await until(lambda: bool(marks))
    assert [len(b) for b in out.batches] == [5]
    assert marks == [{"a": 9, "b": 7}]


async def test_a_batch_of_marks_only_is_reported_without_a_send(tmp_path: Path) -> None:
    """Skipped lines (no records, a mark) advance the checkpoint without calling the output."""
    out = Collector()
    d, marks = delivery(out, stdout_config(), tmp_path)
    await d.put(Batch([], {"f": 10}))
    async with running(d):
        await until(lambda: bool(marks))
    assert marks == [{"f": 10}]
    assert out.calls == 0


async def test_waits_for_batch_timeout_or_a_full_batch(tmp_path: Path) -> None:
    """A partial batch waits for batch_timeout; filling it sends at once."""
    out = Collector()
    d, _ = delivery(out, stdout_config(batch_timeout=30.0, batch_max_records=5), tmp_path)
    async with running(d):
        await d.put(Batch(recs(0, 2)))
        await anyio.sleep(0.2)
        assert out.batches == []
        await d.put(Batch(recs(2, 3)))
        await until(lambda: len(out.batches) == 1)
    assert out.records == recs(0, 5)
    quick = Collector()
    d, _ = delivery(quick, stdout_config(batch_timeout=0.05, batch_max_records=5), tmp_path)
    async with running(d):
        await d.put(Batch(recs(0, 1)))
        await until(lambda: len(quick.batches) == 1)


async def test_flush_delivers_everything_queued(tmp_path: Path) -> None:
    """flush() sends partial batches at once, with or without the loop running."""
    out = Collector()
    d, marks = delivery(out, stdout_config(batch_timeout=30.0), tmp_path)
    async with running(d):
        for i in range(3):
            await d.put(Batch(recs(i * 2, 2), {"f": i}))
        with anyio.fail_after(5):
            assert await d.flush()
    assert out.records == recs(0, 6)
    assert marks[-1] == {"f": 2}
    idle = Collector(RetryLater("down", kind="connect"))
    d, marks = delivery(idle, stdout_config(batch_timeout=30.0), tmp_path)
    await d.put(Batch(recs(0, 4), {"f": 4}))
    with anyio.fail_after(5):
        assert await d.flush()
    assert idle.records == recs(0, 4)
    assert marks == [{"f": 4}]


async def test_retries_with_backoff_then_delivers_and_logs_recovery(tmp_path: Path) -> None:
    """Retryable failures are counted by kind and retried in order; recovery is logged."""
    out = Collector(RetryLater("HTTP 503", kind="http_503"), RetryLater("refused", kind="connect"))
    log = Events()
    d, marks = delivery(out, stdout_config(batch_max_records=2), tmp_path, log)
    await d.put(Batch(recs(0, 4), {"f": 4}))
    async with running(d):
        await until(lambda: len(marks) == 2)
    assert out.records == recs(0, 4)
    assert out.calls == 4
    assert d.stats.retries == 2
    assert d.stats.errors == {"http_503": 1, "connect": 1}
    assert d.stats.last_error == "connect: refused"
    assert log.names() == ["output_send_failed", "output_send_failed", "output_recovered"]


async def test_max_retries_exhausted_drops_counts_and_still_reports_marks(tmp_path: Path) -> None:
    """After max_retries the batch is dropped and counted; the checkpoint is not stalled."""
    out = Collector(always=RetryLater("HTTP 503", kind="http_503"))
    log = Events()
    d, marks = delivery(out, stdout_config(max_retries=2), tmp_path, log)
    await d.put(Batch(recs(0, 3), {"f": 30}))
    async with running(d):
        await until(lambda: bool(marks))
    assert out.calls == 3
    assert marks == [{"f": 30}]
    assert d.stats.retries_exhausted_records == 3
    assert d.stats.records_out == 0
    assert "output_batch_dropped" in log.names()


async def test_permanent_rejection_is_counted_not_retried_and_logged_once(tmp_path: Path) -> None:
    """4xx-like refusals: counted as rejected, sent once, one log event per kind."""
    out = Collector(always=Rejected("HTTP 400 from x: bad", kind="http_400"))
    log = Events()
    d, marks = delivery(out, stdout_config(batch_max_records=1), tmp_path, log)
    await d.put(Batch(recs(0, 2), {"f": 2}))
    async with running(d):
        await until(lambda: len(marks) == 2)
    assert out.calls == 2
    assert d.stats.rejected_records == 2
    assert d.stats.errors == {"http_400": 2}
    assert log.names() == ["output_rejected"]


async def test_partial_failure_resends_only_the_remaining_records(tmp_path: Path) -> None:
    """An output that accepted part of a batch (bulk items) gets only the rest again."""
    batch = recs(0, 4)
    out = Collector(RetryLater("2 items", kind="es_item_429", records=[batch[1]], rejected=1))
    d, marks = delivery(out, stdout_config(), tmp_path)
    await d.put(Batch(batch, {"f": 4}))
    async with running(d):
        await until(lambda: bool(marks))
    assert out.batches == [[batch[1]]]
    assert (d.stats.records_out, d.stats.rejected_records) == (3, 1)


async def test_an_output_bug_is_logged_and_retried_not_fatal(tmp_path: Path) -> None:
    """An unexpected exception from a driver is logged and retried; the loop keeps going."""
    out = Collector(ValueError("driver bug"))
    log = Events()
    d, marks = delivery(out, stdout_config(), tmp_path, log)
    await d.put(Batch(recs(0, 1), {"f": 1}))
    async with running(d):
        await until(lambda: bool(marks))
    assert out.records == recs(0, 1)
    assert d.stats.errors == {"internal": 1}
    assert log.names()[0] == "output_send_crashed"


async def test_order_is_kept_across_an_outage(tmp_path: Path, sink: Sink) -> None:
    """Server down (port closed) for a while, then up: everything arrives, in order."""
    config = http_config(sink, batch_max_records=10)
    out = make_output("sink", config, log=Events())
    d, marks = delivery(out, config, tmp_path)
    try:
        async with running(d):
            for i in range(50):
                await d.put(Batch(recs(i * 3, 3), {"f": i}))
            await until(lambda: d.stats.errors.get("connect", 0) >= 3)
            assert sink.records == []
            await sink.up()
            await until(lambda: len(sink.records) == 150)
            await until(lambda: bool(marks) and marks[-1] == {"f": 49})
    finally:
        await out.close()
    assert [r["n"] for r in sink.records] == list(range(150))
    assert d.stats.records_out == 150


async def test_spills_to_disk_when_memory_is_full_and_replays_in_order(
    tmp_path: Path, sink: Sink
) -> None:
    """With the output down and memory full, batches go to spool files; all arrive in order."""
    config = http_config(sink, buffer_max_bytes=1000, batch_max_records=7)
    out = make_output("sink", config, log=Events())
    d, _ = delivery(out, config, tmp_path)
    spool = tmp_path / "spool"
    try:
        async with running(d):
            for i in range(40):
                await d.put(Batch(recs(i * 5, 5), {"f": i}, size=500))
            assert list(spool.glob("*.spool"))
            assert d.stats.spooled_bytes > 0
            assert d.stats.buffered_records == 200
            await sink.up()
            await until(lambda: len(sink.records) == 200)
    finally:
        await out.close()
    assert [r["n"] for r in sink.records] == list(range(200))
    assert list(spool.glob("*.spool")) == []
    assert d.stats.spooled_bytes == 0


async def test_unwritable_spool_means_backpressure_and_no_loss(tmp_path: Path, sink: Sink) -> None:
    """A spool that cannot be written makes put() wait (counted, logged); nothing is lost."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = http_config(sink, buffer_max_bytes=1000, batch_max_records=2)
    log = Events()
    out = make_output("sink", config, log=log)
    d = Delivery(
        out, config, spool_dir=str(blocker / "spool"), on_delivered=lambda _: None, log=log
    )
    try:
        async with running(d):
            await d.put(Batch(recs(0, 2), size=200))
            await until(lambda: d.stats.errors.get("connect", 0) >= 1)  # in flight, retrying
            sent = 1
            while d.put_nowait(Batch(recs(sent * 2, 2), size=200)):
                sent += 1
            assert sent == 6  # 5 batches of 200 bytes fill the 1000-byte buffer
            assert d.stats.spool_errors >= 1
            with anyio.move_on_after(0.3) as scope:
                await d.put(Batch(recs(sent * 2, 2), size=200))
            assert scope.cancelled_caught  # blocked: memory full, spool unwritable
            await sink.up()
            with anyio.fail_after(5):
                await d.put(Batch(recs(sent * 2, 2), size=200))
            await until(lambda: len(sink.records) == (sent + 1) * 2)
    finally:
        await out.close()
    assert [r["n"] for r in sink.records] == list(range((sent + 1) * 2))
    assert "spool_failed" in log.names()
    assert "output_buffer_full" in log.names()


def test_backoff_is_capped_exponential_with_jitter() -> None:
    """Each delay lies in the upper half of initial * 2**(n-1), capped at retry_max."""
    rng = random.Random(7)  # noqa: S311
    for attempt in range(1, 12):
        base = min(30.0, 0.5 * 2 ** (attempt - 1))
        delays = {backoff_delay(attempt, 0.5, 30.0, rng) for _ in range(20)}
        assert all(base / 2 <= x <= base for x in delays)
        assert len(delays) > 1
    assert backoff_delay(10_000, 0.5, 30.0) <= 30.0


def test_retry_after_is_honoured_up_to_a_cap() -> None:
    """Retry-After wins over backoff, capped; zero or absent falls back to backoff."""
    assert retry_delay(120.0, 1, 0.5, 30.0) == 120.0
    assert retry_delay(10_000.0, 1, 0.5, 30.0) == RETRY_AFTER_CAP
    assert retry_delay(10_000.0, 1, 0.5, 600.0) == 600.0
    assert 0.25 <= retry_delay(0.0, 1, 0.5, 30.0) <= 0.5
    assert 0.25 <= retry_delay(None, 1, 0.5, 30.0) <= 0.5


def test_size_estimate_follows_message_lengths() -> None:
    """Batches without a size are estimated from (a sample of) their messages."""
    small = estimate_size([{"message": "x" * 10}] * 1000)
    large = estimate_size([{"message": "x" * 1000}] * 1000)
    assert small == 1000 * (10 + 96)
    assert large == 1000 * (1000 + 96)
    assert estimate_size([{"message": 12345}]) > 0
    assert estimate_size([]) == 0
