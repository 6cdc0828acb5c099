"""Running and measuring the consumers of ``bench/logs.py``: sidecar-run, tail and the reference.

A consumer is timed from just before its spawn until its output holds every expected line (a
file tailer, then stopped with SIGTERM) or until it exits (a reader of the app's stdout). CPU
seconds are its own user+system time from ``/proc/PID/stat`` at that moment (for a process
that exited, read while it is a zombie, before it is reaped), so the app's CPU never counts.
Peak RSS is ``VmHWM`` from ``/proc/PID/status`` at that moment (for a process that exits by
itself, the last reading before it did, every 10 ms; a reading before ``exec`` would show this
script's pages). Not ``wait4``'s ``ru_maxrss``: Linux carries the forking parent's high-water
mark across ``exec`` into it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench._logs_data import Check, OutputCounter, check_output, plain_line

__all__ = ["STALL", "Result", "Spec", "run_follow", "run_pipe", "run_rotation"]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_POLL = 0.01
#: A run whose output has not grown for this long is over (the rest counts as lost).
STALL = 15.0
#: After the last expected line, how long duplicates still have to show up.
_SETTLE = 0.5
#: The rotation writer's lines per write call; a reader whose output has not grown for
#: ``_IDLE`` seconds has read all it will before a copytruncate.
_WRITE_BLOCK = 1000
_IDLE = 2.0
#: Lines the rotation writer still writes to a renamed file before it reopens the path.
_AFTER_RENAME = 1000


@dataclass(frozen=True)
class Spec:
    """How to start one consumer: its argv, environment, where its stdout goes (``None``:
    /dev/null; a path: that file, for ``tail``), the file it writes, and the input kind."""

    label: str
    argv: list[str]
    env: dict[str, str]
    out: Path
    kind: str  # plain or json
    stdout: Path | None = None


@dataclass(frozen=True)
class Result:
    """One run of one consumer."""

    label: str
    wall: float  # seconds from spawn to the last expected line (or to the stall)
    first: float  # seconds from spawn to the first output line
    cpu: float  # the consumer's own user+system seconds over ``wall``
    rss_mib: float  # peak RSS
    check: Check
    rotations: int = 0

    @property
    def rate(self) -> float:
        """Lines per second over the whole run, start-up included."""
        return self.check.expected / self.wall if self.wall > 0 else 0.0

    @property
    def steady(self) -> float:
        """Lines per second from the first output line on (start-up excluded)."""
        span = self.wall - self.first
        return self.check.expected / span if span > 0 else float("nan")


def _stat(pid: int) -> tuple[str, float]:
    """The process state letter and its own CPU seconds (user+system, all threads)."""
    with open(f"/proc/{pid}/stat", "rb") as file:
        text = file.read()
    fields = text[text.rfind(b")") + 2 :].split()
    return fields[0].decode(), (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _peak_rss(pid: int) -> float:
    """``VmHWM`` in MiB (0 once the process is a zombie: its memory is gone)."""
    with open(f"/proc/{pid}/status", "rb") as file:
        for line in file:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _reap(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Wait for ``proc`` without Popen (which would reap a zombie we still read); SIGKILL it
    after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return
        if time.monotonic() > deadline:
            os.kill(proc.pid, signal.SIGKILL)
            deadline = float("inf")
        time.sleep(_POLL)


def _spawn(spec: Spec, errlog: Path, stdin: int | None = None) -> subprocess.Popen[bytes]:
    """Start the consumer; its stderr is appended to ``errlog``."""
    with errlog.open("ab") as err:
        if spec.stdout is None:
            return subprocess.Popen(
                spec.argv,
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=spec.env,
            )
        with spec.stdout.open("wb") as out:
            return subprocess.Popen(
                spec.argv,
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=out,
                stderr=err,
                env=spec.env,
            )


class _Watch:
    """Polls an output file: when its first line came, when it reached a count, stalls."""

    def __init__(self, path: Path, t0: float) -> None:
        self.counter = OutputCounter(path)
        self.t0 = t0
        self.first = float("nan")
        self._last_change = t0
        self._lines = 0

    def poll(self) -> int:
        now = time.monotonic()
        lines = self.counter.poll()
        if lines != self._lines:
            self._lines, self._last_change = lines, now
            if self.first != self.first:
                self.first = now - self.t0
        return lines

    def stalled(self, after: float = STALL) -> bool:
        return time.monotonic() - self._last_change > after

    def wait_for(self, count: int, stall: float = STALL) -> float:
        """Poll until ``count`` lines (or no new line for ``stall`` seconds); return the
        seconds since ``t0``."""
        while self.poll() < count and not self.stalled(stall):
            time.sleep(_POLL)
        return time.monotonic() - self.t0

    def settle(self) -> None:
        """Let late (duplicate) lines arrive before the consumer is stopped."""
        end = time.monotonic() + _SETTLE
        while time.monotonic() < end:
            self.poll()
            time.sleep(_POLL)
        self.counter.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (harmless to a zombie; Popen's own methods would reap it), then reap."""
    os.kill(proc.pid, signal.SIGTERM)
    _reap(proc)


