"""End to end: the restart policies, exit_codes, max_restarts (FATAL), exponential backoff, a stop
during BACKOFF, and the state-change events in the log file."""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SIDECAR, child_env, run_sidecar

OFF = ["--admin", "off"]
FAST = ["--restart-delay", "10ms"]


def counting_app(counter: Path, script: str) -> list[str]:
    """A shell app that appends a line to ``counter`` on every run (``$n`` = this run's
    number), then runs ``script``."""
    prelude = f'echo run >> "{counter}"; n=$(wc -l < "{counter}"); n=$((n)); '
    return ["sh", "-c", prelude + script]


def runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def transitions(log: Path) -> list[tuple[str, str]]:
    return [(e["old"], e["new"]) for e in events(log) if e["event"] == "app_state_changed"]


def test_on_failure_restarts_until_success(tmp_path: Path) -> None:
    """on-failure: an app failing twice then exiting 0 runs three times; sidecar-run exits 0."""
    counter, log = tmp_path / "runs", tmp_path / "log.jsonl"
    app = counting_app(counter, '[ "$n" -ge 3 ] && exit 0; exit 1')
    result = run_sidecar(
        [
            *OFF,
            *FAST,
            "--restart",
            "on-failure",
            "--log-level",
            "info",
            "--log-file",
            str(log),
            "--",
            *app,
        ]
    )
    assert result.returncode == 0, result.stderr
    assert runs(counter) == 3
    assert transitions(log) == [
        ("STOPPED", "STARTING"),
        ("STARTING", "BACKOFF"),
        ("BACKOFF", "STARTING"),
        ("STARTING", "BACKOFF"),
        ("BACKOFF", "STARTING"),
        ("STARTING", "EXITED"),
    ]
    exits = [e for e in events(log) if e["event"] == "app_exited"]
    assert [e["code"] for e in exits] == [1, 1, 0]
    assert len({e["pid"] for e in exits}) == 3
    for event in events(log):
        assert {"event", "level", "timestamp"} <= event.keys()


def test_on_failure_restarts_after_death_by_signal(tmp_path: Path) -> None:
    """on-failure: an app killed by a signal is a failure and is restarted."""
    counter = tmp_path / "runs"
    log = tmp_path / "log.jsonl"
    app = counting_app(counter, '[ "$n" -ge 2 ] && exit 0; kill -KILL $$')
    flags = [*OFF, *FAST, "--restart", "on-failure", "--log-level", "info", "--log-file", str(log)]
    result = run_sidecar([*flags, "--", *app])
    assert result.returncode == 0
    assert runs(counter) == 2
    exits = [e for e in events(log) if e["event"] == "app_exited"]
    assert exits[0]["signal"] == "KILL"
    assert "code" not in exits[0]
    assert exits[1]["code"] == 0
    assert all(isinstance(e["ran_for"], float | int) for e in exits)


@pytest.mark.parametrize("flags", [[], ["--restart", "never"]], ids=["default", "never"])
def test_never_does_not_restart(tmp_path: Path, flags: list[str]) -> None:
    """never (the default): a failing app runs once and its status is the exit status."""
    counter = tmp_path / "runs"
    result = run_sidecar([*OFF, *FAST, *flags, "--", *counting_app(counter, "exit 1")])
    assert result.returncode == 1
    assert runs(counter) == 1


def test_exit_codes_from_env_count_as_success(tmp_path: Path) -> None:
    """SIDECAR_RESTART__EXIT_CODES=[0,3]: exit code 3 is a success, on-failure does not restart."""
    counter = tmp_path / "runs"
    result = run_sidecar(
        [*OFF, *FAST, "--restart", "on-failure", "--", *counting_app(counter, "exit 3")],
        env=child_env(SIDECAR_RESTART__EXIT_CODES="[0,3]"),
    )
    assert result.returncode == 3
    assert runs(counter) == 1


def test_exit_codes_make_zero_a_failure(tmp_path: Path) -> None:
    """With exit_codes [3] an exit 0 is a failure: on-failure restarts it."""
    counter = tmp_path / "runs"
    result = run_sidecar(
        [
            *OFF,
            *FAST,
            "--restart",
            "on-failure",
            "--",
            *counting_app(counter, '[ "$n" -ge 2 ] && exit 3; exit 0'),
        ],
        env=child_env(SIDECAR_RESTART__EXIT_CODES="[3]"),
    )
    assert result.returncode == 3
    assert runs(counter) == 2


