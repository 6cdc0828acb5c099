"""End to end: the app's stdout/stderr pass through byte-exactly and promptly, nothing is lost at
exit, stdin is the app's alone, and sidecar-run adds no output of its own."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import select
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import SIDECAR, child_env, python_app, run_sidecar

OFF = ["--admin", "off"]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill sidecar-run and its app's process group if they are still there."""
    if proc.poll() is None:
        try:
            for pid in _children(proc.pid):
                os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        proc.kill()
    proc.wait(timeout=10)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


@pytest.mark.parametrize("mode", ["auto", "pty"])
def test_binary_output_is_byte_exact_and_streams_stay_apart(mode: str) -> None:
    """NUL bytes, CR/LF, invalid UTF-8 and no trailing newline arrive unchanged, stdout and
    stderr each on their own stream (also through ptys: no output processing)."""
    out = bytes(range(256)) + b"\x00\r\n\x1b[0m no newline\x00"
    err = b"\xff\xfe\x00err\r" + bytes(reversed(range(256)))
    app = python_app(
        f"""
        import os
        os.write(1, {out!r})
        os.write(2, {err!r})
        """
    )
    result = run_sidecar([*OFF, "--output", mode, "--", *app])
    assert result.returncode == 0
    assert result.stdout == out
    assert result.stderr == err


@pytest.mark.slow
def test_large_random_stream_is_exact() -> None:
    """52 MiB of random bytes on stdout arrive complete and in order (sha256)."""
    chunks, size = 52, 1 << 20
    app = python_app(
        f"""
        import random, sys
        rng = random.Random(1)
        for _ in range({chunks}):
            sys.stdout.buffer.write(rng.randbytes({size}))
        """
    )
    rng = random.Random(1)  # noqa: S311 - the same bytes the app writes
    expected = hashlib.sha256()
    for _ in range(chunks):
        expected.update(rng.randbytes(size))
    result = run_sidecar([*OFF, "--", *app], timeout=50)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout) == chunks * size
    assert hashlib.sha256(result.stdout).hexdigest() == expected.hexdigest()


def _read_until(fd: int, needle: bytes, timeout: float) -> tuple[bytes, float]:
    """Read ``fd`` until ``needle`` shows up; return the data and the time it arrived."""
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data, time.time()


