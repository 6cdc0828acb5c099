"""The subcommands: ``check``, ``plugins``, ``status``, ``demo``, ``systemd-unit``, ``schema``."""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import time
from collections.abc import Sequence
from http.client import HTTPConnection
from importlib.resources import files
from typing import Any

from ._cli import _Parser, _split_command, parse_run_args
from ._convert import Address, parse_address, parse_duration, parse_signal
from ._errors import ConfigError, SidecarError
from ._flagtypes import checked
from ._run import check_environment, fail, run

__all__ = ["check", "demo", "plugins", "schema", "status", "systemd_unit"]

_CHECK_DESCRIPTION = (
    "Validate the config (file, environment, flags) and print it resolved. Lint it against "
    "where it runs: --manifest FILE (Kubernetes manifests: terminationGracePeriodSeconds), "
    "--unit FILE (a systemd unit: TimeoutStopSec=, KillMode=, WatchdogSec=, Restart=), both "
    "repeatable; --strict exits 1 when there is any warning."
)


def _own_options(
    parser: argparse.ArgumentParser, argv: Sequence[str]
) -> tuple[argparse.Namespace, list[str], list[str] | None]:
    """Take a subcommand's own options out of ``argv``; the run options and CMD remain."""
    options, command = _split_command(argv)
    args, rest = parser.parse_known_args(options)
    return args, rest, command


def _with_command(options: list[str], command: list[str] | None) -> list[str]:
    return options if command is None else [*options, "--", *command]


def check(argv: Sequence[str]) -> int:
    """``sidecar-run check [--config FILE] [run options] [-- CMD]``: validate, print the result."""
    from ._config import load_config
    from ._envcheck import drain_warnings, manifest_warnings, read_unit, unit_warnings
    from ._plugins import load_plugins

    own = _Parser(prog="sidecar-run check", add_help=False, allow_abbrev=False)
    own.add_argument("--manifest", action="append", default=[], metavar="FILE")
    own.add_argument("--unit", action="append", default=[], metavar="FILE")
    own.add_argument("--strict", action="store_true")
    lint, rest, command = _own_options(own, argv)
    path, overrides = parse_run_args(
        _with_command(rest, command), prog="sidecar-run check", description=_CHECK_DESCRIPTION
    )
    origins: dict[str, str] = {}
    warnings: list[str] = []
    try:
        config = load_config(path, overrides=overrides, origins=origins)
        specs = load_plugins(config, origins=origins)
        check_environment(config, origins)
        for manifest in lint.manifest:
            warnings += manifest_warnings(config, manifest)
        for unit in lint.unit:
            warnings += unit_warnings(config, specs, read_unit(unit), unit)
    except SidecarError as err:
        return fail(err)
    for spec in specs:  # a plugin may lint its own config (e.g. probes that fight each other)
        hook = getattr(spec.cls, "check_warnings", None)
        warnings += [f"plugins.{spec.name}: {w}" for w in (hook(spec.config) if hook else ())]
    warnings += drain_warnings(config, specs)
    sys.stderr.writelines(f"sidecar-run check: warning: {w}\n" for w in warnings)
    data = config.to_builtins()
    data["plugins"] = {name: data["plugins"][name] for name in data["plugins"]}
    for spec in specs:
        import msgspec

        from ._types import enc_hook

        resolved = msgspec.to_builtins(spec.config, enc_hook=enc_hook)
        data["plugins"][spec.name] = {"enabled": True, "critical": spec.critical, **resolved}
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    if not config.app.command:
        sys.stderr.write("sidecar-run check: note: no app.command; give CMD after '--' to run\n")
    return 1 if warnings and lint.strict else 0


def plugins(argv: Sequence[str]) -> int:
    """``sidecar-run plugins``: every installed plugin with its distribution and version."""
    parser = _Parser(prog="sidecar-run plugins", description="List installed plugins.")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    from ._plugins import discover

    rows: list[dict[str, Any]] = []
    for name, ep in sorted(discover().items()):
        dist = ep.dist
        rows.append(
            {
                "name": name,
                "object": ep.value,
                "distribution": dist.name if dist else None,
                "version": dist.version if dist else None,
            }
        )
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        sys.stdout.write(
            f"{r['name']:<{width}}  {r['distribution']} {r['version']}  ({r['object']})\n"
        )
    return 0


