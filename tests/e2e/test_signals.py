"""End to end: signals sent to sidecar-run reach the app exactly once (or stop it), per the
forwarding, rewrite, stop-signal, stop-timeout and escalation rules."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import SIDECAR, child_env, python_app

OFF = ["--admin", "off"]

#: A fake app that prints "got N" for every delivery of each signal in SIGS (counted through the
#: wakeup fd, which gets one byte per delivery: Python handlers would merge repeated signals)
#: and exits 0 on a signal in EXIT_ON.
_APP = """
import os, select, signal
SIGS = {sigs!r}
EXIT_ON = {exit_on!r}
RECORD = {record!r}
r, w = os.pipe()
os.set_blocking(w, False)
signal.set_wakeup_fd(w, warn_on_full_buffer=False)
for s in SIGS:
    signal.signal(s, lambda n, frame: None)
os.write(1, b"ready\\n")
while True:
    select.select([r], [], [])
    for n in os.read(r, 4096):
        os.write(1, b"got %d\\n" % n)
        if RECORD:
            with open(RECORD, "a") as f:
                f.write("%d\\n" % n)
        if n in EXIT_ON:
            os._exit(0)
"""


def recorder(
    sigs: list[int], exit_on: tuple[int, ...] = (signal.SIGTERM,), record: Path | None = None
) -> list[str]:
    """argv of an app that reports each of ``sigs`` on stdout (and appends it to ``record``)
    and exits 0 on one in ``exit_on``."""
    return python_app(
        _APP.format(
            sigs=[int(s) for s in sigs],
            exit_on=[int(s) for s in exit_on],
            record=str(record) if record else "",
        )
    )


class Sidecar:
    """A running sidecar-run whose stdout is read line by line with timeouts."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(
            [*SIDECAR, *args], env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.out = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def expect(self, needle: str, timeout: float = 10) -> None:
        """Read stdout until ``needle`` has appeared (fails after ``timeout``)."""
        self.expect_count(needle, 1, timeout)

    def expect_count(self, needle: str, count: int, timeout: float = 10) -> None:
        """Read stdout until ``needle`` has appeared ``count`` times (fails after ``timeout``)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while self.out.count(needle.encode()) < count:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                pytest.fail(f"timed out waiting for {count}x {needle!r}; got {self.out!r}")
            chunk = os.read(fd, 65536)
            if not chunk:
                pytest.fail(f"EOF waiting for {count}x {needle!r}; got {self.out!r}")
            self.out += chunk

    def kill(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def finish(self, timeout: float = 10) -> tuple[int, list[str], bytes]:
        """Wait for exit; return the status, all stdout lines and stderr."""
        out, err = self.proc.communicate(timeout=timeout)
        self.out += out
        return self.proc.returncode, self.out.decode().splitlines(), err

    def cleanup(self) -> None:
        """SIGKILL everything sidecar-run started, then sidecar-run itself."""
        if self.proc.poll() is None:
            try:
                descendants = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                descendants = []
            for child in descendants:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
            self.proc.kill()
        self.proc.communicate(timeout=10)


def _gone(pid: int) -> bool:
    """True when ``pid`` is no longer running (reaped, or a zombie nobody reaped yet)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


FORWARDED = [
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCONT,
    signal.SIGALRM,
    signal.SIGURG,
    signal.SIGPWR,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGIO,
    signal.SIGXCPU,
    signal.SIGSTKFLT,
    signal.SIGRTMIN + 1,
    signal.SIGRTMAX,
]


@pytest.mark.slow
def test_each_forwarded_signal_reaches_the_app_exactly_once() -> None:
    """HUP, QUIT, USR1, USR2, WINCH, CONT, ALRM, URG, PWR, ... and real-time signals sent to
    sidecar-run are each delivered to the app once."""
    sc = Sidecar([*OFF, "--", *recorder([*FORWARDED, signal.SIGTERM])])
    try:
        sc.expect("ready\n")
        for sig in FORWARDED:
            sc.kill(sig)
            sc.expect(f"got {int(sig)}\n")
        sc.kill(signal.SIGTERM)
        code, lines, err = sc.finish()
    finally:
        sc.cleanup()
    assert code == 0
    assert err == b""
    got = [line for line in lines if line.startswith("got ")]
    assert got == [f"got {int(s)}" for s in [*FORWARDED, signal.SIGTERM]]


