"""``--log-output SPEC``: one string per output, turned into that output's config table.

=====================================  ===============================================
``stdout``, ``stderr``                 JSON lines on sidecar-run's own stream
``file:PATH``                          JSON lines in PATH, rotated at 100 MiB, 5 kept
``http://...``, ``https://...``        a JSON array per batch POSTed to the URL
``loki+http://host:3100``              Loki's push API (``/loki/api/v1/push``)
``elasticsearch+http://host:9200``     the bulk API (alias ``es+http``; ``+https`` too)
``fluentd+http://host:9880/TAG``       Fluentd ``in_http``
``fluentd+tcp://host:24224/TAG``       Fluentd forward protocol (``fluentd+tls://`` for TLS)
=====================================  ===============================================

Anything else is a ``ValueError`` with a one-line message; other keys need a config file.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ._config import check_url

__all__ = ["parse_output_spec"]

_SCHEMES = {
    "loki": "loki",
    "elasticsearch": "elasticsearch",
    "es": "elasticsearch",
    "fluentd": "fluentd_http",
}
_EXAMPLES = (
    "stdout, stderr, file:PATH, http(s)://HOST/PATH, loki+http://HOST:3100, "
    "elasticsearch+http://HOST:9200, fluentd+http://HOST:9880/TAG, fluentd+tcp://HOST:24224/TAG"
)


def parse_output_spec(spec: str) -> dict[str, Any]:
    """The config table of one ``--log-output`` spec; ValueError naming the problem."""
    text = spec.strip()
    if text in ("stdout", "stderr"):
        return {"type": text}
    if text.startswith("file:"):
        path = text[len("file:") :]
        if not path or path.endswith("/"):
            msg = f"--log-output {spec!r}: expected file:PATH with a file path"
            raise ValueError(msg)
        return {"type": "file", "path": path}
    scheme, sep, _ = text.partition("://")
    if not sep:
        msg = f"--log-output {spec!r}: unknown output; expected one of {_EXAMPLES}"
        raise ValueError(msg)
    kind, plus, transport = scheme.lower().partition("+")
    if not plus and kind in ("http", "https"):
        _check(spec, text)
        return {"type": "http", "url": text}
    if kind == "fluentd" and transport in ("tcp", "tls"):
        return _forward(spec, text, tls=transport == "tls")
    if kind not in _SCHEMES or transport not in ("http", "https"):
        msg = f"--log-output {spec!r}: unknown scheme {scheme!r}; expected one of {_EXAMPLES}"
        raise ValueError(msg)
    url = transport + text[len(scheme) :]
    _check(spec, url)
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        msg = f"--log-output {spec!r}: query strings are not supported; use a config table"
        raise ValueError(msg)
    table: dict[str, Any] = {"type": _SCHEMES[kind]}
    if kind == "fluentd":
        tag = parts.path.strip("/").replace("/", ".")
        table["url"] = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        if tag:
            table["tag"] = tag
    else:
        table["url"] = url
    return table


def _check(spec: str, url: str) -> None:
    try:
        check_url("url", url, "http://127.0.0.1:8080/logs")
    except ValueError as err:
        msg = f"--log-output {spec!r}: {err}"
        raise ValueError(msg) from None


def _forward(spec: str, text: str, *, tls: bool) -> dict[str, Any]:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as err:
        msg = f"--log-output {spec!r}: {err}"
        raise ValueError(msg) from None
    if not parts.hostname or parts.query or parts.fragment:
        msg = f"--log-output {spec!r}: expected fluentd+tcp://HOST:PORT/TAG"
        raise ValueError(msg)
    table: dict[str, Any] = {"type": "fluentd_forward", "host": parts.hostname}
    if port is not None:
        table["port"] = port
    tag = parts.path.strip("/").replace("/", ".")
    if tag:
        table["tag"] = tag
    if tls:
        table["tls"] = True
    return table
