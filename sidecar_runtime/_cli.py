"""The ``sidecar-run`` command: argparse front end, exit codes, and the subcommands.

``sidecar-run [options] [--config FILE] -- CMD ARGS...`` runs CMD under supervision. Subcommands
(only as the first word): ``check``, ``plugins``, ``status``, ``demo``, ``systemd-unit``,
``schema``. Exit status: the app's
own; 128+N when it died of signal N; 127/126 when CMD is not found / not executable; 2 for any
config or usage error (one line on stderr, nothing started); 70 when a critical plugin failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from ._convert import parse_address, parse_duration, parse_signal

__all__ = ["build_run_parser", "main"]

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _checked(convert: Any, what: str) -> Any:
    def check(text: str) -> str:
        try:
            convert(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return text

    check.__name__ = what
    return check


def _max_restarts(text: str) -> int | str:
    if text == "unlimited":
        return text
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        msg = f"expected a whole number >= 0 or 'unlimited', got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _admin(text: str) -> str:
    if text != "off":
        try:
            parse_address(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")) or len(text.split("/", 3)[2]) == 0:
        msg = f"expected an http:// or https:// URL, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return text


_PROBE_KINDS = ("startup", "liveness", "readiness")


def _probe(text: str) -> dict[str, Any]:
    """``readiness=http://127.0.0.1:8080/health`` → the probe's config table."""
    kind, sep, target = text.partition("=")
    if not sep or kind not in _PROBE_KINDS:
        msg = f"expected KIND=TARGET with KIND one of {', '.join(_PROBE_KINDS)}, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    if target.startswith(("http://", "https://")):
        return {"kind": kind, "http": _url(target)}
    if target.startswith("tcp://"):
        try:
            address = parse_address(target.removeprefix("tcp://"))
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        if address.kind != "tcp" or not address.port:
            msg = f"tcp probe needs HOST:PORT, got {target!r}"
            raise argparse.ArgumentTypeError(msg)
        return {"kind": kind, "tcp": target.removeprefix("tcp://")}
    if target.startswith("exec:"):
        import shlex

        try:
            argv = shlex.split(target.removeprefix("exec:"))
        except ValueError as err:
            msg = f"exec probe: {err}: {target!r}"
            raise argparse.ArgumentTypeError(msg) from None
        if not argv:
            msg = f"exec probe needs a command, got {target!r}"
            raise argparse.ArgumentTypeError(msg)
        return {"kind": kind, "exec": argv}
    msg = f"probe target must start with http://, https://, tcp:// or exec:, got {target!r}"
    raise argparse.ArgumentTypeError(msg)


def _proxy(text: str) -> tuple[str, str]:
    """``LISTEN=UPSTREAM`` → (listen address, upstream URL), both checked."""
    listen, sep, upstream = text.partition("=")
    if not sep or not listen or not upstream:
        msg = f"expected LISTEN=UPSTREAM, e.g. '0.0.0.0:8443=http://127.0.0.1:8080', got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    try:
        parse_address(listen)
    except ValueError as err:
        msg = f"--proxy {text!r}: {err}"
        raise argparse.ArgumentTypeError(msg) from None
    if upstream.startswith("unix:"):
        if len(upstream) == 5:
            msg = f"--proxy {text!r}: 'unix:' needs a socket path"
            raise argparse.ArgumentTypeError(msg)
        return listen, upstream
    scheme, sep, rest = upstream.partition("://")
    hostport = rest.rstrip("/")
    try:
        target = parse_address(hostport) if sep and scheme in ("http", "https") else None
    except ValueError:
        target = None
    if target is None or target.kind != "tcp" or not target.port or hostport.startswith(":"):
        msg = (
            f"--proxy {text!r}: UPSTREAM must be http://HOST:PORT, https://HOST:PORT or "
            f"unix:/path, got {upstream!r}"
        )
        raise argparse.ArgumentTypeError(msg)
    return listen, upstream