def test_queued_realtime_signals_keep_their_count() -> None:
    """Five queued real-time signals sent to sidecar-run are five delivered to the app (the
    runtime counts deliveries on its wakeup fd; Python handlers alone would merge them)."""
    rt = signal.SIGRTMIN + 1
    sc = Sidecar([*OFF, "--", *recorder([rt, signal.SIGTERM])])
    try:
        sc.expect("ready\n")
        os.kill(sc.pid, signal.SIGSTOP)  # hold delivery so that all five queue up at once
        for _ in range(5):
            sc.kill(rt)
        os.kill(sc.pid, signal.SIGCONT)
        sc.expect_count(f"got {rt}\n", 5)
        sc.kill(signal.SIGTERM)
        code, lines, _ = sc.finish()
    finally:
        sc.cleanup()
    assert code == 0
    assert [line for line in lines if line == f"got {rt}"] == [f"got {rt}"] * 5


def test_sigint_stops_the_app_with_exactly_one_int() -> None:
    """SIGINT to sidecar-run: the app gets SIGINT once (not TERM) and is stopped."""
    app = recorder([signal.SIGINT, signal.SIGTERM], exit_on=())
    sc = Sidecar([*OFF, "--stop-timeout", "500ms", "--", *app])
    try:
        sc.expect("ready\n")
        sc.kill(signal.SIGINT)
        code, lines, _ = sc.finish()
    finally:
        sc.cleanup()
    assert code == 128 + signal.SIGKILL  # the app only reported it; the deadline killed it
    assert [line for line in lines if line.startswith("got")] == [f"got {int(signal.SIGINT)}"]


def test_sigterm_stops_the_app_and_its_exit_code_is_used() -> None:
    """SIGTERM to sidecar-run: the app gets TERM once; sidecar-run exits with the app's code."""
    sc = Sidecar([*OFF, "--", *recorder([signal.SIGTERM])])
    try:
        sc.expect("ready\n")
        sc.kill(signal.SIGTERM)
        code, lines, err = sc.finish()
    finally:
        sc.cleanup()
    assert code == 0
    assert lines == ["ready", f"got {int(signal.SIGTERM)}"]
    assert err == b""


def test_sigterm_kills_a_default_app_with_143() -> None:
    """An app with the default TERM action dies of it: sidecar-run exits 143."""
    sc = Sidecar(
        [*OFF, "--", *python_app("import time; print('ready', flush=True); time.sleep(30)")]
    )
    try:
        sc.expect("ready\n")
        sc.kill(signal.SIGTERM)
        code, _, _ = sc.finish()
    finally:
        sc.cleanup()
    assert code == 128 + signal.SIGTERM


def test_stop_signal_is_sent_instead_of_term() -> None:
    """--stop-signal QUIT: SIGTERM to sidecar-run makes the app receive QUIT, not TERM."""
    app = recorder([signal.SIGQUIT, signal.SIGTERM], exit_on=(signal.SIGQUIT,))
    sc = Sidecar([*OFF, "--stop-signal", "QUIT", "--", *app])
    try:
        sc.expect("ready\n")
        sc.kill(signal.SIGTERM)
        code, lines, _ = sc.finish()
    finally:
        sc.cleanup()
    assert code == 0
    assert lines == ["ready", f"got {int(signal.SIGQUIT)}"]


_IGNORES_TERM = 'trap "" TERM; sleep 30 & echo "ready $!"; wait; wait'


