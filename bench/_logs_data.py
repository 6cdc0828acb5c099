"""Inputs and checks of ``bench/logs.py``: numbered log lines, output counting, lost/duplicated.

Every input line carries its sequence number (``seq=000000042`` in plain lines, ``"seq":42`` in
JSON lines), so any output (raw copies, sidecar-run's JSON records, the reference's records) is
checked the same way: find every number, count the ones missing and the ones seen twice.
"""

from __future__ import annotations

import os
import re
from array import array
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "LINE_BYTES",
    "Check",
    "OutputCounter",
    "check_output",
    "json_line",
    "plain_line",
    "write_input",
]

#: Every input line is this long, newline included (padding fills it up).
LINE_BYTES = 100
_PLAIN_HEAD = "seq={:09d} level=info logger=app.http msg=GET /api/v1/items status=200 pad="
_JSON_HEAD = '{{"seq":{},"level":"info","logger":"app.http","msg":"GET /api/v1/items","pad":"'
_SEQ = {"plain": re.compile(rb"seq=(\d{9})"), "json": re.compile(rb'"seq":(\d+)')}
_BLOCK = 10_000


def plain_line(seq: int) -> str:
    """``seq=000000042 level=info ... pad=xxx`` (LINE_BYTES with the newline)."""
    head = _PLAIN_HEAD.format(seq)
    return head + "x" * (LINE_BYTES - 1 - len(head)) + "\n"


def json_line(seq: int) -> str:
    """``{"seq":42,"level":"info",...,"pad":"xxx"}`` (LINE_BYTES with the newline)."""
    head = _JSON_HEAD.format(seq)
    return head + "x" * (LINE_BYTES - 3 - len(head)) + '"}\n'


def write_input(path: Path, kind: str, count: int) -> int:
    """Write ``count`` numbered lines of ``kind`` (plain or json) to ``path``; return bytes."""
    make = plain_line if kind == "plain" else json_line
    with path.open("w", encoding="ascii") as file:
        for start in range(0, count, _BLOCK):
            file.write("".join(make(i) for i in range(start, min(start + _BLOCK, count))))
    return path.stat().st_size


class OutputCounter:
    """Counts the newlines of a growing file cheaply: reads only what was appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self.size = 0
        self._fd: int | None = None

    def poll(self) -> int:
        """Read what was appended since the last call; return the line count so far."""
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return 0
        while True:
            data = os.read(self._fd, 1 << 22)
            if not data:
                return self.lines
            self.size += len(data)
            self.lines += data.count(b"\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True)
class Check:
    """What an output holds against the ``expected`` numbered lines."""

    expected: int
    lines: int  # lines in the output
    lost: int  # numbers never seen
    duplicated: int  # extra copies of numbers seen more than once
    foreign: int  # output lines without a number (corrupt or cut)


def check_output(paths: list[Path], kind: str, expected: int) -> Check:
    """Lost and duplicated sequence numbers over ``paths`` (an output and its rotations)."""
    seen = array("I", bytes(4 * expected))
    found = lines = 0
    for path in paths:
        if not path.exists():
            continue
        data = path.read_bytes()
        lines += data.count(b"\n")
        for match in _SEQ[kind].finditer(data):
            found += 1
            seq = int(match.group(1))
            if seq < expected:
                seen[seq] += 1
    distinct = expected - seen.count(0)
    return Check(
        expected=expected,
        lines=lines,
        lost=expected - distinct,
        duplicated=found - distinct,
        foreign=max(lines - found, 0),
    )
