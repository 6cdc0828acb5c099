"""Idle cost: memory, CPU and wakeups of the supervisor while its app sleeps.

Every variant supervises ``sleep 3600``; all are started together and measured over the same
window (default 30 s) once start-up has settled. Figures are for the supervisor process only,
never the ``sleep``: RSS and USS (memory only this process uses) sampled every second, CPU
seconds (user+system, all threads) over the window, and voluntary context switches summed
over its threads: a process that sleeps until something happens switches out once per wakeup,
so these count wakeups. A bare ``python -c 'time.sleep(...)'`` (the venv interpreter) is the
floor any Python supervisor starts from.

Targets: RSS <= 25 MiB without plugins, <= 45 MiB with all built-in plugins (the default
config: admin, metrics, health; /metrics is scraped once before the window so the metrics
stack is loaded, as under Prometheus); 0 % CPU; no periodic wakeups faster than 1 s
(< 1 wakeup/s).

Usage: .venv/bin/python bench/idle.py [--seconds S] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

if not __package__:  # run as a script: python bench/x.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import (
    DUMB_INIT,
    PYTHON,
    SIDECAR,
    TINI,
    byte_compile,
    child_env,
    header,
    print_table,
    report_stale,
    stop_processes,
    verdict,
)

MIB = 1024 * 1024
RSS_NO_PLUGINS_MIB = 25.0
RSS_ALL_PLUGINS_MIB = 45.0
CPU_PCT_MAX = 0.05  # shown with one decimal: "0.0 %"
WAKEUPS_MAX = 1.0
SLEEP = shutil.which("sleep") or "/bin/sleep"
NO_PLUGINS = "sidecar-run --no-plugins"
DEFAULT = "sidecar-run (default config: admin, metrics, health; scraped once)"
ADMIN_PORT = 0  # set in main(): a free port, so the bench can scrape /metrics once
FLOOR = "python sleeping (floor, not a supervisor)"


@dataclass
class Variant:
    label: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    ps: Any = None  # psutil.Process
    rss: list[int] = field(default_factory=list)
    uss: list[int] = field(default_factory=list)
    cpu0: float = 0.0
    cpu1: float = 0.0
    vol0: int = 0
    vol1: int = 0
    invol0: int = 0
    invol1: int = 0
    threads: int = 0
    error: str = ""


def variants() -> list[Variant]:
    app = [SLEEP, "3600"]
    found = [
        Variant(NO_PLUGINS, [SIDECAR, "--no-plugins", "--", *app]),
        Variant(DEFAULT, [SIDECAR, "--admin", f"127.0.0.1:{ADMIN_PORT}", "--", *app]),
    ]
    if TINI:
        found.append(Variant("tini -s", [TINI, "-s", "--", *app]))
    if DUMB_INIT:
        found.append(Variant("dumb-init", [DUMB_INIT, *app]))
    found.append(Variant(FLOOR, [PYTHON, "-c", "import time; time.sleep(3600)"]))
    return found


def ctx_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches summed over every thread of ``pid``."""
    vol = invol = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError):
            for line in status.read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches:"):
                    invol += int(line.split()[1])
    return vol, invol


def cpu_seconds(ps: Any) -> float:
    t = ps.cpu_times()
    return float(t.user + t.system)


def wait_started(vs: list[Variant], timeout: float) -> None:
    """Until every supervisor has its ``sleep`` child (the floor has none)."""
    deadline = time.monotonic() + timeout
    for v in vs:
        if v.label == FLOOR:
            continue
        while time.monotonic() < deadline:
            assert v.proc is not None
            if v.proc.poll() is not None:
                v.error = f"exited early with {v.proc.returncode}"
                break
            with contextlib.suppress(psutil.Error):
                if any(c.name() == "sleep" for c in v.ps.children()):
                    break
            time.sleep(0.05)
        else:
            v.error = "no sleep child after start-up"


def sample_memory(vs: list[Variant]) -> None:
    for v in vs:
        if v.error:
            continue
        try:
            full = v.ps.memory_full_info()
        except psutil.Error as err:
            v.error = f"gone: {err}"
            continue
        v.rss.append(int(full.rss))
        v.uss.append(int(full.uss))


