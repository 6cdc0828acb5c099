"""Small pure converters with good messages: durations, signals, addresses, users.

Each raises :class:`ValueError` with a message that quotes the bad value; callers add where it
came from (a key path or a flag).
"""

from __future__ import annotations

import re
import signal
from typing import Literal

import msgspec

__all__ = [
    "Address",
    "format_duration",
    "parse_address",
    "parse_duration",
    "parse_signal",
    "signal_name",
]

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|s|m|h)")
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Return seconds for ``10s``, ``500ms``, ``1m30s``, ``2h``, ``1.5`` or a bare number.

    >>> parse_duration("1m30s")
    90.0
    """
    if isinstance(value, bool):
        msg = f"expected a duration like '10s', '500ms' or a number of seconds, got {value!r}"
        raise ValueError(msg)
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:
            msg = f"invalid duration {value!r}: too large"
            raise ValueError(msg) from None
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _DURATION_RE.finditer(text) if text.isascii() else ():
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                msg = f"invalid duration {value!r}: use e.g. '10s', '500ms', '1m30s' or seconds"
                raise ValueError(msg) from None
    else:
        msg = f"expected a duration like '10s' or a number of seconds, got {value!r}"
        raise ValueError(msg)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        msg = f"invalid duration {value!r}: must be finite"
        raise ValueError(msg)
    if seconds < 0:
        msg = f"invalid duration {value!r}: must not be negative"
        raise ValueError(msg)
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds the way :func:`parse_duration` reads them back (``1.5s``, ``250ms``)."""
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


_UNCATCHABLE = {signal.SIGKILL, signal.SIGSTOP}


def parse_signal(value: object) -> signal.Signals:
    """Return the signal for ``TERM``, ``SIGTERM``, ``sigterm``, ``15`` or ``"15"``.

    >>> parse_signal("hup").name
    'SIGHUP'
    """
    if isinstance(value, bool):
        msg = f"value {value!r} is not a valid signal name"
        raise ValueError(msg)
    if isinstance(value, str):
        text = value.strip().upper()
        if text.isascii() and text.isdigit():
            value = int(text)
        else:
            name = text if text.startswith("SIG") else "SIG" + text
            try:
                return signal.Signals[name]
            except KeyError:
                msg = f"value {value!r} is not a valid signal name"
                raise ValueError(msg) from None
    if isinstance(value, int):
        try:
            return signal.Signals(value)
        except ValueError:
            msg = f"value {value!r} is not a valid signal number"
            raise ValueError(msg) from None
    msg = f"value {value!r} is not a valid signal name"
    raise ValueError(msg)


def signal_name(sig: int) -> str:
    """Return ``TERM`` for 15; the number as text for signals without a name."""
    try:
        return signal.Signals(sig).name.removeprefix("SIG")
    except ValueError:
        return str(sig)


class Address(msgspec.Struct, frozen=True):
    """A listen address: TCP ``host:port`` or a unix socket path."""

    kind: Literal["tcp", "unix"]
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(value: str) -> Address:
    """Parse ``127.0.0.1:9901``, ``[::1]:0``, ``:9901`` (all interfaces) or ``unix:/path``."""
    if not isinstance(value, str) or not value:
        msg = f"invalid address {value!r}: expected 'HOST:PORT' or 'unix:PATH'"
        raise ValueError(msg)
    if value.startswith("unix:"):
        path = value[5:]
        if not path:
            msg = f"invalid address {value!r}: 'unix:' needs a socket path"
            raise ValueError(msg)
        return Address("unix", path=path)
    if value.startswith("/"):
        return Address("unix", path=value)
    host, sep, port_text = value.rpartition(":")
    if not sep:
        msg = f"invalid address {value!r}: expected 'HOST:PORT' or 'unix:PATH'"
        raise ValueError(msg)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        msg = f"invalid address {value!r}: write IPv6 hosts in brackets, e.g. '[::1]:9901'"
        raise ValueError(msg)
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        msg = f"invalid address {value!r}: port must be a number in 0..65535"
        raise ValueError(msg)
    return Address("tcp", host=host or "0.0.0.0", port=int(port_text))  # noqa: S104
