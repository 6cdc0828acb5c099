"""Zero lost, zero duplicated lines through rotation, truncation and restarts.

In the spirit of Vector's file-source model tests: a writer writes numbered lines
(``g<generation> s<sequence>``) while the test rotates (rename + create, with late writes to the
old file), copytruncates, truncates, deletes old files and restarts the tailer (gracefully, or as
a crash that loses the batch in flight). The harness plays the glue: a delivered batch is
recorded, committed and flushed; a crash throws the undelivered batch away. Every sequence
number must arrive exactly once, in order within its file generation.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sidecar_plugins.logs._checkpoint import CheckpointStore
from sidecar_plugins.logs._model import Chunk
from sidecar_plugins.logs._tail import FileTailer, TailConfig

LINE_RE = re.compile(rb"g(\d+) s(\d+) x*")
CONCURRENT_RE = re.compile(rb"g(\d+) s(-?\d+) (?:x*|late)")


class NullLog:
    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: None


class Glue:
    """What the plugin glue does with a tailer. Polled batches are in flight until an ack
    (delivered, committed, flushed); a crash loses what is in flight, which counts as never
    delivered, so it must be read again."""

    def __init__(self, directory: Path, config: TailConfig) -> None:
        self.state = directory / "state"
        self.config = config
        self.received: list[bytes] = []
        self.in_flight: list[Chunk] = []
        self.start()

    def start(self) -> None:
        self.store = CheckpointStore(str(self.state), log=NullLog())
        self.store.load()
        self.tailer = FileTailer(self.config, self.store, log=NullLog())

    def ack(self) -> None:
        for chunk in self.in_flight:
            assert not chunk.cut
            assert chunk.key is not None
            self.received.extend(chunk.lines)
            self.store.commit(chunk.key, chunk.end)
        self.in_flight = []
        self.store.flush()

    def poll(self) -> int:
        chunks = self.tailer.poll()
        self.in_flight.extend(chunks)
        return len(chunks)

    def catch_up(self) -> None:
        for _ in range(10_000):
            if not self.poll():
                self.ack()
                return
        raise AssertionError("never caught up")

    def crash(self) -> None:
        """Lose the batch in flight and restart from what was flushed."""
        self.in_flight = []
        self.tailer.close()
        self.start()

    def restart(self) -> None:
        """Graceful: ack, drain, ack, flush, restart."""
        self.ack()
        self.in_flight.extend(self.tailer.drain(max_bytes=1 << 30))
        self.ack()
        self.tailer.close()
        self.start()

    def finish(self) -> None:
        self.catch_up()
        self.in_flight.extend(self.tailer.drain(max_bytes=1 << 30))
        self.ack()
        self.tailer.close()


class Writer:
    """An app writing numbered lines to ``app.log`` with O_APPEND, rotated in several ways."""

    def __init__(self, logs: Path, seed: int = 0) -> None:
        self.logs = logs
        self.path = logs / "app.log"
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.old_fds: list[int] = []
        self.gen = 0
        self.seq = 0
        self.rotated: list[tuple[Path, int]] = []  # (path, generation), oldest first
        self.rotations = 0
        self.expected: dict[int, list[int]] = {0: []}
        self.partial: bytes = b""
        self.rng = random.Random(seed)  # noqa: S311 - line lengths, not secrets

    def _line(self) -> bytes:
        self.seq += 1
        self.expected[self.gen].append(self.seq)
        return b"g%d s%d %s\n" % (self.gen, self.seq, b"x" * self.rng.randrange(0, 120))

    def write(self, count: int) -> None:
        data = b"".join(self._line() for _ in range(count))
        if self.partial:
            data, self.partial = self.partial + data, b""
        os.write(self.fd, data)

    def write_partial(self) -> None:
        """Write the first part of the next line (the rest comes with the next write)."""
        if self.partial:
            return
        line = self._line()
        cut = self.rng.randrange(1, len(line) - 1)
        os.write(self.fd, line[:cut])
        self.partial = line[cut:]

    def finish_line(self) -> None:
        if self.partial:
            os.write(self.fd, self.partial)
            self.partial = b""

    def rename_rotate(self, late: int) -> None:
        """logrotate ``create``: rename, ``late`` lines still go to the old file, then reopen."""
        self.finish_line()
        self.rotations += 1
        target = self.logs / f"app.log.{self.rotations}"
        os.rename(self.path, target)
        self.rotated.append((target, self.gen))
        self.write(late)
        self.old_fds.append(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.gen += 1
        self.expected[self.gen] = []

    def truncate(self, copy: bool) -> None:
        """copytruncate (the copy is excluded by the config) or a plain truncation."""
        self.finish_line()
        if copy:
            self.rotations += 1
            shutil.copy(self.path, self.logs / f"app.log.{self.rotations}.copy")
        os.truncate(self.path, 0)
        self.gen += 1
        self.expected[self.gen] = []

    def delete_oldest(self, delivered: set[int]) -> None:
        """Delete the oldest rotated file once all its lines were delivered (like logrotate's
        ``rotate N``); deleting unread files would lose lines by construction."""
        if self.rotated and set(self.expected[self.rotated[0][1]]) <= delivered:
            path, _ = self.rotated.pop(0)
            os.unlink(path)

    def close(self) -> None:
        self.finish_line()
        for fd in [self.fd, *self.old_fds]:
            os.close(fd)


def config_for(logs: Path, **overrides: Any) -> TailConfig:
    values: dict[str, Any] = {
        "paths": [str(logs / "app.log*")],
        "exclude": ["*.copy"],
        "glob_interval": 0,
        "rotate_wait": 3600,
        "read_bytes": 4096,
    }
    values.update(overrides)
    return TailConfig(**values)


def check_exactly_once(received: list[bytes], expected: dict[int, list[int]]) -> None:
    """Every written sequence number once; within a generation, in writing order."""
    per_gen: dict[int, list[int]] = {}
    for line in received:
        match = LINE_RE.fullmatch(line)
        assert match is not None, f"mangled line {line[:80]!r}"
        per_gen.setdefault(int(match[1]), []).append(int(match[2]))
    seqs = [s for gen in per_gen.values() for s in gen]
    assert len(seqs) == len(set(seqs)), "duplicated lines"
    want = {s for gen in expected.values() for s in gen}
    assert set(seqs) == want, f"lost {sorted(want - set(seqs))[:10]}"
    for gen, got in per_gen.items():
        assert got == expected[gen], f"generation {gen} out of order"


def delivered_seqs(received: list[bytes]) -> set[int]:
    return {int(m[2]) for line in received if (m := LINE_RE.fullmatch(line))}


def run_ops(directory: Path, ops: list[tuple[str, int]], seed: int) -> None:
    logs = directory / "logs"
    logs.mkdir()
    writer = Writer(logs, seed)
    glue = Glue(directory, config_for(logs))
    glue.poll()  # the first glob round: app.log exists (empty), so ``tail`` starts at 0
    try:
        for op, arg in ops:
            if op == "write":
                writer.write(arg)
            elif op == "partial":
                writer.write_partial()
            elif op == "poll":
                glue.poll()
            elif op == "ack":
                glue.ack()
            elif op == "flush":
                glue.store.flush()
            elif op == "crash":
                glue.crash()
            elif op == "restart":
                glue.restart()
            elif op == "rotate":
                writer.rename_rotate(late=arg)
            elif op in ("copytruncate", "truncate"):
                writer.finish_line()
                glue.catch_up()
                writer.truncate(copy=op == "copytruncate")
            elif op == "delete":
                writer.delete_oldest(delivered_seqs(glue.received))
        writer.close()
        glue.finish()
    finally:
        glue.tailer.close()
    check_exactly_once(glue.received, writer.expected)


def test_scripted_rotations_and_restarts(tmp_path: Path) -> None:
    """One long script through every kind of event, lines written between every step."""
    ops = [
        ("write", 5),
        ("poll", 0),
        ("write", 3),
        ("partial", 0),
        ("poll", 0),
        ("write", 2),
        ("rotate", 2),
        ("write", 4),
        ("poll", 0),
        ("flush", 0),
        ("crash", 0),
        ("write", 3),
        ("rotate", 0),
        ("write", 2),
        ("restart", 0),
        ("write", 6),
        ("copytruncate", 0),
        ("write", 3),
        ("crash", 0),
        ("poll", 0),
        ("delete", 0),
        ("write", 2),
        ("truncate", 0),
        ("write", 1),
        ("rotate", 3),
        ("crash", 0),
        ("write", 5),
        ("delete", 0),
        ("poll", 0),
        ("restart", 0),
        ("write", 2),
    ]
    run_ops(tmp_path, ops, seed=1)


OPS = st.one_of(
    st.tuples(st.just("write"), st.integers(1, 30)),
    st.tuples(
        st.sampled_from(["poll", "poll", "ack", "flush", "crash", "restart", "partial", "delete"]),
        st.just(0),
    ),
    st.tuples(st.just("rotate"), st.integers(0, 3)),
    st.tuples(st.sampled_from(["copytruncate", "truncate"]), st.just(0)),
)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(ops=st.lists(OPS, min_size=1, max_size=30), seed=st.integers(0, 1000))
def test_random_interleavings_lose_and_duplicate_nothing(
    ops: list[tuple[str, int]], seed: int
) -> None:
    """Any interleaving of writes, rotations, truncations, polls and restarts: exactly once."""
    with tempfile.TemporaryDirectory() as directory:
        run_ops(Path(directory), ops, seed)


WRITER = """
import os, sys, time
logs, total, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
path = os.path.join(logs, "app.log")
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
gen = 0
for seq in range(1, total + 1):
    os.write(fd, b"g%d s%d %s\\n" % (gen, seq, b"x" * (seq % 97)))
    if seq % every == 0:
        os.rename(path, os.path.join(logs, "app.log.%d" % (gen + 1)))
        os.write(fd, b"g%d s-%d late\\n" % (gen, seq))
        os.close(fd)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        gen += 1
    if seq % 50 == 0:
        time.sleep(0.001)