def _proxy_overrides(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """``--proxy`` and ``--tls-*`` as ``plugins.proxy`` keys: a listener per flag, an upstream
    per distinct target (``app``, ``app2``...; loopback and unix ones are the app)."""
    tls_flags = (args.tls_cert, args.tls_key, args.tls_client_ca)
    if not args.proxy:
        if any(tls_flags):
            parser.error("--tls-cert, --tls-key and --tls-client-ca need --proxy")
        return {}
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        parser.error("--tls-client-ca needs --tls-cert and --tls-key")
    overrides: dict[str, Any] = {}
    names: dict[str, str] = {}
    listeners = []
    for listen, upstream in args.proxy:
        if upstream not in names:
            name = names[upstream] = "app" if not names else f"app{len(names) + 1}"
            if upstream.startswith("unix:"):
                table: dict[str, Any] = {"endpoints": [upstream], "app": True}
            else:
                scheme, _, rest = upstream.partition("://")
                host = parse_address(rest.rstrip("/")).host
                loopback = host in ("localhost", "::1") or host.startswith("127.")
                table = {"endpoints": [rest.rstrip("/")], "app": loopback}
                if scheme == "https":
                    table["tls"] = {}
            overrides[f"plugins.proxy.upstreams.{name}"] = table
        listener: dict[str, Any] = {"address": listen, "routes": [{"upstream": names[upstream]}]}
        if args.tls_cert:
            tls = {"cert": args.tls_cert, "key": args.tls_key}
            if args.tls_client_ca:
                tls["client_ca"] = args.tls_client_ca
            listener["tls"] = tls
        listeners.append(listener)
    overrides["plugins.proxy.listeners"] = listeners
    return overrides


def _rewrite(text: str) -> tuple[str, str]:
    source, sep, target = text.partition(":")
    if not sep:
        msg = f"expected FROM:TO, e.g. 'HUP:USR1' or 'WINCH:none', got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    try:
        parse_signal(source)
        if target.lower() not in ("none", "0"):
            parse_signal(target)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return source, target


_EPILOG = """subcommands (as the first word):
  check         validate a config (same options) and print it resolved
  plugins       list installed plugins with their distribution and version
  status        show a running sidecar-run's state (from its admin listener)
  demo          run the bundled example legacy app under the default config
  systemd-unit  print a systemd service unit (Type=notify) for CMD and the config
  schema        print the JSON Schema of the config file
"""


def build_run_parser(
    prog: str = "sidecar-run", description: str | None = None
) -> argparse.ArgumentParser:
    """The options shared by a run and ``check`` (the reference docs are generated from it)."""
    parser = _Parser(
        prog=prog,
        usage=f"{prog} [options] [--config FILE] -- CMD [ARGS...]",
        description=description or "Run CMD as a supervised child with in-process sidecars.",
        epilog=_EPILOG if description is None else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add = parser.add_argument
    add("--config", metavar="FILE", help="config file (.toml, .yaml); default $SIDECAR_CONFIG")
    add(
        "--restart",
        choices=["never", "on-failure", "always"],
        help="restart policy (restart.policy)",
    )
    add(
        "--max-restarts",
        type=_max_restarts,
        metavar="N",
        help="give up after N restarts in a row without a stable run, or 'unlimited'",
    )
    add(
        "--restart-delay",
        type=_checked(parse_duration, "duration"),
        metavar="DURATION",
        help="first backoff step, e.g. 1s or 500ms (restart.delay)",
    )
    add(
        "--start-seconds",
        type=_checked(parse_duration, "duration"),
        metavar="DURATION",
        help="how long the app must run to count as started (restart.start_seconds)",
    )
    add(
        "--stop-signal",
        type=_checked(parse_signal, "signal"),
        metavar="SIG",
        help="signal that asks the app to stop, e.g. TERM, QUIT (stop.signal)",
    )
    add(
        "--stop-timeout",
        type=_checked(parse_duration, "duration"),
        metavar="DURATION",
        help="the shutdown deadline; SIGKILL to the app's group after it (stop.timeout)",
    )
    add(
        "--pre-stop-delay",
        type=_checked(parse_duration, "duration"),
        metavar="DURATION",
        help="keep serving this long after readiness turns false (stop.pre_stop_delay)",
    )
    add(
        "--forward-to",
        choices=["group", "child"],
        help="send forwarded signals to the app's process group or the app alone",
    )
    add(
        "--rewrite",
        type=_rewrite,
        action="append",
        metavar="FROM:TO",
        help="rewrite a forwarded signal, e.g. HUP:USR1; TO 'none' drops it (repeatable)",
    )
    add(
        "--admin",
        type=_admin,
        metavar="ADDR|off",
        help="admin listener: HOST:PORT, unix:PATH, or off (plugins.admin.listen)",
    )
    add(
        "--app-metrics",
        type=_url,
        action="append",
        metavar="URL",
        help="merge the app's own Prometheus endpoint into /metrics (repeatable; "
        "plugins.metrics.app_metrics)",
    )
    add(
        "--probe",
        type=_probe,
        action="append",
        metavar="KIND=TARGET",
        help="a health probe: KIND is startup, liveness or readiness; TARGET is "
        "http(s)://HOST:PORT/PATH, tcp://HOST:PORT or exec:COMMAND (repeatable; "
        "plugins.health.probes)",
    )
    add(
        "--proxy",
        type=_proxy,
        action="append",
        metavar="LISTEN=UPSTREAM",
        help="a reverse proxy listener: LISTEN is HOST:PORT or unix:PATH, UPSTREAM is "
        "http://HOST:PORT, https://HOST:PORT or unix:PATH (repeatable; plugins.proxy)",
    )
    add("--tls-cert", metavar="FILE", help="PEM certificate (chain) for every --proxy listener")
    add("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    add(
        "--tls-client-ca",
        metavar="FILE",
        help="PEM CA bundle: --proxy listeners require client certificates it signed (mTLS)",
    )
    add(
        "--tail",
        action="append",
        metavar="GLOB",
        help="tail files matching GLOB through rotation and ship their lines (repeatable; "
        "plugins.logs.files); alone, it ships to stdout as JSON lines",
    )
    add(
        "--log-output",
        action="append",
        metavar="SPEC",
        help="ship logs to SPEC: stdout, stderr, file:PATH, http(s)://..., loki+http(s)://..., "
        "elasticsearch+http(s)://..., fluentd+http://HOST:PORT/TAG or fluentd+tcp://HOST:PORT/TAG "
        "(repeatable; plugins.logs.log_output)",
    )
    add("--user", metavar="USER", help="run the app as this user (name or uid)")
    add("--group", metavar="GROUP", help="run the app with this group (name or gid)")
    add("--workdir", metavar="DIR", help="run the app in this directory (app.working_dir)")
    add(
        "--output",
        choices=["auto", "pipe", "pty", "inherit"],
        help="how the app's stdout/stderr are carried (output.mode)",
    )
    add(
        "--no-plugins",
        action="store_true",
        default=None,
        help="run no plugin at all, whatever the config says: a plain supervisor, like tini",
    )
    add(
        "--no-subreaper",
        action="store_true",
        default=None,
        help="do not register as child subreaper (orphans then go to PID 1)",
    )
    add(
        "--log-level",
        choices=["debug", "info", "warning", "error", "critical"],
        help="level of the runtime's own logs (default warning)",
    )
    add(
        "--log-format",
        choices=["json", "console", "auto"],
        help="json, console, or auto: console on a terminal, else json",
    )
    add("--log-file", metavar="FILE", help="write the runtime's logs here instead of stderr")
    add("--version", action="version", version=f"sidecar-run {__version__}")
    return parser


_FLAG_KEYS = {
    "restart": "restart.policy",
    "max_restarts": "restart.max_restarts",
    "restart_delay": "restart.delay",
    "start_seconds": "restart.start_seconds",
    "stop_signal": "stop.signal",
    "stop_timeout": "stop.timeout",
    "pre_stop_delay": "stop.pre_stop_delay",
    "forward_to": "signals.forward_to",
    "user": "app.user",
    "group": "app.group",
    "workdir": "app.working_dir",
    "output": "output.mode",
    "log_level": "log.level",
    "log_format": "log.format",
    "log_file": "log.file",
}


def _split_command(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, None


def parse_run_args(
    argv: Sequence[str], prog: str = "sidecar-run", description: str | None = None
) -> tuple[str | None, dict[str, Any]]:
    """Parse a run's flags; return the config path and the overrides they make."""
    options, command = _split_command(argv)
    parser = build_run_parser(prog, description)
    if command is None:
        parser.add_argument("command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(options)
    if command is None:
        command = args.command or None
    overrides: dict[str, Any] = {}
    for attr, key in _FLAG_KEYS.items():
        value = getattr(args, attr)
        if value is not None:
            overrides[key] = value
    if args.no_subreaper:
        overrides["subreaper"] = False
    if args.rewrite:
        overrides["signals.rewrite"] = dict(args.rewrite)
    if args.app_metrics:
        overrides["plugins.metrics.app_metrics"] = [{"url": url} for url in args.app_metrics]
    if args.probe:
        overrides["plugins.health.probes"] = list(args.probe)
    overrides.update(_proxy_overrides(args, parser))
    if args.tail:
        overrides["plugins.logs.files"] = [{"paths": list(args.tail)}]
        if not args.log_output:
            overrides["plugins.logs.log_output"] = ["stdout"]
            overrides["plugins.logs.streams"] = []
    if args.log_output:
        overrides["plugins.logs.log_output"] = list(args.log_output)
    if args.admin == "off":
        overrides["plugins.admin.enabled"] = False
    elif args.admin is not None:
        overrides["plugins.admin.listen"] = args.admin
    if args.no_plugins:
        overrides = {k: v for k, v in overrides.items() if not k.startswith("plugins.")}
        overrides["plugins"] = {}
    if command is not None:
        if not command:
            parser.error("no command after '--'")
        overrides["app.command"] = command
    return args.config, overrides


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the ``sidecar-run`` console script and ``python -m sidecar_runtime``."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in _SUBCOMMANDS:
            from . import _commands

            code = getattr(_commands, _SUBCOMMANDS[args[0]])(args[1:])
        else:
            from ._run import exit_now, run

            exit_now(run(args))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


_SUBCOMMANDS = {
    "check": "check",
    "plugins": "plugins",
    "status": "status",
    "demo": "demo",
    "systemd-unit": "systemd_unit",
    "schema": "schema",
}