def run_follow(spec: Spec, expected: int, errlog: Path) -> Result:
    """A tailer of a pre-written file: timed until its output holds ``expected`` lines."""
    t0 = time.monotonic()
    proc = _spawn(spec, errlog)
    watch = _Watch(spec.out, t0)
    try:
        wall = watch.wait_for(expected)
        cpu, rss = _stat(proc.pid)[1], _peak_rss(proc.pid)
        watch.settle()
    finally:
        _stop(proc)
    return Result(
        spec.label, wall, watch.first, cpu, rss, check_output([spec.out], spec.kind, expected)
    )


def run_pipe(spec: Spec, expected: int, errlog: Path, app: list[str] | None) -> Result:
    """A reader of the app's stdout, timed until it exits. ``app`` is piped into the consumer;
    ``None`` when the consumer (sidecar-run) starts the app itself."""
    t0 = time.monotonic()
    feeder = None
    if app is None:
        proc = _spawn(spec, errlog)
    else:
        feeder = subprocess.Popen(
            app, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert feeder.stdout is not None
        with feeder.stdout:  # the consumer holds the read end; ours closes after the spawn
            proc = _spawn(spec, errlog, stdin=feeder.stdout.fileno())
    watch = _Watch(spec.out, t0)
    rss = 0.0
    try:
        while True:
            watch.poll()
            state, cpu = _stat(proc.pid)
            if state == "Z" or watch.stalled():
                break
            rss = _peak_rss(proc.pid) or rss  # the last reading: HWM only grows after exec
            time.sleep(_POLL)
        wall = time.monotonic() - t0
        watch.poll()
        watch.counter.close()
    finally:
        _stop(proc)
        if feeder is not None:
            _stop(feeder)
    return Result(
        spec.label, wall, watch.first, cpu, rss, check_output([spec.out], spec.kind, expected)
    )


def run_rotation(
    spec: Spec, expected: int, errlog: Path, log: Path, *, every: int, rate: int
) -> Result:
    """Write ``expected`` lines to ``log`` at ``rate`` lines/s while the consumer tails it, and
    rotate it every ``every`` lines, by rename-and-create and by copytruncate in turn.

    The first block is written before the consumer starts; the clock starts once it shows in
    the output (the consumer is up). After a rename the writer keeps writing 1000 lines to the
    renamed file before it reopens the path, like an app told to reopen by logrotate's
    ``postrotate``. copytruncate loses whatever the reader had not read at the truncation, for
    any reader, so before each copy the writer waits until the output caught up (or has not
    grown for 2 s), like an app quiet at rotation time: lost lines are the reader's faults.
    """
    file = log.open("a", encoding="ascii")
    file.write("".join(plain_line(i) for i in range(_WRITE_BLOCK)))
    file.flush()
    proc = _spawn(spec, errlog)
    watch = _Watch(spec.out, time.monotonic())
    rotations = 0
    try:
        watch.wait_for(_WRITE_BLOCK)
        watch.t0 = begin = time.monotonic()
        reopen_at: int | None = None
        for start in range(_WRITE_BLOCK, expected, _WRITE_BLOCK):
            ahead = begin + start / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            stop = min(start + _WRITE_BLOCK, expected)
            file.write("".join(plain_line(i) for i in range(start, stop)))
            if reopen_at is not None and stop >= reopen_at:  # the app reopens its log
                file.close()
                file = log.open("a", encoding="ascii")
                reopen_at = None
            if stop % every or stop == expected:
                continue
            file.flush()
            rotations += 1
            rotated = log.with_name(f"{log.name}.{rotations}")
            if rotations % 2:  # rename and create; the app writes on for a while
                os.rename(log, rotated)
                reopen_at = stop + _AFTER_RENAME
            else:  # copytruncate, once the reader caught up
                watch.wait_for(stop, stall=_IDLE)
                shutil.copyfile(log, rotated)
                os.truncate(log, 0)
        file.close()
        wall = watch.wait_for(expected, stall=_IDLE + 3)
        cpu, rss = _stat(proc.pid)[1], _peak_rss(proc.pid)
        watch.settle()
    finally:
        file.close()
        _stop(proc)
    check = check_output([spec.out], spec.kind, expected)
    return Result(spec.label, wall, float("nan"), cpu, rss, check, rotations)
