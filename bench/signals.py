"""Signal forwarding latency: signal sent to the supervisor → the app's handler runs.

The app is a small Python program that installs handlers for SIGUSR1 and SIGTERM; each handler
first reads ``time.monotonic_ns()`` (CLOCK_MONOTONIC: one clock for every process on the host)
and writes it to a FIFO. The benchmark reads the same clock just before ``os.kill`` and takes
the difference. Every variant runs the same app, so the app's own cost (Python noticing the
signal between bytecodes) is in every row, and the ``direct`` row (the app signalled itself, no
supervisor) is the floor.

SIGUSR1 is forwarded like SIGTERM but starts no stop, so one process per variant gives many
samples: all variants run side by side and are signalled round-robin, one signal at a time,
waiting for the handler's record and a short gap (the supervisor is idle when the next signal
arrives). A few real SIGTERMs follow, one per fresh process: for sidecar-run that is the stop
path (shutdown begins, then the app's stop signal is sent), not the plain forward.

Target: sidecar-run's median within 0.5 ms of tini's.

Usage: .venv/bin/python bench/signals.py [--runs N] [--term-runs N] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

if not __package__:  # run as a script: python bench/x.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import (
    DUMB_INIT,
    PYTHON,
    SIDECAR,
    TINI,
    add_common_args,
    byte_compile,
    child_env,
    header,
    median,
    p90,
    print_table,
    report_stale,
    rotated,
    verdict,
)

TARGET_MS = 0.5
RECORD = struct.Struct("<qq")  # (signal number, CLOCK_MONOTONIC ns), or (0, pid) when ready
APP = """\
import os, signal, struct, sys, time
out = os.open(sys.argv[1], os.O_WRONLY)
def handler(signum, frame):
    now = time.monotonic_ns()
    os.write(out, struct.pack("<qq", signum, now))
    if signum == signal.SIGTERM:
        os._exit(0)
signal.signal(signal.SIGUSR1, handler)
signal.signal(signal.SIGTERM, handler)
os.write(out, struct.pack("<qq", 0, os.getpid()))
while True:
    signal.pause()