os.close(fd)
"""


def test_concurrent_writer_with_rotations_and_crashes(tmp_path: Path) -> None:
    """A real writer process rotating by rename while the tailer polls and crash-restarts."""
    logs = tmp_path / "logs"
    logs.mkdir()
    total, every = 20_000, 1500
    glue = Glue(tmp_path, config_for(logs, rotate_wait=0.5))
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER), str(logs), str(total), str(every)]
    )
    try:
        deadline = time.monotonic() + 30
        rounds = 0
        while writer.poll() is None and time.monotonic() < deadline:
            rounds += 1
            if rounds % 40 == 0:
                glue.crash()
            else:
                glue.poll()
                if rounds % 3 == 0:
                    glue.ack()
                elif rounds % 5 == 0:
                    glue.store.flush()
            time.sleep(0.002)
        assert writer.wait(timeout=30) == 0
        glue.finish()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        glue.tailer.close()
    late: list[int] = []
    per_gen: dict[int, list[int]] = {}
    for line in glue.received:
        match = CONCURRENT_RE.fullmatch(line)
        assert match is not None, f"mangled line {line[:80]!r}"
        gen, seq = int(match[1]), int(match[2])
        per_gen.setdefault(gen, []).append(seq)
        if seq < 0:
            late.append(-seq)
    assert sorted(late) == list(range(every, total + 1, every))
    seqs = sorted(s for gen in per_gen.values() for s in gen if s > 0)
    assert seqs == list(range(1, total + 1))
    for got in per_gen.values():
        assert got[-1] < 0 or got == per_gen[max(per_gen)], "the late line ends its generation"
        assert [s for s in got if s > 0] == sorted(s for s in got if s > 0)
