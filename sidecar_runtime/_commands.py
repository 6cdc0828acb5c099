"""The subcommands: ``check``, ``plugins``, ``status`` and ``demo``."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Sequence
from http.client import HTTPConnection
from importlib.resources import files
from typing import Any

from ._cli import _checked, _Parser, parse_run_args
from ._convert import Address, parse_address, parse_duration
from ._errors import ConfigError, SidecarError
from ._run import check_environment, fail, run

__all__ = ["check", "demo", "plugins", "status"]


def check(argv: Sequence[str]) -> int:
    """``sidecar-run check [--config FILE] [run options] [-- CMD]``: validate, print the result."""
    from ._config import load_config
    from ._plugins import load_plugins

    path, overrides = parse_run_args(
        argv,
        prog="sidecar-run check",
        description="Validate the config (file, environment, flags) and print it resolved.",
    )
    origins: dict[str, str] = {}
    try:
        config = load_config(path, overrides=overrides, origins=origins)
        specs = load_plugins(config, origins=origins)
        check_environment(config, origins)
    except SidecarError as err:
        return fail(err)
    for spec in specs:  # a plugin may lint its own config (e.g. probes that fight each other)
        hook = getattr(spec.cls, "check_warnings", None)
        for warning in hook(spec.config) if hook is not None else ():
            sys.stderr.write(f"sidecar-run check: warning: plugins.{spec.name}: {warning}\n")
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
    return 0


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
        type=_checked(parse_duration, "duration"),
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
        type=_checked(parse_duration, "duration"),
        metavar="DURATION",
        help="stop the demo after this long, e.g. 30s (default: run until Ctrl-C)",
    )
    parser.add_argument("--port", type=int, default=None, help="the legacy app's port")
    parser.add_argument(
        "--admin",
        type=_checked(parse_address, "address"),
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
