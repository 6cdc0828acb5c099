"""Throughput and correctness of the logs sidecar: lines/s from a file and from the app's
stdout to a file output, against ``tail`` and a minimal Python tailer measured in the same run.

Scenarios, each run in every round with its variants in a rotated order:

- **file**: ``--lines`` numbered lines of 100 bytes (plain, or JSON for the ``json`` case) are
  written first; the consumer tails the file from its head (sidecar-run: ``start_at =
  "head"``). Timed from the consumer's spawn until its output holds every line. References:
  ``tail -c +1 -F`` (a raw copy) and ``bench/_logs_ref.py`` (raw chunks; records as JSON
  lines; records with msgspec JSON parsing).
- **stdout**: the app is ``cat`` of the same file (the fastest possible writer); timed until
  the consumer exits. sidecar-run runs ``cat`` itself and passes its output through to
  /dev/null; the references read a pipe from ``cat``.
- ``plain``: the full default pipeline (records with message, time, stream or file+offset,
  JSON lines out). ``json``: plus ``parse = "json"`` and an ``enrich`` processor with a static
  field.
- **rotation**: this script writes ``--rotation-lines`` lines at 100,000 lines/s (10 MB/s, a
  very busy app) and rotates the file every 120,000 lines (1.2 s, more than the default
  ``glob_interval``), by rename-and-create and by copytruncate in turn, while sidecar-run and
  ``tail -c +1 -F`` follow it. After a rename it writes 1000 more lines to the renamed file
  before reopening the path; before a copytruncate it lets the reader catch up (see
  ``_logs_procs.run_rotation``).

sidecar-run is the real command (``--admin off``, a config file, a fresh ``STATE_DIRECTORY``
per run) under ``taskset -c 0``: the "one core" figure. Its file output has ``max_bytes = 0``
(no rotation of the output) and ``batch_timeout = "100ms"``: with the default 1 s the last,
partial batch of a file run would wait up to a second, which is latency, not throughput. The
references run on core 0 too; the apps (``cat``), the writer and this script run on core 1.
Every output is checked by sequence number: lost and duplicated lines are counted every run.

Targets (one core, full default pipeline): >= 300,000 lines/s, >= 150,000 lines/s with JSON
parsing and enrichment; lost = 0 and duplicated = 0 in every run, rotation included; peak RSS
reported.

``--pieces`` measures instead the CPU per line of each stage in-process (``_logs_pieces``).

Usage: .venv/bin/python bench/logs.py [--lines N] [--rounds R] [--rotation-lines N] [--quick]
                                      [--pieces]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

if not __package__:  # run as a script: python bench/x.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import (
    PYTHON,
    SIDECAR,
    byte_compile,
    child_env,
    header,
    median,
    print_table,
    report_stale,
    rotated,
    verdict,
)
from bench._logs_data import LINE_BYTES, write_input
from bench._logs_pieces import report_pieces
from bench._logs_procs import Result, Spec, run_follow, run_pipe, run_rotation

REF = str(Path(__file__).resolve().parent / "_logs_ref.py")
TASKSET = shutil.which("taskset")
TAIL = shutil.which("tail")
ROTATION_RATE = 100_000
ROTATION_EVERY = 120_000
PLAIN_TARGET = 300_000
JSON_TARGET = 150_000
SIDECAR_LABEL = "sidecar-run"


def _pin(core: int) -> list[str]:
    """``taskset -c CORE`` when there are two cores to share out, else nothing."""
    return [TASKSET, "-c", str(core)] if TASKSET and (os.cpu_count() or 1) > 1 else []


def _toml(value: object) -> str:
    """A TOML basic string (JSON's escaping is valid TOML)."""
    return json.dumps(str(value))


def sidecar_config(out: Path, *, source: str, parse: bool, target: Path) -> str:
    """A config file: ``target`` tailed from its head, or ``cat target`` as the app."""
    if source == "file":
        head = (
            '[app]\ncommand = ["sleep", "3600"]\n\n[plugins.logs]\nstreams = []\n\n'
            f'[[plugins.logs.files]]\npaths = [{_toml(target)}]\nstart_at = "head"\n'
        )
    else:
        command = ", ".join(_toml(w) for w in [*_pin(1), "cat", str(target)])
        head = f"[app]\ncommand = [{command}]\n\n[plugins.logs]\n"
    processors = (
        '\n[[plugins.logs.processors]]\nparse = "json"\n\n'
        '[[plugins.logs.processors]]\nenrich = { fields = { env = "bench" } }\n'
        if parse
        else ""
    )
    output = (
        f'\n[plugins.logs.outputs.out]\ntype = "file"\npath = {_toml(out)}\nmax_bytes = 0\n'
        'batch_timeout = "100ms"\n'
    )
    return head + processors + output


@dataclass(frozen=True)
class Variant:
    """One consumer in one scenario. ``how``: ``follow`` (tails a pre-written file), ``pipe``
    (reads the app's stdout; ``app`` is piped in, ``None`` when the consumer starts it) or
    ``rotation``."""

    label: str
    make: Callable[[Path], Spec]  # run directory -> what to start
    how: str
    app: list[str] | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    lines: int
    variants: list[Variant]
    target: int | None = None  # lines/s sidecar-run must reach


def _sidecar(source: str, kind: str, target: Path) -> Callable[[Path], Spec]:
    def make(run_dir: Path) -> Spec:
        out = run_dir / "out.jsonl"
        config = run_dir / "sidecar.toml"
        config.write_text(sidecar_config(out, source=source, parse=kind == "json", target=target))
        argv = [*_pin(0), SIDECAR, "--admin", "off", "--config", str(config)]
        env = child_env(STATE_DIRECTORY=str(run_dir / "state"))
        return Spec(SIDECAR_LABEL, argv, env, out, kind)

    return make


def _tail(kind: str, follow: Path | None) -> Callable[[Path], Spec]:
    argv = [*_pin(0), TAIL or "tail", "-c", "+1", *(["-F", str(follow)] if follow else [])]
    label = "tail -c +1 -F" if follow else "tail -c +1 (pipe)"

    def make(run_dir: Path) -> Spec:
        out = run_dir / "out.txt"
        return Spec(label, argv, child_env(), out, kind, stdout=out)

    return make


_REF_LABELS = {
    "raw": "python: raw chunks",
    "records": "python: records",
    "json": "python: records + msgspec json",
}


def _ref(mode: str, kind: str, follow: Path | None) -> Callable[[Path], Spec]:
    def make(run_dir: Path) -> Spec:
        out = run_dir / "out.ref"
        tail = ["--follow", str(follow)] if follow else []
        argv = [*_pin(0), PYTHON, REF, mode, str(out), *tail]
        return Spec(_REF_LABELS[mode], argv, child_env(), out, kind)

    return make


def build_scenarios(
    inputs: dict[str, Path], lines: int, rotation: tuple[int, Path]
) -> list[Scenario]:
    """file and stdout, each plain and json, then the rotation round."""
    out: list[Scenario] = []
    for source in ("file", "stdout"):
        for kind in ("plain", "json"):
            path = inputs[kind]
            how = "follow" if source == "file" else "pipe"
            follow = path if source == "file" else None
            app = None if source == "file" else [*_pin(1), "cat", str(path)]
            variants = [Variant(SIDECAR_LABEL, _sidecar(source, kind, path), how)]
            if TAIL:
                variants.append(Variant("tail", _tail(kind, follow), how, app))
            modes = ["json"] if kind == "json" else ["raw", "records"] if follow else ["records"]
            variants += [Variant(m, _ref(m, kind, follow), how, app) for m in modes]
            target = PLAIN_TARGET if kind == "plain" else JSON_TARGET
            out.append(Scenario(f"{source}, {kind}", lines, variants, target))
    count, log = rotation
    variants = [Variant(SIDECAR_LABEL, _sidecar("file", "plain", log), "rotation")]
    if TAIL:
        variants.append(Variant("tail", _tail("plain", log), "rotation"))
    out.append(Scenario("rotation", count, variants))
    return out


def execute(variant: Variant, scenario: Scenario, run_dir: Path, rotation_log: Path) -> Result:
    """One run of one variant in a fresh directory."""
    run_dir.mkdir()
    spec = variant.make(run_dir)
    errlog = run_dir / "stderr.log"
    if variant.how == "follow":
        return run_follow(spec, scenario.lines, errlog)
    if variant.how == "pipe":
        return run_pipe(spec, scenario.lines, errlog, variant.app)
    shutil.rmtree(rotation_log.parent, ignore_errors=True)
    rotation_log.parent.mkdir()
    return run_rotation(
        spec, scenario.lines, errlog, rotation_log, every=ROTATION_EVERY, rate=ROTATION_RATE
    )


def _stderr_note(run_dir: Path) -> str | None:
    """The first line a consumer wrote to stderr, if any (sidecar-run logs warnings there)."""
    try:
        text = (run_dir / "stderr.log").read_text(errors="replace").strip()
    except OSError:
        return None
    return text.splitlines()[0][:200] if text else None


def _k(value: float) -> str:
    return f"{value:,.0f}" if value == value else "-"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f}" if seconds == seconds else "-"