@pytest.mark.slow
def test_app_ignoring_term_is_killed_with_its_group_after_stop_timeout(tmp_path: Path) -> None:
    """An app that ignores TERM is SIGKILLed with its whole group after --stop-timeout (137)."""
    log = tmp_path / "log.jsonl"
    sc = Sidecar(
        [
            *OFF,
            "--stop-timeout",
            "500ms",
            "--log-level",
            "info",
            "--log-file",
            str(log),
            "--",
            "sh",
            "-c",
            _IGNORES_TERM,
        ]
    )
    try:
        sc.expect("\n")
        grandchild = int(sc.out.split()[1])
        began = time.monotonic()
        sc.kill(signal.SIGTERM)
        code, _, _ = sc.finish()
        took = time.monotonic() - began
    finally:
        sc.cleanup()
    assert code == 128 + signal.SIGKILL
    assert 0.4 <= took < 5
    assert _gone(grandchild)
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert "app_stop_timed_out" in events


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_second_stop_signal_escalates_to_sigkill_at_once(sig: signal.Signals) -> None:
    """A second TERM (or INT) SIGKILLs the app's group at once, not after the 30 s timeout."""
    app = python_app(
        """
        import os, signal, subprocess, time
        gc = subprocess.Popen(["sleep", "30"])
        def handler(n, frame):
            os.write(1, b"got %d\\n" % n)
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        os.write(1, b"ready %d\\n" % gc.pid)
        while True:
            time.sleep(1)
        """
    )
    sc = Sidecar([*OFF, "--stop-timeout", "30s", "--", *app])
    try:
        sc.expect("\n")
        grandchild = int(sc.out.split()[1])
        sc.kill(sig)
        sc.expect(f"got {int(sig)}\n")
        began = time.monotonic()
        sc.kill(sig)
        code, lines, _ = sc.finish()
        took = time.monotonic() - began
    finally:
        sc.cleanup()
    assert code == 128 + signal.SIGKILL
    assert took < 3
    assert [line for line in lines if line.startswith("got")] == [f"got {int(sig)}"]
    assert _gone(grandchild)


@pytest.mark.slow
def test_pre_stop_delay_postpones_the_stop_signal() -> None:
    """--pre-stop-delay 500ms: the app gets TERM only half a second after sidecar-run did."""
    sc = Sidecar([*OFF, "--pre-stop-delay", "500ms", "--", *recorder([signal.SIGTERM])])
    try:
        sc.expect("ready\n")
        began = time.monotonic()
        sc.kill(signal.SIGTERM)
        sc.expect(f"got {int(signal.SIGTERM)}\n")
        took = time.monotonic() - began
        code, _, _ = sc.finish()
    finally:
        sc.cleanup()
    assert code == 0
    assert 0.45 <= took < 5


_FAMILY = """
import os, signal, subprocess, sys, time
GC = '''
import os, signal, time
def h(n, f):
    os.write(1, b"gc %d\\\\n" % n)
signal.signal(signal.SIGUSR1, h)
signal.signal(signal.SIGUSR2, h)
os.write(1, b"gc-ready\\\\n")
while True:
    time.sleep(1)
'''
gc = subprocess.Popen([sys.executable, "-c", GC])
def on_usr1(n, f):
    os.write(1, b"app %d\\n" % n)
    os.kill(gc.pid, signal.SIGUSR2)  # a marker: the grandchild reports USR1 first if it has it
def on_term(n, f):
    gc.kill()
    gc.wait()
    os._exit(0)
signal.signal(signal.SIGUSR1, on_usr1)
signal.signal(signal.SIGTERM, on_term)
os.write(1, b"app-ready\\n")
while True:
    time.sleep(1)
"""


@pytest.mark.parametrize("forward_to", ["group", "child"])
def test_forward_to_group_reaches_grandchildren_child_does_not(forward_to: str) -> None:
    """--forward-to group signals the app's whole process group; child only the app."""
    sc = Sidecar([*OFF, "--forward-to", forward_to, "--", *python_app(_FAMILY)])
    try:
        sc.expect("app-ready\n")
        sc.expect("gc-ready\n")
        sc.kill(signal.SIGUSR1)
        sc.expect(f"gc {int(signal.SIGUSR2)}\n")
        sc.kill(signal.SIGTERM)
        code, lines, _ = sc.finish()
    finally:
        sc.cleanup()
    assert code == 0
    assert lines.count(f"app {int(signal.SIGUSR1)}") == 1
    gc_lines = [line for line in lines if line.startswith("gc ")]
    if forward_to == "group":
        assert gc_lines == [f"gc {int(signal.SIGUSR1)}", f"gc {int(signal.SIGUSR2)}"]
    else:
        assert gc_lines == [f"gc {int(signal.SIGUSR2)}"]