def scrape_once(port: int) -> None:
    """GET /metrics once: the metrics plugin loads its collectors on the first scrape."""
    import urllib.request

    url = f"http://127.0.0.1:{port}/metrics"
    for _ in range(50):
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                reply.read()
                return
        except OSError:
            time.sleep(0.1)
    print(f"warning: could not scrape {url}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=None, help="window (default 30)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (< 20 s)")
    args = parser.parse_args()
    window = args.seconds or (10.0 if args.quick else 30.0)
    settle = 1.5 if args.quick else 3.0

    compiled = byte_compile()
    header("idle cost of the supervisor", compiled)
    vs = variants()
    env = child_env()
    try:
        for v in vs:
            v.proc = subprocess.Popen(
                v.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            v.ps = psutil.Process(v.proc.pid)
        wait_started(vs, 60)
        # Let one-off start-up work finish (sidecar-run promotes the app to RUNNING after
        # restart.start_seconds = 1 s) so the window sees only steady state.
        time.sleep(settle)
        scrape_once(ADMIN_PORT)
        time.sleep(0.5)
        print(
            f"all {len(vs)} variants started together; settled {settle:g} s; "
            f"measuring over the same {window:g} s window"
        )
        for v in vs:
            if not v.error:
                v.cpu0 = cpu_seconds(v.ps)
                v.vol0, v.invol0 = ctx_switches(v.ps.pid)
        began = time.monotonic()
        while (left := began + window - time.monotonic()) > 0:
            sample_memory(vs)
            time.sleep(min(1.0, left))
        measured = time.monotonic() - began
        for v in vs:
            if v.error:
                continue
            try:
                v.cpu1 = cpu_seconds(v.ps)
                v.vol1, v.invol1 = ctx_switches(v.ps.pid)
                v.threads = int(v.ps.num_threads())
            except psutil.Error as err:
                v.error = f"gone: {err}"
        sample_memory(vs)
    finally:
        stop_processes([v.proc for v in vs])

    floor = next(v for v in vs if v.label == FLOOR)
    floor_rss = floor.rss[-1] if floor.rss else 0
    tini = next((v for v in vs if v.label.startswith("tini")), None)
    tini_rss = tini.rss[-1] if tini and tini.rss else 0

    def rss_row(v: Variant) -> list[str]:
        if v.error or not v.rss:
            return [v.label, *["-"] * 9]
        cpu = v.cpu1 - v.cpu0
        return [
            v.label,
            f"{v.rss[-1] / MIB:.1f}",
            f"{max(v.rss) / MIB:.1f}",
            f"{v.uss[-1] / MIB:.1f}",
            f"{(v.rss[-1] - floor_rss) / MIB:+.1f}",
            f"{(v.rss[-1] - tini_rss) / MIB:+.1f}" if tini_rss else "-",
            str(v.threads),
            f"{cpu * 1e3:.0f}",
            f"{cpu / measured * 100:.2f}",
            f"{(v.vol1 - v.vol0) / measured:.2f} ({v.vol1 - v.vol0}, {v.invol1 - v.invol0})",
        ]

    print()
    print("Supervisor process only (not the sleep). MiB = 2^20 bytes.")
    print_table(
        [
            "variant",
            "RSS MiB",
            "RSS max",
            "USS MiB",
            "Δ RSS vs floor",
            "Δ RSS vs tini",
            "threads",
            "CPU ms",
            "CPU %",
            "wakeups/s (vol, invol)",
        ],
        [rss_row(v) for v in vs],
    )
    print(
        "CPU is counted in clock ticks (10 ms), so one tick over the window is "
        f"{1 / measured:.3f} %; wakeups/s = voluntary context switches / window; "
        "(vol, invol) = the counts"
    )
    for v in vs:
        if v.error:
            print(f"WARNING: {v.label}: {v.error}")
    print()
    print(f"Measured over {measured:.1f} s; all figures above come from this one shared window.")
    for v in vs:
        if v.label not in (NO_PLUGINS, DEFAULT) or v.error or not v.rss:
            continue
        limit = RSS_NO_PLUGINS_MIB if v.label == NO_PLUGINS else RSS_ALL_PLUGINS_MIB
        rss = max(v.rss) / MIB
        cpu_pct = (v.cpu1 - v.cpu0) / measured * 100
        wakeups = (v.vol1 - v.vol0) / measured
        what = "no plugins" if v.label == NO_PLUGINS else "all built-in plugins"
        print(
            f"TARGET  {v.label}: RSS <= {limit:g} MiB ({what}): max {rss:.1f} MiB  "
            f"{verdict(rss <= limit)}"
        )
        print(
            f"        CPU 0 % (< {CPU_PCT_MAX} %): {cpu_pct:.2f} %  "
            f"{verdict(cpu_pct < CPU_PCT_MAX)}"
        )
        print(
            f"        wakeups < {WAKEUPS_MAX:g}/s: {wakeups:.2f}/s  "
            f"{verdict(wakeups < WAKEUPS_MAX)}"
        )
    report_stale()


if __name__ == "__main__":
    main()