class _UnixHTTPConnection(HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def fetch_status(address: Address, timeout: float = 5.0) -> dict[str, Any]:
    """GET /status from a running sidecar-run's admin listener."""
    conn: HTTPConnection
    if address.kind == "unix":
        conn = _UnixHTTPConnection(address.path, timeout)
    else:
        host = "127.0.0.1" if address.host in ("0.0.0.0", "") else address.host  # noqa: S104
        conn = HTTPConnection(host, address.port, timeout=timeout)
    try:
        conn.request("GET", "/status")
        reply = conn.getresponse()
        body = reply.read()
    finally:
        conn.close()
    if reply.status != 200:
        msg = f"HTTP {reply.status}"
        raise OSError(msg)
    data = json.loads(body)
    assert isinstance(data, dict)
    return data


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    parts.append(f"{seconds}s")
    return "".join(parts[:2])


def format_status(data: dict[str, Any]) -> str:
    """The ``/status`` JSON as a person reads it."""
    lines = []
    pid = f"pid {data['pid']}" if data.get("pid") else "no process"
    lines.append(f"app:      {data['state']}  {pid}  up {_ago(data.get('uptime_seconds'))}")
    lines.append(f"command:  {' '.join(data.get('command') or [])}")
    lines.append(f"ready:    {'yes' if data.get('ready') else 'no'}")
    last = data.get("last_exit")
    if last:
        how = f"signal {last['signal']}" if last.get("signal") else f"code {last['code']}"
        when = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["at"])) if last.get("at") else ""
        )
        last_text = f"{how} at {when}"
    else:
        last_text = "-"
    lines.append(
        f"starts:   {data['starts']} ({data['restarts']} restarts), last exit: {last_text}"
    )
    plugin_parts = []
    for name, info in sorted((data.get("plugins") or {}).items()):
        extra = f", {info['restarts']} restarts" if info.get("restarts") else ""
        err = f", last error: {info['last_error']}" if info.get("last_error") else ""
        plugin_parts.append(f"{name} {info['state']}{extra}{err}")
    lines.append(f"plugins:  {'; '.join(plugin_parts) or '-'}")
    rt = data.get("runtime") or {}
    lines.append(
        f"runtime:  sidecar-run {rt.get('version')}, pid {rt.get('pid')}, "
        f"up {_ago(rt.get('uptime_seconds'))}, orphans reaped {rt.get('orphans_reaped')}"
    )
    return "\n".join(lines) + "\n"


def status(argv: Sequence[str]) -> int:
    """``sidecar-run status [--admin ADDR] [--json]``: the running app's state for a person."""
    from ._config import load_config

    parser = _Parser(prog="sidecar-run status", description="Show a running sidecar-run's state.")
    parser.add_argument("--admin", metavar="ADDR", help="admin listener (default: from config)")
    parser.add_argument("--config", metavar="FILE", help="read the admin address from this config")
    parser.add_argument("--json", action="store_true", help="print the raw JSON")
    parser.add_argument(
        "--timeout",
        type=checked(parse_duration, "duration"),
        default="5s",
        metavar="DURATION",
        help="how long to wait for an answer (default 5s)",
    )
    args = parser.parse_args(argv)
    try:
        if args.admin:
            text = args.admin
        else:
            config = load_config(args.config)
            admin = config.plugins.get("admin", {})
            if admin.get("enabled", True) is False:
                msg = "the admin listener is disabled in the config (plugins.admin.enabled)"
                raise ConfigError(msg)
            text = admin.get("listen") or "127.0.0.1:9901"
        address = parse_address(text)
    except ValueError as err:
        return fail(ConfigError(f"--admin: {err}"))
    except SidecarError as err:
        return fail(err)
    try:
        data = fetch_status(address, parse_duration(args.timeout))
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        sys.stderr.write(
            f"sidecar-run status: cannot reach the admin listener at {address}: {reason}\n"
        )
        return 1
    sys.stdout.write(json.dumps(data, indent=2) + "\n" if args.json else format_status(data))
    return 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def demo(argv: Sequence[str]) -> int:
    """``sidecar-run demo [--seconds N]``: the example legacy app under the default config."""
    parser = _Parser(prog="sidecar-run demo", description="Run the bundled legacy app demo.")
    parser.add_argument(
        "--seconds",
        type=checked(parse_duration, "duration"),
        metavar="DURATION",
        help="stop the demo after this long, e.g. 30s (default: run until Ctrl-C)",
    )
    parser.add_argument("--port", type=int, default=None, help="the legacy app's port")
    parser.add_argument(
        "--admin",
        type=checked(parse_address, "address"),
        default="127.0.0.1:9901",
        metavar="ADDR",
        help="admin listener address (default 127.0.0.1:9901)",
    )
    args = parser.parse_args(argv)
    port = args.port or _free_port()
    app = str(files("sidecar_runtime") / "demo" / "legacy_app.py")
    os.environ["LEGACY_APP_PORT"] = str(port)
    if args.seconds:
        os.environ["LEGACY_APP_EXIT_AFTER"] = str(parse_duration(args.seconds))
    sys.stderr.write(
        f"sidecar-run demo: legacy app on http://127.0.0.1:{port}/ "
        f"(restarted if it crashes: GET /crash), runtime status on http://{args.admin}/status; "
        "Ctrl-C stops both.\n"
    )
    sys.stderr.flush()
    return run(
        [
            "--restart", "on-failure",
            "--restart-delay", "500ms",
            "--stop-timeout", "10s",
            "--admin", args.admin,
            "--log-level", "info",
            "--", sys.executable, app,
        ]
    )  # fmt: skip


