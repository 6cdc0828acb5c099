"""``cli.md``: the run options (with the config key each sets) and the subcommands."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from sidecar_runtime import _cli

from .config import literal
from .markdown import page, table

#: Values the CLI probe gives each flag to find the config key it sets, by metavar.
_SAMPLES = {
    "DURATION": "1s",
    "SIG": "TERM",
    "N": "3",
    "FROM:TO": "HUP:USR1",
    "ADDR|off": "127.0.0.1:9901",
    "DIR": "/",
}


def _probe(argv: list[str]) -> tuple[str | None, dict[str, Any]] | None:
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return _cli.parse_run_args([*argv, "--", "true"])
    except SystemExit:
        return None


def _flag_keys(action: argparse.Action) -> str:
    """Run the real argument parser with one flag and report the config keys it sets."""
    flag = action.option_strings[-1]
    if isinstance(action, argparse._HelpAction | argparse._VersionAction):
        return "-"
    if action.nargs == 0:
        samples: list[str | None] = [None]
    elif action.choices:
        samples = [str(next(iter(action.choices)))]
    else:
        metavar = str(action.metavar)
        samples = [_SAMPLES.get(metavar, "x")]
        if metavar.endswith("|off"):
            samples.append("off")
    keys = []
    for sample in samples:
        parsed = _probe([flag] if sample is None else [flag, sample])
        if parsed is None:
            continue
        path, overrides = parsed
        overrides.pop("app.command", None)
        for key, value in overrides.items():
            if sample is None:
                keys.append(f"`{key} = {literal(value)}`")
            elif sample == "off":
                keys.append(f"`off`: `{key} = {literal(value)}`")
            else:
                keys.append(f"`{key}`")
        if path is not None:
            keys.append("the file to load (default `$SIDECAR_CONFIG`)")
    return ", ".join(keys) or "-"


def _flag_value(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices:
        return " | ".join(f"`{c}`" for c in action.choices)
    return f"`{action.metavar or action.dest.upper()}`"


def _help_text(subcommand: str) -> str:
    env = {**os.environ, "COLUMNS": "100"}
    env = {k: v for k, v in env.items() if not k.startswith("SIDECAR_")}
    result = subprocess.run(
        [sys.executable, "-m", "sidecar_runtime", subcommand, "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    return result.stdout.rstrip()


def render_cli() -> str:
    parser = _cli.build_run_parser()
    rows = []
    for action in parser._actions:
        if not action.option_strings:
            continue
        rows.append(
            [
                ", ".join(f"`{o}`" for o in action.option_strings),
                _flag_value(action),
                _flag_keys(action),
                action.help or "(no help text)",
            ]
        )
    subcommands = list(_cli._SUBCOMMANDS)
    from sidecar_runtime import _commands

    sub_parts = []
    for name in subcommands:
        func: Callable[..., int] = getattr(_commands, _cli._SUBCOMMANDS[name])
        summary = (func.__doc__ or "").strip().splitlines()[0]
        if name == "check":
            text = (
                "Takes every run option above. Loads and validates the config (and every enabled "
                "plugin's table) exactly as a run would, prints the resolved config as JSON on "
                "stdout and exits 0; an invalid config is one line on stderr and exit 2. Nothing "
                "is started.\n\nIt also lints the config against where it runs, one warning "
                "line each on stderr: `--manifest FILE` (Kubernetes manifests: "
                "`terminationGracePeriodSeconds` against the worst-case stop), `--unit FILE` (a "
                "systemd unit: `Type=`, `KillMode=`, `TimeoutStopSec=`, `WatchdogSec=`, "
                "`Restart=`), both repeatable; the proxy's drain against `stop.timeout`; a "
                "plugin's own `check_warnings`. `--strict` exits 1 when there is any warning."
            )
            sub_parts.append(f"### `{name}`\n\n{summary}\n\n{text}\n")
        else:
            sub_parts.append(f"### `{name}`\n\n{summary}\n\n```text\n{_help_text(name)}\n```\n")
    return page(
        "Command line",
        f"```text\n{parser.format_usage().strip()}\n```",
        (
            f"{parser.description} Everything after `--` is the app's argv, passed unchanged. "
            "Options come before `--`. Precedence: defaults < config file < `SIDECAR_*` "
            "environment < these options (see [config](config.md))."
        ),
        "## Run options",
        (
            "*Config key* is what the option sets, found by running the real parser with it. "
            "Durations are `500ms`, `10s`, `1m30s` or seconds; signals are `TERM`, `SIGTERM` or "
            "`15`."
        ),
        table(["Option", "Value", "Config key", "Description"], rows),
        "## Subcommands",
        (
            "A subcommand is recognised only as the first argument: "
            + ", ".join(f"`sidecar-run {s}`" for s in subcommands)
            + "."
        ),
        *sub_parts,
    )
