"""Flag values: each turns one command-line value into its config form (argparse ``type=``),
or raises ``argparse.ArgumentTypeError`` with a one-line reason; and the overrides of the
flags that fill a plugin's table (``--probe``, ``--proxy`` with ``--tls-*``).
"""

from __future__ import annotations

import argparse
from typing import Any

from ._convert import parse_address, parse_signal

__all__ = [
    "admin_value",
    "checked",
    "max_restarts_value",
    "probe_value",
    "proxy_overrides",
    "proxy_value",
    "rewrite_value",
    "url_value",
]


def checked(convert: Any, what: str) -> Any:
    def check(text: str) -> str:
        try:
            convert(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return text

    check.__name__ = what
    return check


def max_restarts_value(text: str) -> int | str:
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


def admin_value(text: str) -> str:
    if text != "off":
        try:
            parse_address(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
    return text


def url_value(text: str) -> str:
    if not text.startswith(("http://", "https://")) or len(text.split("/", 3)[2]) == 0:
        msg = f"expected an http:// or https:// URL, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return text


_PROBE_KINDS = ("startup", "liveness", "readiness")


def probe_value(text: str) -> dict[str, Any]:
    """``readiness=http://127.0.0.1:8080/health`` → the probe's config table."""
    kind, sep, target = text.partition("=")
    if not sep or kind not in _PROBE_KINDS:
        msg = f"expected KIND=TARGET with KIND one of {', '.join(_PROBE_KINDS)}, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    if target.startswith(("http://", "https://")):
        return {"kind": kind, "http": url_value(target)}
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


def proxy_value(text: str) -> tuple[str, str]:
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


def proxy_overrides(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
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


def rewrite_value(text: str) -> tuple[str, str]:
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