def test_max_restarts_gives_up_with_the_last_status(tmp_path: Path) -> None:
    """--max-restarts 2 with an always failing app: 3 runs, then FATAL; exit with its status."""
    counter = tmp_path / "runs"
    result = run_sidecar(
        [
            *OFF,
            *FAST,
            "--restart",
            "on-failure",
            "--max-restarts",
            "2",
            "--",
            *counting_app(counter, "exit 4"),
        ]
    )
    assert result.returncode == 4
    assert runs(counter) == 3
    assert result.stdout == b""
    warnings = [json.loads(line) for line in result.stderr.splitlines()]
    fatal = [w for w in warnings if w["event"] == "app_state_changed" and w["new"] == "FATAL"]
    assert len(fatal) == 1
    assert fatal[0]["level"] == "warning"


def test_max_restarts_zero_never_restarts(tmp_path: Path) -> None:
    """--max-restarts 0: the first failure is already FATAL."""
    counter = tmp_path / "runs"
    result = run_sidecar(
        [
            *OFF,
            *FAST,
            "--restart",
            "always",
            "--max-restarts",
            "0",
            "--",
            *counting_app(counter, "exit 0"),
        ]
    )
    assert result.returncode == 0
    assert runs(counter) == 1
    assert b'"FATAL"' in result.stderr


class _Lines:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.data = b""

    def expect(self, needle: bytes, timeout: float = 10) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while needle not in self.data:
            ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                pytest.fail(f"timed out waiting for {needle!r}: {self.data!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                pytest.fail(f"EOF waiting for {needle!r}: {self.data!r}")
            self.data += chunk


def _cleanup(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)


def test_always_restarts_even_after_success(tmp_path: Path) -> None:
    """always: an app exiting 0 is started again; SIGTERM then stops it for good."""
    counter = tmp_path / "runs"
    app = counting_app(counter, 'echo "run $n"; [ "$n" -ge 3 ] && exec sleep 30; exit 0')
    proc = subprocess.Popen(
        [*SIDECAR, *OFF, *FAST, "--restart", "always", "--max-restarts", "unlimited", "--", *app],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _Lines(proc).expect(b"run 3\n")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
    finally:
        _cleanup(proc)
    assert proc.returncode == 128 + signal.SIGTERM  # the sleeping third run died of it
    assert runs(counter) == 3


@pytest.mark.slow
def test_backoff_grows_exponentially(tmp_path: Path) -> None:
    """--restart-delay 100ms: the gaps between runs are about 0.1, 0.2, 0.4, 0.8 s."""
    stamps = tmp_path / "stamps"
    app = ["sh", "-c", f'date +%s.%N >> "{stamps}"; exit 1']
    result = run_sidecar(
        [
            *OFF,
            "--restart",
            "on-failure",
            "--restart-delay",
            "100ms",
            "--max-restarts",
            "4",
            "--",
            *app,
        ]
    )
    assert result.returncode == 1
    times = [float(line) for line in stamps.read_text().split()]
    assert len(times) == 5
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] >= 0.08, gaps
    for previous, gap in itertools.pairwise(gaps):
        assert gap > previous, gaps
    for step, gap in enumerate(gaps):
        nominal = 0.1 * 2**step
        assert 0.8 * nominal <= gap < nominal + 0.5, gaps


@pytest.mark.slow
def test_sigterm_during_backoff_exits_promptly_with_last_status(tmp_path: Path) -> None:
    """SIGTERM while waiting 10 s to restart: sidecar-run exits at once with the last status."""
    counter, log = tmp_path / "runs", tmp_path / "log.jsonl"
    app = counting_app(counter, "exit 3")
    proc = subprocess.Popen(
        [
            *SIDECAR,
            *OFF,
            "--restart",
            "on-failure",
            "--restart-delay",
            "10s",
            "--log-level",
            "info",
            "--log-file",
            str(log),
            "--",
            *app,
        ],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while ("STARTING", "BACKOFF") not in (transitions(log) if log.exists() else []):
            assert time.monotonic() < deadline, "never reached BACKOFF"
            time.sleep(0.02)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=5)
        took = time.monotonic() - began
    finally:
        _cleanup(proc)
    assert proc.returncode == 3
    assert took < 2
    assert runs(counter) == 1
    assert transitions(log)[-1] == ("BACKOFF", "EXITED")
    assert "shutdown_started" in [e["event"] for e in events(log)]
