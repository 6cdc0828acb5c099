"""End to end: sidecar-run as PID 1 of a new PID namespace reaps orphans and handles signals;
not as PID 1 it is a child subreaper (unless --no-subreaper)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import SIDECAR, child_env, python_app, run_sidecar

OFF = ["--admin", "off"]


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=10
    )
    return probe.returncode == 0


needs_pidns = pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare --pid")

UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]

#: Orphans 50 grandchildren that exit soon, then counts zombies in the namespace until none are
#: left (at most 5 s), prints its pid and the count, and exits 5.
_ORPHANER = """
import os, time
for _ in range(50):
    if os.fork() == 0:
        if os.fork() == 0:
            time.sleep(0.2)
            os._exit(0)
        os._exit(0)
    os.wait()
def zombies():
    found = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    found += f.read().rpartition(")")[2].split()[0] == "Z"
            except OSError:
                pass
    return found
time.sleep(0.3)
deadline = time.monotonic() + 5
while zombies() and time.monotonic() < deadline:
    time.sleep(0.05)
print(os.getpid(), os.getppid(), zombies(), flush=True)
raise SystemExit(5)
"""


@needs_pidns
@pytest.mark.slow
def test_pid1_reaps_orphans_and_keeps_the_exit_status() -> None:
    """As PID 1, sidecar-run reaps every orphaned grandchild and exits with the app's status."""
    result = subprocess.run(
        [*UNSHARE, *SIDECAR, *OFF, "--", *python_app(_ORPHANER)],
        env=child_env(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 5, result.stderr
    pid, ppid, zombies = (int(w) for w in result.stdout.split())
    assert ppid == 1  # the app's parent is sidecar-run, PID 1 of the namespace
    assert pid != 1
    assert zombies == 0


def _read_line(proc: subprocess.Popen[bytes], timeout: float = 10) -> bytes:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not ready:
            pytest.fail(f"no line within {timeout}s: {data!r}")
        chunk = os.read(fd, 1)
        if not chunk:
            pytest.fail(f"EOF before a line: {data!r}")
        data += chunk
    return data


def _kill_all(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            for child in psutil.Process(proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()
        except psutil.NoSuchProcess:
            pass
        proc.kill()
    proc.communicate(timeout=10)


@needs_pidns
@pytest.mark.parametrize(
    ("sig", "flags"),
    [(signal.SIGTERM, []), (signal.SIGUSR1, []), (signal.SIGTERM, ["--forward-to", "child"])],
    ids=["TERM", "USR1", "TERM-child"],
)
def test_pid1_acts_on_signals_from_outside(sig: signal.Signals, flags: list[str]) -> None:
    """As PID 1 (where the kernel drops signals without handlers) a signal sent from the parent
    namespace reaches sidecar-run and then the app: TERM stops it, others are forwarded."""
    app = python_app(
        """
        import os, signal, sys, time
        def handler(n, frame):
            print("got", n, flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGUSR1, handler)
        print("ready", os.getppid(), flush=True)
        time.sleep(30)
        """
    )
    proc = subprocess.Popen(
        [*UNSHARE, *SIDECAR, *OFF, *flags, "--", *app],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert _read_line(proc) == b"ready 1\n"
        (sidecar,) = psutil.Process(proc.pid).children()
        assert "sidecar_runtime" in sidecar.cmdline()
        os.kill(sidecar.pid, sig)
        out, err = proc.communicate(timeout=10)
    finally:
        _kill_all(proc)
    assert proc.returncode == 0, err
    assert out == f"got {int(sig)}\n".encode()


_DOUBLE_FORK = """
import json, os, sys, time
read_end, write_end = os.pipe()
if os.fork() == 0:
    middle = os.getpid()
    if os.fork() == 0:
        deadline = time.monotonic() + 5
        while os.getppid() == middle and time.monotonic() < deadline:
            time.sleep(0.005)
        os.write(write_end, b"%d %d" % (os.getpid(), os.getppid()))
        os._exit(0)
    os._exit(0)
os.wait()
os.close(write_end)
orphan, adopter = map(int, os.read(read_end, 100).split())
if adopter == os.getppid():  # adopted by sidecar-run: wait until it has reaped the orphan
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{orphan}") and time.monotonic() < deadline:
        time.sleep(0.005)
reaped = not os.path.exists(f"/proc/{orphan}")
print(json.dumps({"orphan": orphan, "adopter": adopter, "sidecar": os.getppid(), "reaped": reaped}))
"""

#: Runs its argv as a child subreaper itself, so orphans that sidecar-run does not adopt come
#: here (and are reaped) instead of going to the machine's init.
_SUBREAPER_WRAPPER = """
import ctypes, os, subprocess, sys
assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0
status = subprocess.call(sys.argv[1:])
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
sys.exit(status)
"""


def _double_fork(tmp_path: Path, *flags: str) -> tuple[dict[str, int], list[dict[str, object]]]:
    log = tmp_path / "log.jsonl"
    sidecar = [*SIDECAR, *OFF, *flags, "--log-level", "debug", "--log-file", str(log)]
    proc = subprocess.Popen(
        [*python_app(_SUBREAPER_WRAPPER), *sidecar, "--", *python_app(_DOUBLE_FORK)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = proc.communicate(timeout=20)
    finally:
        _kill_all(proc)
    assert proc.returncode == 0, err
    report = json.loads(out)
    report["wrapper"] = proc.pid
    events = [json.loads(line) for line in log.read_text().splitlines()]
    return report, events


def test_subreaper_adopts_and_reaps_orphans(tmp_path: Path) -> None:
    """Not as PID 1, sidecar-run is a child subreaper: an orphaned grandchild is re-parented to
    it and reaped by it (an ``orphan_reaped`` event)."""
    report, events = _double_fork(tmp_path)
    assert report["adopter"] == report["sidecar"]
    assert report["reaped"]
    reaped = [e for e in events if e["event"] == "orphan_reaped"]
    assert [e["pid"] for e in reaped] == [report["orphan"]]


def test_no_subreaper_leaves_orphans_to_the_next_reaper(tmp_path: Path) -> None:
    """--no-subreaper: an orphaned grandchild goes to the next subreaper up, not sidecar-run."""
    report, events = _double_fork(tmp_path, "--no-subreaper")
    assert report["adopter"] == report["wrapper"]
    assert report["adopter"] != report["sidecar"]
    assert not [e for e in events if e["event"] == "orphan_reaped"]


def test_reaping_orphans_does_not_disturb_the_apps_status() -> None:
    """Orphans exiting with other statuses never replace the app's own exit status."""
    script = "for i in 1 2 3 4 5 6 7 8; do (sh -c 'exit 9' &); done; sleep 0.3; exit 6"
    result = run_sidecar([*OFF, "--", "sh", "-c", script])
    assert result.returncode == 6
    assert result.stderr == b""
