"""Health probes: CPU of the runtime probing the app, and the latency of an exec probe.

1. **CPU.** Three variants run side by side over the same window (default 60 s), each beside
   the same helper process that serves their targets (its CPU is not counted):
   ``sidecar-run`` without probes (the baseline), ``sidecar-run`` with three probes at a 1 s
   period (``http``, ``tcp``, ``exec: sh -c 'exit 0'``), and a bash loop doing the same
   checks with ``curl``, bash's ``/dev/tcp`` and ``sh`` then ``sleep 1`` (what a person would
   write instead). CPU is user+system of the process and of its reaped children (the probes,
   curl, sh). Rounds are counted by the helper: one HTTP hit per round per variant.
2. **Exec probe latency.** The time from starting an exec probe to its outcome, through the
   core's spawn API, reaper and the plugin's ``ExecCheck`` (pipe, group kill), measured in this
   process on a real core (``sidecar_runtime.testing``), against ``sh -c 'exit 0'`` run from a
   bash loop (fork+exec+wait) and a bare ``os.posix_spawn`` + ``waitpid`` from Python.

Targets: three probes at 1 s cost under 1 % of one core above the baseline; an exec probe takes
at most twice the bash loop's fork+exec+wait.

Usage: .venv/bin/python bench/health.py [--seconds S] [--samples N] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

if not __package__:  # run as a script: python bench/x.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import (
    PYTHON,
    SIDECAR,
    byte_compile,
    child_env,
    fmt_ms,
    header,
    median,
    p90,
    print_table,
    report_stale,
    stop_processes,
    verdict,
)

CPU_TARGET_PCT = 1.0
LATENCY_TARGET_RATIO = 2.0
PROBE = ["sh", "-c", "exit 0"]
SLEEP = shutil.which("sleep") or "/bin/sleep"
BASH = shutil.which("bash")
CURL = shutil.which("curl")

#: Serves one HTTP port and one TCP port per variant; prints the ports, counts HTTP hits.
HELPER = textwrap.dedent(
    """
    import http.server, socket, sys, threading
    n = int(sys.argv[1])
    hits = [0] * n

    def http_for(i):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                hits[i] += 1
                self.send_response(200)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"ok\\n")

            def log_message(self, *args):
                pass

        return http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def tcp_loop(sock):
        while True:
            conn, _ = sock.accept()
            conn.close()

    ports = []
    for i in range(n):
        server = http_for(i)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        sock = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=tcp_loop, args=(sock,), daemon=True).start()
        ports.append(f"{server.server_address[1]}:{sock.getsockname()[1]}")
    print(" ".join(ports), flush=True)
    for line in sys.stdin:
        print(" ".join(map(str, hits)), flush=True)
    """
)


@dataclass
class Variant:
    label: str
    index: int  # its targets on the helper
    proc: subprocess.Popen[bytes] | None = None
    ps: Any = None
    cpu0: tuple[float, float] = (0.0, 0.0)
    cpu1: tuple[float, float] = (0.0, 0.0)
    rounds: int = 0
    error: str = ""

    @property
    def own(self) -> float:
        return self.cpu1[0] - self.cpu0[0]

    @property
    def children(self) -> float:
        return self.cpu1[1] - self.cpu0[1]

    @property
    def total(self) -> float:
        return self.own + self.children


def cpu(ps: Any) -> tuple[float, float]:
    """(own, reaped children) CPU seconds, user+system."""
    t = ps.cpu_times()
    return float(t.user + t.system), float(t.children_user + t.children_system)


def probe_config(directory: Path, http_port: int, tcp_port: int) -> Path:
    path = directory / "probes.toml"
    fields = 'period = "1s"\ntimeout = "900ms"\n'
    path.write_text(
        f'[[plugins.health.probes]]\nkind = "readiness"\nhttp = "http://127.0.0.1:{http_port}/"\n'
        f"{fields}"
        f'[[plugins.health.probes]]\nkind = "liveness"\ntcp = "127.0.0.1:{tcp_port}"\n{fields}'
        f'[[plugins.health.probes]]\nkind = "readiness"\nexec = ["sh", "-c", "exit 0"]\n'
        f"{fields}",
        encoding="utf-8",
    )
    return path


def shell_loop(http_port: int, tcp_port: int) -> list[str]:
    assert BASH is not None
    assert CURL is not None
    script = (
        "while :; do "
        f"curl -fsS -o /dev/null --max-time 1 http://127.0.0.1:{http_port}/; "
        f": </dev/tcp/127.0.0.1/{tcp_port}; "
        "sh -c 'exit 0'; "
        "sleep 1; done"
    )
    return [BASH, "-c", script]


def measure_cpu(window: float, settle: float) -> None:
    """Part 1: the three variants over one window."""
    variants = [Variant("sidecar-run, no probes (baseline)", 0)]
    variants.append(Variant("sidecar-run, 3 probes every 1 s", 1))
    loop_ok = BASH is not None and CURL is not None
    if loop_ok:
        variants.append(Variant("bash loop: curl + /dev/tcp + sh, sleep 1", 2))
    helper = subprocess.Popen(
        [PYTHON, "-c", HELPER, str(len(variants))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert helper.stdin is not None
    assert helper.stdout is not None
    env = child_env()
    try:
        ports = [tuple(map(int, p.split(":"))) for p in helper.stdout.readline().split()]
        with tempfile.TemporaryDirectory() as tmp:
            config = probe_config(Path(tmp), *ports[1])
            argv = {
                0: [SIDECAR, "--admin", "off", "--", SLEEP, "3600"],
                1: [SIDECAR, "--admin", "off", "--config", str(config), "--", SLEEP, "3600"],
            }
            if loop_ok:
                argv[2] = shell_loop(*ports[2])
            for v in variants:
                v.proc = subprocess.Popen(
                    argv[v.index],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=env,
                )
                v.ps = psutil.Process(v.proc.pid)
            time.sleep(settle)  # start-up done, RUNNING (1 s), probes going
            helper.stdin.write("\n")
            helper.stdin.flush()
            hits0 = list(map(int, helper.stdout.readline().split()))
            for v in variants:
                v.cpu0 = cpu(v.ps)
            time.sleep(window)
            helper.stdin.write("\n")
            helper.stdin.flush()
            hits1 = list(map(int, helper.stdout.readline().split()))
            for v in variants:
                try:
                    v.cpu1 = cpu(v.ps)
                except psutil.Error as err:
                    v.error = f"gone: {err}"
                v.rounds = hits1[v.index] - hits0[v.index]
    finally:
        stop_processes([v.proc for v in variants])
        helper.kill()
        helper.wait()

    print(f"\n1. CPU over the same {window:g} s window (after {settle:g} s of start-up)")
    rows = []
    for v in variants:
        if v.error:
            rows.append([v.label, v.error, "", "", "", "", ""])
            continue
        per_round = fmt_ms(v.total / v.rounds, 2) if v.rounds else "-"
        rows.append(
            [
                v.label,
                f"{v.own:.3f}",
                f"{v.children:.3f}",
                f"{v.total:.3f}",
                f"{100 * v.total / window:.2f}",
                str(v.rounds) if v.index else "-",
                per_round if v.index else "-",
            ]
        )
    print_table(["variant", "own s", "children s", "total s", "% core", "rounds", "ms/round"], rows)
    base, probes = variants[0], variants[1]
    if base.error or probes.error or not probes.rounds:
        print("CPU: not measured (a variant failed)")
        return
    added = probes.total - base.total
    added_pct = 100 * added / window
    print(
        f"probes add {added:.3f} CPU s = {added_pct:.2f} % of one core "
        f"= {fmt_ms(added / probes.rounds, 2)} ms per round of 3 checks "
        f"(exec probes' own processes: {probes.children - base.children:.3f} s)"
    )
    if loop_ok and not variants[2].error and variants[2].rounds:
        loop = variants[2]
        ratio = (added / probes.rounds) / (loop.total / loop.rounds)
        print(
            f"per round: sidecar-run probes / bash loop = {ratio:.2f}x "
            f"({fmt_ms(added / probes.rounds, 2)} ms vs {fmt_ms(loop.total / loop.rounds, 2)} ms)"
        )
    else:
        print("reference: bash and curl are needed for the shell loop; skipped")
    print(
        f"TARGET  3 probes at 1 s under {CPU_TARGET_PCT:g} % of one core above the baseline: "
        f"{verdict(added_pct < CPU_TARGET_PCT)} ({added_pct:.2f} %)"
    )


async def _exec_latency(samples: int) -> list[float]:
    """Exec probes through a real core: ctx.spawn, the reaper, ExecCheck."""
    import anyio
    import msgspec
    from anyio.abc import TaskStatus
    from sidecar_plugins.health._probes import ExecCheck

    from sidecar_runtime import PluginContext
    from sidecar_runtime.testing import plugin_harness

    class NoConfig(msgspec.Struct, frozen=True):
        pass

    contexts: list[PluginContext] = []

    class Grab:
        Config = NoConfig

        def __init__(self, config: NoConfig, /) -> None:
            pass

        async def run(
            self, ctx: PluginContext, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
        ) -> None:
            contexts.append(ctx)
            task_status.started()
            await anyio.sleep_forever()

    durations = []
    async with plugin_harness(Grab, name="bench"):
        check = ExecCheck(PROBE, contexts[0].spawn, 10240)
        for _ in range(max(samples // 10, 3)):  # warm-up
            await check()
        for _ in range(samples):
            began = time.perf_counter()
            outcome = await check()
            durations.append(time.perf_counter() - began)
            assert outcome.ok, outcome
    return durations


def bare_spawn(samples: int) -> list[float]:
    """The floor: os.posix_spawn + waitpid of the same command from Python."""
    path = shutil.which(PROBE[0]) or PROBE[0]
    durations = []
    for _ in range(samples):
        began = time.perf_counter()
        pid = os.posix_spawn(path, PROBE, dict(os.environ))
        os.waitpid(pid, 0)
        durations.append(time.perf_counter() - began)
    return durations


def bash_loop(samples: int) -> float | None:
    """Seconds per ``sh -c 'exit 0'`` from a bash loop (fork+exec+wait), or None."""
    if BASH is None:
        return None
    script = "TIMEFORMAT=%R; time (i=0; while [ $i -lt $1 ]; do sh -c 'exit 0'; i=$((i+1)); done)"
    result = subprocess.run(
        [BASH, "-c", script, "bash", str(samples)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return float(result.stderr.strip().splitlines()[-1]) / samples


def stats(durations: list[float]) -> list[str]:
    """Median, p90 and min in ms."""
    return [fmt_ms(median(durations), 2), fmt_ms(p90(durations), 2), fmt_ms(min(durations), 2)]


def measure_latency(samples: int) -> None:
    """Part 2: exec probe latency against the references."""
    import anyio

    probe = anyio.run(_exec_latency, samples, backend="asyncio")
    floor = bare_spawn(samples)
    loop = bash_loop(samples)
    print(f"\n2. Exec probe latency: {' '.join(PROBE)!r}, {samples} runs each")
    rows = [
        ["sidecar-run exec probe (spawn API, reaper, pipe, group kill)", *stats(probe)],
        ["python os.posix_spawn + waitpid (floor)", *stats(floor)],
    ]
    if loop is not None:
        rows.append(["bash loop: sh -c 'exit 0' (mean)", fmt_ms(loop, 2), "-", "-"])
    print_table(["variant", "median ms", "p90 ms", "min ms"], rows)
    print(f"exec probe / posix_spawn floor = {median(probe) / median(floor):.2f}x (median)")
    if loop is not None:
        ratio = median(probe) / loop
        print(f"exec probe / bash loop = {ratio:.2f}x")
        print(
            f"TARGET  exec probe within {LATENCY_TARGET_RATIO:g}x of the bash loop: "
            f"{verdict(ratio <= LATENCY_TARGET_RATIO)} ({ratio:.2f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=None, help="CPU window (default 60)")
    parser.add_argument("--samples", type=int, default=None, help="exec runs (default 300)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (< 20 s)")
    args = parser.parse_args()
    window = args.seconds or (8.0 if args.quick else 60.0)
    samples = args.samples or (50 if args.quick else 300)
    compiled = byte_compile()
    header("health probes: CPU and exec latency", compiled)
    measure_cpu(window, settle=2.5)
    with contextlib.suppress(KeyboardInterrupt):
        measure_latency(samples)
    report_stale()


if __name__ == "__main__":
    main()