"""


@dataclass
class Variant:
    label: str
    prefix: list[str]
    usr1: list[float] = field(default_factory=list)  # seconds
    term: list[float] = field(default_factory=list)
    term_exit: list[float] = field(default_factory=list)  # SIGTERM sent → supervisor exited
    lost_usr1: int = 0
    lost_term: int = 0
    bad_exits: list[str] = field(default_factory=list)


@dataclass
class Running:
    variant: Variant
    proc: subprocess.Popen[bytes]
    fifo: int
    fifo_path: str
    stderr: IO[bytes]
    app_pid: int = 0


def variants() -> list[Variant]:
    found = [Variant("direct (no supervisor)", [])]
    if TINI:
        found.append(Variant("tini -s", [TINI, "-s", "--"]))
    if DUMB_INIT:
        found.append(Variant("dumb-init", [DUMB_INIT]))
    found.append(Variant("sidecar-run --no-plugins", [SIDECAR, "--no-plugins", "--"]))
    found.append(
        Variant(
            "sidecar-run --no-plugins --forward-to child",
            [SIDECAR, "--no-plugins", "--forward-to", "child", "--"],
        )
    )
    return found


def read_record(fd: int, timeout: float) -> tuple[int, int] | None:
    """One (signal, ns) record from the FIFO, or None after ``timeout`` seconds."""
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return None
    data = os.read(fd, RECORD.size)
    if len(data) != RECORD.size:  # EOF: the app is gone
        return None
    signum, ns = RECORD.unpack(data)
    return int(signum), int(ns)


def drain(fd: int) -> None:
    while read_record(fd, 0) is not None:
        pass


def start_all(vs: list[Variant], tmp: Path, env: dict[str, str], tag: str) -> list[Running]:
    """Start every variant's app at once; return once each has reported ready."""
    running = []
    for i, v in enumerate(vs):
        path = tmp / f"{tag}-{i}.fifo"
        os.mkfifo(path)
        fifo = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        err = (tmp / f"{tag}-{i}.stderr").open("w+b")
        proc = subprocess.Popen(
            [*v.prefix, PYTHON, "-c", APP, str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
        )
        running.append(Running(v, proc, fifo, str(path), err))
    for r in running:
        record = read_record(r.fifo, 60)
        if record is None or record[0] != 0:
            msg = f"{r.variant.label}: the app did not report ready; stderr: {stderr_tail(r)}"
            stop_all(running)
            raise RuntimeError(msg)
        r.app_pid = record[1]
    return running


def stderr_tail(r: Running) -> str:
    r.stderr.seek(0)
    return r.stderr.read().decode(errors="replace")[-500:].strip()


def kill_app(r: Running) -> None:
    """SIGKILL the app if it is still there: it outlives a supervisor that died or was killed."""
    if not r.app_pid:
        return
    with contextlib.suppress(psutil.Error):
        app = psutil.Process(r.app_pid)
        if r.fifo_path in app.cmdline():  # ours, not a reused pid
            app.kill()


def stop_all(running: list[Running]) -> None:
    """SIGKILL whatever is left: supervisors and, first, their apps (which would outlive them)."""
    for r in running:
        kill_app(r)
        if r.proc.poll() is None:
            r.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            r.proc.wait(timeout=10)
        os.close(r.fifo)
        r.stderr.close()


def signal_once(r: Running, sig: int, timeout: float = 2.0) -> float | None:
    drain(r.fifo)
    sent = time.monotonic_ns()
    os.kill(r.proc.pid, sig)
    record = read_record(r.fifo, timeout)
    if record is None or record[0] != sig:
        return None
    return (record[1] - sent) / 1e9


def kill_apps(running: list[Running]) -> None:
    """End the apps (SIGTERM: handled, they exit), then the supervisors."""
    for r in running:
        if r.proc.poll() is None:
            os.kill(r.proc.pid, signal.SIGTERM)
    for r in running:
        try:
            r.proc.wait(timeout=35)
        except subprocess.TimeoutExpired:
            r.proc.kill()
    stop_all(running)


def usr1_samples(vs: list[Variant], n: int, tmp: Path, env: dict[str, str]) -> None:
    running = start_all(vs, tmp, env, "usr1")
    try:
        for warm in range(5):
            for r in rotated(running, warm):
                signal_once(r, signal.SIGUSR1)
                time.sleep(0.003)
        for i in range(n):
            for r in rotated(running, i):
                latency = signal_once(r, signal.SIGUSR1)
                if latency is None:
                    r.variant.lost_usr1 += 1
                else:
                    r.variant.usr1.append(latency)
                time.sleep(0.003 + (i % 5) * 0.001)  # 3-7 ms: the supervisor is idle again
    finally:
        kill_apps(running)


def term_samples(vs: list[Variant], n: int, tmp: Path, env: dict[str, str]) -> None:
    for i in range(n):
        running = start_all(vs, tmp, env, f"term{i}")
        try:
            time.sleep(1.2)  # past restart.start_seconds (1 s): the app is RUNNING, as usual
            for r in rotated(running, i):
                sent = time.monotonic()
                latency = signal_once(r, signal.SIGTERM, timeout=10)
                try:
                    status = r.proc.wait(timeout=35)
                    r.variant.term_exit.append(time.monotonic() - sent)
                    if status != 0:  # the app exits 0 in its handler; so should the supervisor
                        r.variant.bad_exits.append(f"exit {status}: {stderr_tail(r)}")
                except subprocess.TimeoutExpired:
                    r.variant.bad_exits.append("still running 35 s after SIGTERM")
                if latency is None:
                    r.variant.lost_term += 1
                else:
                    r.variant.term.append(latency)
                time.sleep(0.05)
        finally:
            stop_all(running)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_args(parser, runs=200, runs_help="SIGUSR1 samples per variant")
    parser.add_argument(
        "--term-runs", type=int, default=None, help="SIGTERM samples per variant (default 10)"
    )
    args = parser.parse_args()
    n = args.runs or (40 if args.quick else 200)
    term_n = args.term_runs if args.term_runs is not None else (2 if args.quick else 10)

    compiled = byte_compile()
    header("signal forwarding latency", compiled)
    print(
        f"SIGUSR1: {n} samples per variant, variants side by side, signalled round-robin "
        f"(3-7 ms gaps); SIGTERM: {term_n} per variant, a fresh process each"
    )
    vs = variants()
    env = child_env()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as tmp:
        usr1_samples(vs, n, Path(tmp), env)
        term_samples(vs, term_n, Path(tmp), env)
    elapsed = time.monotonic() - started

    direct = median(vs[0].usr1)
    tini = next((v for v in vs if v.label.startswith("tini")), None)
    tini_usr1 = median(tini.usr1) if tini else float("nan")
    tini_term = median(tini.term) if tini else float("nan")
    print()
    print("Latency, signal sent → app's handler ran (ms)")
    print_table(
        [
            "variant",
            "USR1 median",
            "p90",
            "Δ vs tini",
            "Δ vs direct",
            "TERM median",
            "TERM p90",
            "Δ vs tini",
            "TERM→exit median",
        ],
        [
            [
                v.label,
                ms(median(v.usr1)),
                ms(p90(v.usr1)),
                f"{(median(v.usr1) - tini_usr1) * 1e3:+.3f}",
                f"{(median(v.usr1) - direct) * 1e3:+.3f}",
                ms(median(v.term)),
                ms(p90(v.term)),
                f"{(median(v.term) - tini_term) * 1e3:+.3f}",
                f"{median(v.term_exit) * 1e3:.1f}",
            ]
            for v in vs
        ],
    )
    print(
        "TERM→exit: SIGTERM sent → supervisor process exited (the app exits in its handler); "
        "for direct, the app itself."
    )
    for v in vs:
        if v.lost_usr1 or v.lost_term:
            print(
                f"WARNING: {v.label}: no handler record within the timeout for "
                f"{v.lost_usr1} SIGUSR1 and {v.lost_term} SIGTERM"
            )
        for what in v.bad_exits[:3]:
            print(f"WARNING: {v.label}: after SIGTERM: {what}")
    print()
    print(f"Measured in {elapsed:.0f} s; all figures above come from this one interleaved run.")
    for v in vs:
        if not v.label.startswith("sidecar-run"):
            continue
        d_usr1 = (median(v.usr1) - tini_usr1) * 1e3
        d_term = (median(v.term) - tini_term) * 1e3
        print(
            f"TARGET  {v.label}: USR1 median within {TARGET_MS} ms of tini: "
            f"Δ {d_usr1:+.3f} ms  {verdict(d_usr1 <= TARGET_MS)}"
        )
        print(
            f"        TERM (stop path, n={len(v.term)}) median within {TARGET_MS} ms of tini: "
            f"Δ {d_term:+.3f} ms  {verdict(d_term <= TARGET_MS)}"
        )
    report_stale()


if __name__ == "__main__":
    main()
