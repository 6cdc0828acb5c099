"""Reading /proc: stat parsing, the two ways to find the tree, and files kept open."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from sidecar_plugins.metrics._procfs import ProcFS, TreeFinder, parse_stat


def test_parse_stat_with_a_hostile_command_name() -> None:
    """A comm with spaces and parentheses does not shift the fields."""
    line = (
        b"4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 7 2 1 250 50 10 5 20 0 3 0 "
        b"12345 1048576 256 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n"
    )
    st = parse_stat(line)
    assert (st.pid, st.state, st.ppid, st.session) == (4242, "S", 1, 4242)
    assert (st.minflt, st.cminflt, st.majflt, st.cmajflt) == (100, 7, 2, 1)
    assert st.utime == 250 / os.sysconf("SC_CLK_TCK")
    assert (st.threads, st.start_ticks, st.vsize) == (3, 12345, 1048576)
    assert st.rss == 256 * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def tree() -> Iterator[tuple[int, set[int]]]:
    """A real app (own session) with two children and a grandchild: (root, all pids)."""
    code = """
        import os, sys, time
        pids = []
        for depth in (0, 1):
            pid = os.fork()
            if pid == 0:
                if depth == 1 and os.fork() == 0:
                    os.write(1, b"%d\\n" % os.getpid())  # one write: lines never interleave
                    time.sleep(60)
                    os._exit(0)
                os.write(1, b"%d\\n" % os.getpid())
                time.sleep(60)
                os._exit(0)
        time.sleep(60)
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        pids = {proc.pid, *(int(proc.stdout.readline()) for _ in range(3))}
        yield proc.pid, pids
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_walk_and_scan_find_the_same_tree(tree: tuple[int, set[int]]) -> None:
    """The children-file walk and the full /proc scan agree; the root comes first."""
    root, pids = tree
    finder = TreeFinder(ProcFS())
    scanned = TreeFinder(ProcFS())
    scanned.children_files = False
    for found in (scanned.find(root), *([finder.find(root)] if finder.children_files else [])):
        assert found[0].pid == root
        assert {st.pid for st in found} == pids
    assert TreeFinder(ProcFS()).find(2**22 + 7) == []  # no such root


def open_fds() -> int:
    """Descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


def test_kept_files_are_capped_closed_and_never_stale(tree: tuple[int, set[int]]) -> None:
    """At most ``keep`` files stay open, unread ones close, an exited process reads as gone."""
    _, pids = tree
    fs = ProcFS(keep=3)
    base = open_fds()
    for pid in pids:
        assert fs.stat(pid) is not None
        assert fs.io(pid) is not None
    assert open_fds() == base + 3
    fs.end_scrape()  # all three were read in this scrape: kept
    assert open_fds() == base + 3
    fs.end_scrape()  # none was read since: closed
    assert open_fds() == base
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        first = fs.stat(sleeper.pid)
        assert first is not None
        assert first.state in "SR"
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)
    assert fs.stat(sleeper.pid) is None
    assert open_fds() == base
    fs.close()