def test_rewrite_hup_to_usr1() -> None:
    """--rewrite HUP:USR1: a HUP sent to sidecar-run reaches the app as USR1."""
    app = recorder([signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM])
    sc = Sidecar([*OFF, "--rewrite", "HUP:USR1", "--", *app])
    try:
        sc.expect("ready\n")
        sc.kill(signal.SIGHUP)
        sc.expect(f"got {int(signal.SIGUSR1)}\n")
        sc.kill(signal.SIGTERM)
        code, lines, _ = sc.finish()
    finally:
        sc.cleanup()
    assert code == 0
    assert lines == ["ready", f"got {int(signal.SIGUSR1)}", f"got {int(signal.SIGTERM)}"]


def test_rewrite_to_none_drops_the_signal() -> None:
    """--rewrite USR2:none: USR2 never reaches the app; other signals still do."""
    app = recorder([signal.SIGUSR2, signal.SIGWINCH, signal.SIGTERM])
    sc = Sidecar([*OFF, "--rewrite", "USR2:none", "--", *app])
    try:
        sc.expect("ready\n")
        sc.kill(signal.SIGUSR2)
        sc.kill(signal.SIGWINCH)  # higher number: if both are pending, USR2 is handled first
        sc.expect(f"got {int(signal.SIGWINCH)}\n")
        sc.kill(signal.SIGTERM)
        code, lines, _ = sc.finish()
    finally:
        sc.cleanup()
    assert code == 0
    assert lines == ["ready", f"got {int(signal.SIGWINCH)}", f"got {int(signal.SIGTERM)}"]


def test_chld_and_pipe_are_not_forwarded() -> None:
    """SIGCHLD and SIGPIPE sent to sidecar-run are not forwarded and do not stop it."""
    app = recorder([signal.SIGCHLD, signal.SIGPIPE, signal.SIGWINCH, signal.SIGTERM])
    sc = Sidecar([*OFF, "--", *app])
    try:
        sc.expect("ready\n")
        sc.kill(signal.SIGPIPE)
        sc.kill(signal.SIGCHLD)
        sc.kill(signal.SIGWINCH)  # the marker: numbered above both
        sc.expect(f"got {int(signal.SIGWINCH)}\n")
        assert sc.proc.poll() is None
        sc.kill(signal.SIGTERM)
        code, lines, _ = sc.finish()
    finally:
        sc.cleanup()
    assert code == 0
    assert lines == ["ready", f"got {int(signal.SIGWINCH)}", f"got {int(signal.SIGTERM)}"]


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def _await_state(pid: int, wanted: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while _state(pid) != wanted:
        if time.monotonic() > deadline:
            pytest.fail(f"process {pid} did not reach state {wanted!r}: {_state(pid)!r}")
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU])
def test_job_control_signal_is_forwarded_then_sidecar_stops_itself(
    sig: signal.Signals, tmp_path: Path
) -> None:
    """TSTP/TTIN/TTOU are forwarded to the app, then sidecar-run stops; CONT resumes both."""
    record = tmp_path / "record"
    app = recorder([sig, signal.SIGCONT, signal.SIGTERM], record=record)
    sc = Sidecar([*OFF, "--", *app])
    try:
        sc.expect("ready\n")
        sc.kill(sig)
        _await_state(sc.pid, "T")
        # Wait for the app to take the signal: a SIGCONT discards a still pending stop signal.
        deadline = time.monotonic() + 10
        while not (record.exists() and record.read_text() == f"{int(sig)}\n"):
            assert time.monotonic() < deadline, "the app never received the stop signal"
            time.sleep(0.01)
        sc.kill(signal.SIGCONT)
        sc.expect(f"got {int(signal.SIGCONT)}\n")
        sc.kill(signal.SIGTERM)
        code, lines, _ = sc.finish()
    finally:
        sc.cleanup()
    assert code == 0
    assert lines == ["ready", f"got {int(sig)}", f"got {int(signal.SIGCONT)}", "got 15"]