@pytest.mark.slow
def test_partial_line_arrives_promptly(tmp_path: Path) -> None:
    """Output without a newline is passed on at once, not held until a newline or exit."""
    stamp = tmp_path / "written_at"
    app = python_app(
        f"""
        import os, time
        os.write(1, b"abc")
        with open({str(stamp)!r}, "w") as f:
            f.write(repr(time.time()))
        time.sleep(30)
        """
    )
    argv = [*SIDECAR, *OFF, "--", *app]
    with subprocess.Popen(argv, env=child_env(), stdout=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None
            data, arrived = _read_until(proc.stdout.fileno(), b"abc", timeout=15)
            assert data == b"abc"
            assert proc.poll() is None  # the app is still sleeping: no exit flushed it
            written = float(stamp.read_text())
            assert arrived - written < 1.0
        finally:
            _stop(proc)


def test_merged_streams_keep_write_order() -> None:
    """With 2>&1 the app's alternating stdout/stderr writes arrive in exactly that order."""
    app = python_app(
        """
        import os
        for i in range(200):
            os.write(1, b"out %d\\n" % i)
            os.write(2, b"err %d\\n" % i)
        """
    )
    result = run_sidecar([*OFF, "--", *app], stderr=subprocess.STDOUT)
    assert result.returncode == 0
    expected = b"".join(b"out %d\nerr %d\n" % (i, i) for i in range(200))
    assert result.stdout == expected


def test_output_just_before_exit_is_not_lost() -> None:
    """1 MiB written to each stream right before the app exits all arrives."""
    app = python_app(
        """
        import os
        out, err = b"o" * (1 << 20), b"e" * (1 << 20)
        for fd, data in ((1, out), (2, err)):
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        os._exit(3)
        """
    )
    result = run_sidecar([*OFF, "--", *app])
    assert result.returncode == 3
    assert result.stdout == b"o" * (1 << 20)
    assert result.stderr == b"e" * (1 << 20)


def test_output_just_before_sigkill_is_not_lost() -> None:
    """1 MiB written right before the app SIGKILLs itself all arrives; exit status 137."""
    app = python_app(
        """
        import os, signal
        view = memoryview(b"k" * (1 << 20) + b"END")
        while view:
            view = view[os.write(1, view):]
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = run_sidecar([*OFF, "--", *app])
    assert result.returncode == 137
    assert result.stdout == b"k" * (1 << 20) + b"END"


@pytest.mark.slow
def test_grandchild_holding_stdout_does_not_block_exit(tmp_path: Path) -> None:
    """A background grandchild keeping the pipe open does not keep sidecar-run from exiting."""
    out = tmp_path / "out"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [*SIDECAR, *OFF, "--", "sh", "-c", 'sleep 30 & echo "done $!"; exit 4'],
            env=child_env(SIDECAR_OUTPUT__DRAIN_TIMEOUT="300ms"),
            stdout=sink,
        )
    leftover = None
    try:
        began = time.monotonic()
        assert proc.wait(timeout=15) == 4
        assert time.monotonic() - began < 3  # the sleep would hold the pipe for 30 s
        words = out.read_bytes().split()
        assert words[0] == b"done"
        leftover = int(words[1])
    finally:
        _stop(proc)
        if leftover is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover, signal.SIGKILL)


def test_reader_going_away_gives_the_app_sigpipe() -> None:
    """When sidecar-run's reader closes the pipe, the app meets SIGPIPE as it would without
    sidecar-run: `sidecar-run -- yes | head -c 10` ends, with status 141."""
    with subprocess.Popen(
        [*SIDECAR, *OFF, "--", "yes"],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        try:
            assert proc.stdout is not None
            data, _ = _read_until(proc.stdout.fileno(), b"y\ny\n", timeout=10)
            assert data.startswith(b"y\ny\n")
            proc.stdout.close()
            assert proc.wait(timeout=10) == 128 + signal.SIGPIPE
        finally:
            _stop(proc)


def test_closed_stdin_is_passed_as_closed() -> None:
    """When sidecar-run's stdin is closed, the app's fd 0 is closed too (not /dev/null)."""
    app = shlex.join(
        python_app(
            """
            import os
            try:
                os.fstat(0)
                print("open")
            except OSError:
                print("closed")
            """
        )
    )
    result = subprocess.run(
        ["sh", "-c", f"exec <&-; exec {shlex.join(SIDECAR)} --admin off -- {app}"],
        env=child_env(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"closed\n"


def test_stdin_is_not_read_ahead() -> None:
    """sidecar-run never reads stdin: after the app took 6 bytes, the rest is still there."""
    script = f"{shlex.join(SIDECAR)} --admin off -- head -c 6 >/dev/null; echo rc=$?; cat"
    result = subprocess.run(
        ["sh", "-c", script],
        input=b"line1\nline2\n",
        env=child_env(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.stdout == b"rc=0\nline2\n"


def test_app_reads_stdin() -> None:
    """The app reads sidecar-run's stdin directly."""
    result = run_sidecar([*OFF, "--", "cat"], input=b"hello\x00world")
    assert result.returncode == 0
    assert result.stdout == b"hello\x00world"


def test_no_output_of_its_own(tmp_path: Path) -> None:
    """In normal operation sidecar-run writes nothing but the app's bytes on both streams."""
    result = run_sidecar(["--admin", "127.0.0.1:0", "--", "sh", "-c", "printf out; exit 7"])
    assert result.returncode == 7
    assert result.stdout == b"out"
    assert result.stderr == b""


def test_restart_warnings_go_to_stderr_not_stdout() -> None:
    """Restart warnings are JSON on stderr; stdout still carries only the app's bytes."""
    result = run_sidecar(
        [
            *OFF,
            "--restart",
            "on-failure",
            "--restart-delay",
            "10ms",
            "--max-restarts",
            "1",
            "--",
            "sh",
            "-c",
            "printf x; exit 1",
        ]
    )
    assert result.returncode == 1
    assert result.stdout == b"xx"
    assert result.stderr.startswith(b"{")
    assert b"app_state_changed" in result.stderr