def schema(argv: Sequence[str]) -> int:
    """``sidecar-run schema``: the config's JSON Schema, for editors and CI."""
    parser = _Parser(
        prog="sidecar-run schema",
        description="Print the JSON Schema (draft 2020-12) of a config file: the core keys and "
        "the table of every installed plugin.",
        epilog="Save it as sidecar.schema.json, then point the editor at it: '#:schema "
        "./sidecar.schema.json' as the first line of a TOML file (Taplo, Even Better TOML), "
        "'# yaml-language-server: $schema=./sidecar.schema.json' in a YAML file. In CI, "
        "validate with any JSON Schema tool, then run sidecar-run check for what a schema "
        "cannot express.",
    )
    parser.parse_args(argv)
    from ._schema import config_schema, installed_plugin_configs

    found, errors = installed_plugin_configs()
    sys.stderr.writelines(f"sidecar-run schema: warning: {e}; left out\n" for e in errors)
    sys.stdout.write(json.dumps(config_schema(found), indent=2, ensure_ascii=False) + "\n")
    return 0


def _unit_name(text: str) -> str:
    name = text.removesuffix(".service")
    if not re.fullmatch(r"[A-Za-z0-9:_.\\-]{1,240}", name):
        msg = f"a unit name takes letters, digits and ':_.-\\', got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return name


def _reload_signal(text: str) -> str:
    if text == "none":
        return text
    try:
        return parse_signal(text).name
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _unit_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sidecar-run systemd-unit",
        usage="sidecar-run systemd-unit [unit options] [run options] [--config FILE] "
        "-- CMD [ARGS...]",
        description="Print a systemd service (Type=notify) that runs CMD under sidecar-run. "
        "Its timeouts, watchdog and restart settings are derived from the config; a bad "
        "config is an error and no unit is printed.",
        epilog="Every run option of `sidecar-run --help` is accepted too, checked, and "
        "written into ExecStart=.",
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("--name", type=_unit_name, help="the unit's name (default: the command's file name)")
    add("--description", metavar="TEXT", help="Description= (default: 'NAME under sidecar-run')")
    add("--uid", metavar="USER", help="User=: run sidecar-run and the app as this user")
    add("--gid", metavar="GROUP", help="Group=: with this group")
    add("--working-directory", metavar="DIR", help="WorkingDirectory= (made absolute)")
    add(
        "--environment-file",
        action="append",
        default=[],
        metavar="FILE",
        help="EnvironmentFile= (made absolute; repeatable); --environment-file=-FILE: "
        "optional, no error when FILE is missing",
    )
    add(
        "--reload-signal",
        type=_reload_signal,
        metavar="SIG|none",
        help="ExecReload= sends this signal to sidecar-run (default: HUP when it reloads its "
        "config on SIGHUP, see signals.hup)",
    )
    add(
        "--executable",
        metavar="PATH",
        help="sidecar-run's absolute path in ExecStart= (default: this installation's)",
    )
    return parser


def systemd_unit(argv: Sequence[str]) -> int:
    """``sidecar-run systemd-unit [--name N] [--config FILE] -- CMD``: print a systemd unit."""
    from ._config import load_config
    from ._plugins import load_plugins
    from ._unit import exec_start_argv, render_unit, sidecar_run_argv, unit_options, without_config

    args, rest, command = _own_options(_unit_parser(), argv)
    prog = "sidecar-run systemd-unit"
    path, overrides = parse_run_args(_with_command(rest, command), prog=prog)
    if command is None and overrides.get("app.command"):  # CMD without "--"
        command = list(overrides["app.command"])
        rest = rest[: len(rest) - len(command)]
    path = path or os.environ.get("SIDECAR_CONFIG") or None
    # The unit's environment is systemd's, not this shell's: SIDECAR_* variables stay here.
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    origins: dict[str, str] = {}
    try:
        config = load_config(path, environ=environ, overrides=overrides, origins=origins)
        if not config.app.command:
            msg = "no command to run: give one after '--' or set app.command in the config"
            raise ConfigError(msg)
        specs = load_plugins(config, origins=origins)
        check_environment(config, origins)
        options = unit_options(config, args, config_path=path)
        program = [args.executable] if args.executable else sidecar_run_argv()
        argv = exec_start_argv(program, without_config(rest), command, options)
        unit = render_unit(config, specs, argv, options)
    except SidecarError as err:
        return fail(err)
    for name in sorted(k for k in environ.keys() ^ os.environ.keys() if k != "SIDECAR_CONFIG"):
        sys.stderr.write(
            f"{prog}: warning: {name} is set here but not in the unit; put it in the config "
            "or an --environment-file\n"
        )
    sys.stdout.write(unit)
    return 0
