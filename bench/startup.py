"""Start-up cost of sidecar-run against tini, dumb-init, bare ``true`` and ``python -c pass``.

1. Wall time of ``CMD -- true`` from launch to exit, every command run round-robin in one loop
   so that drift on a noisy machine hits all of them alike. Target: sidecar-run without plugins
   within 100 ms of ``python -c pass`` (the same interpreter, with the same site-packages).
2. Launch → app exec: the app is ``date +%s%N`` (coreutils, no interpreter), which prints the
   wall clock in ns as soon as it runs; launch is ``time.time_ns()`` just before spawning. The
   same probe launched bare gives the floor (our spawn + date's own start-up); the difference
   is what the supervisor adds before the app runs. The rest (app exec → supervisor exit) is
   the app's run plus the supervisor's shutdown and interpreter teardown.
3. Where the time goes: ``python -X importtime -m sidecar_runtime ... -- true``.

``python -c 'import asyncio'`` is timed too, as a reference: the floor of anything built on
asyncio with this interpreter.

Usage: .venv/bin/python bench/startup.py [--runs N] [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    fmt_ms,
    header,
    median,
    p90,
    print_table,
    report_stale,
    rotated,
    verdict,
)

TARGET_MS = 100.0
TRUE = shutil.which("true") or "/bin/true"
DATE = shutil.which("date") or "/bin/date"
NO_PLUGINS = [SIDECAR, "--no-plugins", "--"]
DEFAULT_CONFIG = [SIDECAR, "--admin", "127.0.0.1:0", "--"]  # port 0: runs never collide


@dataclass
class Variant:
    label: str
    prefix: list[str]
    walls: list[float] = field(default_factory=list)
    # probe only: seconds from launch to the app's first instruction, and from there to exit
    to_exec: list[float] = field(default_factory=list)
    after_exec: list[float] = field(default_factory=list)
    failures: int = 0
    last_error: str = ""


def supervisors() -> list[tuple[str, list[str]]]:
    """(label, argv prefix) of every supervisor we compare; missing tools are left out."""
    found: list[tuple[str, list[str]]] = [("bare", [])]
    if TINI:
        found.append(("tini -s --", [TINI, "-s", "--"]))
    if DUMB_INIT:
        found.append(("dumb-init", [DUMB_INIT]))
    found.append(("sidecar-run --no-plugins --", NO_PLUGINS))
    found.append(("sidecar-run --admin 127.0.0.1:0 --", DEFAULT_CONFIG))
    return found


def time_wall(v: Variant, env: dict[str, str]) -> None:
    argv = v.prefix
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        check=False,
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        v.failures += 1
        v.last_error = f"exit {proc.returncode}: {proc.stderr.decode(errors='replace')[-300:]}"
        return
    v.walls.append(elapsed)


def time_probe(v: Variant, env: dict[str, str]) -> None:
    argv = [*v.prefix, DATE, "+%s%N"]
    launched = time.time_ns()
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, env=env, check=False)
    ended = time.time_ns()
    try:
        ran = int(proc.stdout.split()[0])
    except (ValueError, IndexError):
        ran = 0
    if proc.returncode != 0 or not ran:
        v.failures += 1
        v.last_error = f"exit {proc.returncode}: {proc.stderr.decode(errors='replace')[-300:]}"
        return
    v.to_exec.append((ran - launched) / 1e9)
    v.after_exec.append((ended - ran) / 1e9)


# -- import-time breakdown ------------------------------------------------------------------------

_OURS = ("sidecar_runtime", "sidecar_plugins")


def _top(name: str) -> str:
    return name.split(".")[0]


def _is_stdlib(name: str) -> bool:
    return _top(name) in sys.stdlib_module_names


@dataclass
class Imports:
    """Median self/cumulative µs per module over several ``-X importtime`` runs.

    ``owner``: who the module is paid for. Walking from the outermost importer inwards, the
    first third-party package (``aiohttp`` for ``attr``, ``msgspec`` for ``typing_extensions``);
    else our own package (the stdlib it imports directly, e.g. ``ctypes``); else the outermost
    module itself (``asyncio``, imported at run time by anyio's backend loader).
    """

    self_us: dict[str, float]
    cum_us: dict[str, float]
    depth: dict[str, int]
    owner: dict[str, str]


def _owners(entries: list[tuple[str, int]]) -> dict[str, str]:
    owner: dict[str, str] = {}
    chain: list[str] = []  # the importers of the current line, outermost first
    for name, depth in reversed(entries):  # importtime prints children first: reverse it
        del chain[depth:]
        path = [*chain, name]
        third = next((m for m in path if not _is_stdlib(m) and _top(m) not in _OURS), None)
        ours = next((m for m in path if _top(m) in _OURS), None)
        owner.setdefault(name, _top(third or ours or path[0]))
        chain.append(name)
    return owner


def importtime(argv: Sequence[str], runs: int, env: dict[str, str]) -> Imports:
    selfs: dict[str, list[float]] = defaultdict(list)
    cums: dict[str, list[float]] = defaultdict(list)
    depth: dict[str, int] = {}
    owner: dict[str, str] = {}
    for _ in range(runs):
        proc = subprocess.run(
            [PYTHON, "-X", "importtime", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            check=False,
        )
        entries: list[tuple[str, int]] = []
        for raw in proc.stderr.decode(errors="replace").splitlines():
            if not raw.startswith("import time:") or "imported package" in raw:
                continue
            parts = raw[len("import time:") :].split("|")
            if len(parts) != 3:
                continue
            name = parts[2].rstrip()
            stripped = name.lstrip()
            level = (len(name) - len(stripped) - 1) // 2
            entries.append((stripped, level))
            depth.setdefault(stripped, level)
            selfs[stripped].append(float(parts[0]))
            cums[stripped].append(float(parts[1]))
        for name, who in _owners(entries).items():
            owner.setdefault(name, who)
    return Imports(
        {k: median(v) for k, v in selfs.items()},
        {k: median(v) for k, v in cums.items()},
        depth,
        owner,
    )


def by_owner(imp: Imports, exclude: set[str]) -> dict[str, list[tuple[str, float]]]:
    """Modules (name, self µs) grouped by owner, leaving out those in ``exclude``."""
    groups: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for name, us in imp.self_us.items():
        if name not in exclude:
            groups[imp.owner.get(name, _top(name))].append((name, us))
    return dict(groups)


def import_report(runs: int, env: dict[str, str]) -> None:
    base = importtime(["-c", "pass"], runs, env)
    off = importtime(["-m", "sidecar_runtime", "--no-plugins", "--", TRUE], runs, env)
    on = importtime(["-m", "sidecar_runtime", "--admin", "127.0.0.1:0", "--", TRUE], runs, env)
    baseline = set(base.self_us)
    print()
    print(
        "Import breakdown: python -X importtime -m sidecar_runtime --no-plugins -- true "
        f"(median of {runs} run(s); importtime inflates absolute figures: read them as shares)"
    )
    print("Top 10 by cumulative time (indent = nesting; * = python -c pass imports it too):")
    top = sorted(off.cum_us, key=lambda k: off.cum_us[k], reverse=True)[:10]
    print_table(
        ["module", "cumulative ms", "self ms"],
        [
            [
                "  " * off.depth[k] + k + (" *" if k in baseline else ""),
                f"{off.cum_us[k] / 1e3:.1f}",
                f"{off.self_us[k] / 1e3:.1f}",
            ]
            for k in top
        ],
    )
    off_g = by_owner(off, baseline)
    on_g = by_owner(on, baseline)

    def total(groups: dict[str, list[tuple[str, float]]], key: str) -> float:
        return sum(us for _, us in groups.get(key, []))

    print()
    print(
        "Import time beyond python -c pass, by who pulls it in (self times summed; a package's "
        "row includes the stdlib modules it is first to import):"
    )
    owners = sorted(set(off_g) | set(on_g), key=lambda k: total(on_g, k), reverse=True)
    rows = []
    for who in owners:
        mods = sorted(on_g.get(who, []) or off_g.get(who, []), key=lambda m: m[1], reverse=True)
        biggest = ", ".join(name for name, _ in mods[:3])
        rows.append(
            [
                who,
                f"{total(off_g, who) / 1e3:.1f}",
                f"{total(on_g, who) / 1e3:.1f}",
                str(len(on_g.get(who, []) or off_g.get(who, []))),
                biggest,
            ]
        )
    all_off = sum(total(off_g, k) for k in off_g)
    all_on = sum(total(on_g, k) for k in on_g)
    rows.append(
        [
            "TOTAL",
            f"{all_off / 1e3:.1f}",
            f"{all_on / 1e3:.1f}",
            f"{len(set(off.self_us) - baseline)}/{len(set(on.self_us) - baseline)}",
            "",
        ]
    )
    print_table(
        ["owner", "--no-plugins ms", "default ms", "modules", "largest (by self time)"],
        rows,
        align="lrrrl",
    )
    print(
        "(modules loaded with importlib.import_module, such as anyio's asyncio backend and "
        "entry-point plugins, are not listed by importtime; what they import shows up at the "
        "outermost level, e.g. asyncio, hmac)"
    )


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_common_args(parser, runs=30, runs_help="runs of each command")
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 30)
    imp_runs = 1 if args.quick else 3

    compiled = byte_compile()
    header("sidecar-run start-up", compiled)
    env = child_env()

    python_pass = Variant("python -c pass (venv python)", [PYTHON, "-c", "pass"])
    walls = [
        Variant(f"{label} true".replace("bare ", ""), [*prefix, TRUE])
        for label, prefix in supervisors()
    ]
    # Not a target: the floor of any asyncio-based supervisor on this interpreter.
    py_asyncio = Variant("python -c 'import asyncio' (ref.)", [PYTHON, "-c", "import asyncio"])
    walls[len(walls) - 2 : len(walls) - 2] = [python_pass, py_asyncio]
    probes = [Variant(label, prefix) for label, prefix in supervisors()]
    jobs = [(v, time_wall) for v in walls] + [(v, time_probe) for v in probes]
    print(
        f"{runs} rounds; each round runs all {len(jobs)} commands once, round-robin "
        "(starting point rotated each round); stdin/stdout/stderr not a terminal"
    )
    # One untimed warm-up round (page cache, first-run costs); --quick skips it.
    for v, fn in [] if args.quick else jobs:
        fn(v, env)
    for v, _ in jobs:
        v.walls.clear()
        v.to_exec.clear()
        v.after_exec.clear()
        v.failures = 0
    started = time.monotonic()
    for r in range(runs):
        for v, fn in rotated(jobs, r):
            fn(v, env)
    elapsed = time.monotonic() - started

    py = median(python_pass.walls)
    tini_wall = next((median(v.walls) for v in walls if v.label.startswith("tini")), float("nan"))
    print()
    print("Wall time, launch to exit (ms)")
    print_table(
        ["command", "median", "p90", "min", "Δ vs python -c pass", "x tini"],
        [
            [
                v.label,
                fmt_ms(median(v.walls)),
                fmt_ms(p90(v.walls)),
                fmt_ms(min(v.walls, default=float("nan"))),
                f"{(median(v.walls) - py) * 1e3:+.1f}",
                f"{median(v.walls) / tini_wall:.0f}x" if tini_wall else "-",
            ]
            for v in walls
        ],
    )

    bare_exec = median(probes[0].to_exec)
    bare_after = median(probes[0].after_exec)
    print()
    print(
        "Launch → app exec (app = date +%s%N, which prints its start time; launch = "
        "time.time_ns() just before spawn). 'bare' = the probe spawned directly by this "
        "script: the floor that every row includes."
    )
    print_table(
        [
            "supervisor",
            "→exec median",
            "p90",
            "Δ vs bare",
            "exec→exit median",
            "Δ vs bare",
        ],
        [
            [
                v.label,
                fmt_ms(median(v.to_exec), 2),
                fmt_ms(p90(v.to_exec), 2),
                f"{(median(v.to_exec) - bare_exec) * 1e3:+.2f}",
                fmt_ms(median(v.after_exec), 2),
                f"{(median(v.after_exec) - bare_after) * 1e3:+.2f}",
            ]
            for v in probes
        ],
    )
    failed = [v for v, _ in jobs if v.failures]
    for v in failed:
        print(f"WARNING: {v.label}: {v.failures} failed run(s); last: {v.last_error.strip()}")

    import_report(imp_runs, env)

    off = next(v for v in walls if "--no-plugins" in v.label)
    delta_ms = (median(off.walls) - py) * 1e3
    print()
    print(f"Measured in {elapsed:.0f} s; all figures above come from this one interleaved run.")
    print(
        f"TARGET  sidecar-run --no-plugins -- true within {TARGET_MS:.0f} ms of python -c pass: "
        f"{median(off.walls) * 1e3:.1f} vs {py * 1e3:.1f} ms → Δ {delta_ms:+.1f} ms  "
        f"{verdict(delta_ms <= TARGET_MS)}"
    )
    report_stale()


if __name__ == "__main__":
    main()
