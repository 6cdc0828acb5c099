"""Config value types that plugins share: durations and signals, decoded from friendly text.

``Duration`` is a float of seconds read from ``"10s"``, ``"500ms"`` or a bare number;
``Signal`` is a signal number read from ``"TERM"``, ``"SIGTERM"`` or ``15``. Use them as field
types in a plugin's ``Config`` struct; the loader decodes them and error messages carry the key.
"""

from __future__ import annotations

import signal as _signal
from typing import Any

from ._convert import format_duration, parse_duration, parse_signal, signal_name

__all__ = ["Duration", "Signal", "dec_hook", "enc_hook"]


class Duration(float):
    """Seconds, written in config as ``"10s"``, ``"500ms"``, ``"1m30s"`` or a number."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Duration({format_duration(self)!r})"


class Signal(int):
    """A signal number, written in config as ``"TERM"``, ``"SIGTERM"`` or ``15``."""

    __slots__ = ()

    @property
    def name(self) -> str:
        return signal_name(self)

    def __repr__(self) -> str:
        return f"Signal({self.name!r})"

    def as_signals(self) -> _signal.Signals:
        return _signal.Signals(int(self))


def dec_hook(type_: type, obj: Any) -> Any:
    """msgspec decode hook for :class:`Duration` and :class:`Signal`."""
    if type_ is Duration:
        return Duration(parse_duration(obj))
    if type_ is Signal:
        return Signal(parse_signal(obj))
    msg = f"unsupported type {type_!r}"
    raise NotImplementedError(msg)


def enc_hook(obj: Any) -> Any:
    """msgspec encode hook: durations and signals back to the text a person writes."""
    if isinstance(obj, Duration):
        return format_duration(obj)
    if isinstance(obj, Signal):
        return obj.name
    msg = f"cannot encode {type(obj).__name__}"
    raise NotImplementedError(msg)
