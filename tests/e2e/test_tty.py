"""End to end: interactive use on a real pseudo-terminal. sidecar-run runs as the session leader
and foreground process group of a pty we own (``setsid --ctty``), as under a shell."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import termios
import time

import pytest

from tests.conftest import SIDECAR, child_env, python_app

pytestmark = pytest.mark.skipif(shutil.which("setsid") is None, reason="needs util-linux setsid")

OFF = ["--admin", "off"]


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Terminal:
    """sidecar-run ARGS on a fresh pty; we hold the master side, as a terminal emulator does."""

    def __init__(self, args: list[str], rows: int = 24, cols: int = 80) -> None:
        self.master, slave = os.openpty()
        self.slave_name = os.ttyname(slave)
        _set_winsize(slave, rows, cols)
        try:
            self.proc = subprocess.Popen(
                ["setsid", "--ctty", *SIDECAR, *args],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=child_env(TERM="dumb"),
            )
        finally:
            os.close(slave)
        self.out = b""

    def expect(self, needle: bytes, timeout: float = 10) -> None:
        """Read the terminal until ``needle`` was shown."""
        deadline = time.monotonic() + timeout
        while needle not in self.out:
            ready, _, _ = select.select([self.master], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                pytest.fail(f"timed out waiting for {needle!r}: {self.out!r}")
            if not self._read():
                pytest.fail(f"terminal closed waiting for {needle!r}: {self.out!r}")

    def _read(self) -> bool:
        try:
            chunk = os.read(self.master, 4096)
        except OSError as err:  # EIO: every slave descriptor is closed
            if err.errno != errno.EIO:
                raise
            return False
        self.out += chunk
        return bool(chunk)

    def finish(self, timeout: float = 10) -> int:
        """Wait for sidecar-run to exit and read what is left on the terminal."""
        code = self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], max(deadline - time.monotonic(), 0))
            if not ready or not self._read():
                break
        return code

    def lines(self) -> list[str]:
        return self.out.decode("utf-8", "replace").replace("\r\n", "\n").splitlines()

    def hang_up(self) -> None:
        """Close the master side, as a terminal emulator window being closed."""
        os.close(self.master)
        self.master = -1

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            for pid in _children(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            self.proc.kill()
        self.proc.wait(timeout=10)
        if self.master >= 0:
            os.close(self.master)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


_TTY_REPORT = """
import os
print("isatty", os.isatty(0), os.isatty(1), os.isatty(2))
print("ttyname", os.ttyname(1))
print("size", *os.get_terminal_size(1))
"""


def test_app_has_its_own_session_and_sidecar_stays_in_the_foreground() -> None:
    """sidecar-run remains the terminal's foreground group; the app runs in its own session,
    so the terminal's signals reach it only through sidecar-run."""
    app = python_app("import os, time; print('ids', os.getpid(), os.getsid(0)); time.sleep(30)")
    term = Terminal([*OFF, "--", *app])
    try:
        term.expect(b"\n")
        assert os.tcgetpgrp(term.master) == term.proc.pid
        _, pid, sid = term.lines()[0].split()
        assert pid == sid
        assert int(sid) != term.proc.pid
    finally:
        term.close()


@pytest.mark.parametrize("mode", ["auto", "pty"])
def test_terminal_hangup_stops_the_app(mode: str) -> None:
    """Closing the terminal (SIGHUP to its session leader) reaches the app: exit 129."""
    app = python_app("import time; print('ready'); time.sleep(30)")
    term = Terminal([*OFF, "--output", mode, "--", *app])
    try:
        term.expect(b"ready")
        term.hang_up()
        assert term.proc.wait(timeout=10) == 128 + signal.SIGHUP
    finally:
        term.close()


@pytest.mark.parametrize("flags", [[], ["--output", "auto"]], ids=["default", "auto"])
def test_auto_output_on_a_terminal_inherits_it(flags: list[str]) -> None:
    """Output mode auto on a terminal, no plugin reading output: the app gets our very tty."""
    term = Terminal([*OFF, *flags, "--", *python_app(_TTY_REPORT)], rows=33, cols=111)
    try:
        code = term.finish()
    finally:
        term.close()
    assert code == 0
    assert term.lines() == ["isatty True True True", f"ttyname {term.slave_name}", "size 111 33"]


def test_pty_output_gives_the_app_its_own_terminal() -> None:
    """--output pty: the app's stdout/stderr are a new pty of the same size, passed through."""
    term = Terminal([*OFF, "--output", "pty", "--", *python_app(_TTY_REPORT)], rows=33, cols=111)
    try:
        code = term.finish()
    finally:
        term.close()
    assert code == 0
    isatty, ttyname, size = term.lines()
    assert isatty == "isatty True True True"
    assert ttyname.startswith("ttyname /dev/pts/")
    assert ttyname != f"ttyname {term.slave_name}"
    assert size == "size 111 33"


_COUNT_INTS = """
import os, signal, time
count = 0
def on_int(n, frame):
    global count
    count += 1
signal.signal(signal.SIGINT, on_int)
print("ready", flush=True)
while not count:
    time.sleep(0.01)
time.sleep(0.3)  # a window for a duplicate SIGINT to show up in the count
print(f"count={count}", flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["auto", "pty"])
def test_one_ctrl_c_reaches_the_app_exactly_once(mode: str) -> None:
    """One Ctrl-C typed on the terminal: the app receives exactly one SIGINT and exits."""
    term = Terminal([*OFF, "--output", mode, "--", *python_app(_COUNT_INTS)])
    try:
        term.expect(b"ready")
        os.write(term.master, b"\x03")
        code = term.finish()
    finally:
        term.close()
    assert code == 0
    assert re.findall(rb"count=(\d+)", term.out) == [b"1"]


_REPORT_WINCH = """
import os, signal, time
def on_winch(n, frame):
    print("size", *os.get_terminal_size(1), flush=True)
signal.signal(signal.SIGWINCH, on_winch)
print("ready", flush=True)
time.sleep(30)
"""


@pytest.mark.parametrize("mode", ["auto", "pty"])
def test_terminal_resize_reaches_the_app(mode: str) -> None:
    """Resizing our terminal: the app gets SIGWINCH and sees the new size on its stdout."""
    term = Terminal([*OFF, "--output", mode, "--", *python_app(_REPORT_WINCH)])
    try:
        term.expect(b"ready")
        _set_winsize(term.master, 44, 122)  # the kernel sends SIGWINCH to sidecar-run's group
        term.expect(b"size 122 44")
    finally:
        term.close()


@pytest.mark.parametrize("mode", ["auto", "pty"])
def test_app_reads_typed_input(mode: str) -> None:
    """What is typed on the terminal reaches the app's stdin."""
    app = python_app("import sys; print('ready', flush=True); print('you said', input())")
    term = Terminal([*OFF, "--output", mode, "--", *app])
    try:
        term.expect(b"ready")
        os.write(term.master, b"hello\n")
        code = term.finish()
    finally:
        term.close()
    assert code == 0
    assert "you said hello" in term.lines()
