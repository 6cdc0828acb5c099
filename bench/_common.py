"""Shared helpers for the benchmark scripts: paths, byte-compiling, statistics, tables.

Imported as ``_common`` when a script runs (``python bench/startup.py`` puts ``bench/`` first on
``sys.path``) and as ``bench._common`` by mypy.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = [
    "DUMB_INIT",
    "PYTHON",
    "REPO",
    "SIDECAR",
    "TINI",
    "add_common_args",
    "byte_compile",
    "child_env",
    "fmt_ms",
    "header",
    "median",
    "p90",
    "print_table",
    "report_stale",
    "rotated",
    "stale_bytecode",
    "verdict",
]

REPO = Path(__file__).resolve().parent.parent
_VENV_BIN = REPO / ".venv" / "bin"
#: The venv interpreter (the one sidecar-run runs on); falls back to the running one.
PYTHON = str(_VENV_BIN / "python") if (_VENV_BIN / "python").exists() else sys.executable
SIDECAR = str(_VENV_BIN / "sidecar-run")
TINI = shutil.which("tini")
DUMB_INIT = shutil.which("dumb-init")
_SOURCE_DIRS = ("sidecar_runtime", "plugins")
T = TypeVar("T")


def add_common_args(parser: argparse.ArgumentParser, *, runs: int, runs_help: str) -> None:
    parser.add_argument("--runs", type=int, default=None, help=f"{runs_help} (default {runs})")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (< 20 s)")


def child_env(**extra: str) -> dict[str, str]:
    """Our environment without SIDECAR_*/NOTIFY_SOCKET, so no config or notify leaks in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SIDECAR_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")
    }
    env.update(extra)
    return env


def byte_compile() -> str:
    """Byte-compile the project as ``pip install`` would; return a line saying so.

    The environment sets PYTHONDONTWRITEBYTECODE=1, so without this every run of sidecar-run
    would compile the project's modules from source and the figures would be too high.
    compileall writes .pyc files regardless of that variable; we also unset it for clarity.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    dirs = [str(REPO / d) for d in _SOURCE_DIRS]
    subprocess.run([PYTHON, "-m", "compileall", "-q", *dirs], env=env, check=True)
    return f"byte-compiled {', '.join(_SOURCE_DIRS)}/ (python -m compileall -q) before measuring"


def stale_bytecode() -> list[str]:
    """Project modules whose .pyc no longer matches the source (edited during the run)."""
    stale = []
    for directory in _SOURCE_DIRS:
        for source in sorted((REPO / directory).rglob("*.py")):
            pyc = Path(importlib.util.cache_from_source(str(source)))
            try:
                head = pyc.read_bytes()[:16]
                st = source.stat()
            except OSError:
                stale.append(str(source.relative_to(REPO)))
                continue
            if len(head) < 16:
                stale.append(str(source.relative_to(REPO)))
                continue
            _magic, flags, mtime, size = struct.unpack("<4sLLL", head)
            if flags == 0 and (
                mtime != int(st.st_mtime) & 0xFFFFFFFF or size != st.st_size & 0xFFFFFFFF
            ):
                stale.append(str(source.relative_to(REPO)))
    return stale


def header(title: str, compiled: str) -> None:
    """The first lines of every benchmark's output: what, when, where."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"== {title} ==")
    print(
        f"{now} | {os.cpu_count()} CPUs | {platform.python_implementation()} "
        f"{platform.python_version()} | load avg {load}"
    )
    print(f"note: {compiled}")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p90(values: Sequence[float]) -> float:
    """90th percentile (linear interpolation between closest ranks)."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def fmt_ms(seconds: float, digits: int = 1) -> str:
    return f"{seconds * 1e3:.{digits}f}"


def rotated(items: Sequence[T], round_no: int) -> list[T]:
    """``items`` starting at a different one each round: round-robin without a fixed first."""
    k = round_no % len(items) if items else 0
    return [*items[k:], *items[:k]]


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], align: str | None = None
) -> None:
    """A plain text table. ``align``: one of l/r per column; default first left, rest right."""
    body = [list(r) for r in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    how = align or "l" + "r" * (len(headers) - 1)

    def line(cells: Sequence[str]) -> str:
        out = [
            c.ljust(w) if a == "l" else c.rjust(w)
            for c, w, a in zip(cells, widths, how, strict=True)
        ]
        return "  ".join(out).rstrip()

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in body:
        print(line(row))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report_stale() -> None:
    """Warn when the project's sources changed under the benchmark (figures are then suspect)."""
    stale = stale_bytecode()
    if stale:
        print(
            "WARNING: these sources changed during the run (their .pyc is stale, so some runs "
            f"compiled them from source): {', '.join(stale)}"
        )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_processes(procs: Sequence[subprocess.Popen[bytes] | None], timeout: float = 35) -> None:
    """SIGTERM every process still running, then wait for each; SIGKILL one that hangs."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.terminate()
    for proc in procs:
        if proc is not None:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