def scenario_table(scenario: Scenario, results: dict[str, list[Result]]) -> None:
    """Medians over the rounds; lost/dup are the worst run's."""
    ours = median([r.rate for r in results[SIDECAR_LABEL]])
    rows = []
    for label, runs in results.items():
        rate = median([r.rate for r in runs])
        cpu = median([r.cpu for r in runs])
        rows.append(
            [
                runs[0].label,
                _k(rate),
                _k(median([r.steady for r in runs])),
                _ms(median([r.first for r in runs])),
                f"{cpu:.2f}",
                _k(scenario.lines / cpu) if cpu > 0 else "n/a",
                f"{max(r.rss_mib for r in runs):.1f}",
                str(max(r.check.lost for r in runs)),
                str(max(r.check.duplicated for r in runs)),
                "" if label == SIDECAR_LABEL else f"{ours / rate:.2f}" if rate else "n/a",
            ]
        )
    print_table(
        [
            "consumer",
            "lines/s",
            "steady",
            "1st line ms",
            "CPU s",
            "lines/CPU-s",
            "peak RSS MiB",
            "lost",
            "dup",
            "sidecar-run ÷ this",
        ],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=None, help="lines per run (default 2M)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 3)")
    parser.add_argument(
        "--rotation-lines", type=int, default=None, help="lines of the rotation round (1.2M)"
    )
    parser.add_argument("--quick", action="store_true", help="100k lines, one round (~30 s)")
    parser.add_argument(
        "--pieces", action="store_true", help="only the in-process cost of each stage (~30 s)"
    )
    args = parser.parse_args()
    lines = args.lines or (100_000 if args.quick else 500_000 if args.pieces else 2_000_000)
    rounds = args.rounds or (1 if args.quick else 3)
    rotation_lines = args.rotation_lines or (360_000 if args.quick else 1_200_000)

    compiled = byte_compile()
    header("logs sidecar: lines/s, lost and duplicated lines", compiled)
    if _pin(0):
        os.sched_setaffinity(0, {1})  # this script and the writers stay off core 0
        print("pinning: consumers on core 0 (taskset -c 0); apps, writer and this script on 1")
    else:
        print("pinning: none (one CPU or no taskset): figures are not one-core figures")
    work = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    try:
        inputs = {kind: work / f"input-{kind}.log" for kind in ("plain", "json")}
        for kind, path in inputs.items():
            size = write_input(path, kind, lines)
        if args.pieces:
            print(f"input: {lines:,} lines of {LINE_BYTES} bytes ({size / 1e6:.0f} MB) per kind")
            report_pieces(inputs, work)
            return
        print(
            f"input: {lines:,} lines of {LINE_BYTES} bytes ({size / 1e6:.0f} MB) per kind; "
            f"rotation: {rotation_lines:,} lines at {ROTATION_RATE:,}/s, rotated every "
            f"{ROTATION_EVERY:,}; "
            f"{rounds} round(s)"
        )
        rotation_log = work / "rotation" / "app.log"
        plan = build_scenarios(inputs, lines, (rotation_lines, rotation_log))
        results: dict[str, dict[str, list[Result]]] = {s.name: {} for s in plan}
        notes: list[str] = []
        n = 0
        for round_no in range(rounds):
            for scenario in plan:
                for variant in rotated(scenario.variants, round_no):
                    n += 1
                    run_dir = work / f"run-{n}"
                    result = execute(variant, scenario, run_dir, rotation_log)
                    results[scenario.name].setdefault(variant.label, []).append(result)
                    check = result.check
                    if check.lost or check.duplicated or check.foreign:
                        stderr = _stderr_note(run_dir)
                        notes.append(
                            f"round {round_no + 1}, {scenario.name}, {result.label}: "
                            f"{check.lines:,} lines out, lost {check.lost:,}, duplicated "
                            f"{check.duplicated:,}, without a number {check.foreign:,}"
                            + (f"; stderr: {stderr}" if stderr else "")
                        )
                    shutil.rmtree(run_dir, ignore_errors=True)
            print(f"round {round_no + 1}/{rounds} done", flush=True)
        report(plan, results, notes, rounds, sum(p.stat().st_size for p in inputs.values()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report_stale()


def report(
    plan: list[Scenario],
    results: dict[str, dict[str, list[Result]]],
    notes: list[str],
    rounds: int,
    input_bytes: int,
) -> None:
    """The tables, then the targets with PASS/MISS."""
    for scenario in plan:
        print()
        extra = ""
        if scenario.name == "rotation":
            turns = results[scenario.name][SIDECAR_LABEL][0].rotations
            extra = f", {turns} rotations (rename and copytruncate in turn) while writing"
        print(f"-- {scenario.name}: {scenario.lines:,} lines{extra} --")
        scenario_table(scenario, results[scenario.name])
    for note in notes:
        print(f"note: {note}")
    ours = [r for s in results.values() for r in s.get(SIDECAR_LABEL, [])]
    print()
    print(f"targets (sidecar-run on one core, taskset -c 0; medians of {rounds} round(s)):")
    for scenario in plan:
        if scenario.target is None:
            continue
        rate = median([r.rate for r in results[scenario.name][SIDECAR_LABEL]])
        print(
            f"  {scenario.name:<14} {rate:>10,.0f} lines/s   target >= {scenario.target:,}   "
            f"{verdict(rate >= scenario.target)}"
        )
    bad = [r for r in ours if r.check.lost or r.check.duplicated]
    print(
        f"  lost = 0 and duplicated = 0 in all {len(ours)} sidecar-run runs (rotation included): "
        f"{verdict(not bad)}"
    )
    peak = max(r.rss_mib for r in ours)
    print(f"  peak RSS of sidecar-run: {peak:.1f} MiB (inputs: {input_bytes / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
