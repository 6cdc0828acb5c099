"""The runtime's own logs: structlog events with fields, JSON for machines, console for people.

Configured once by the CLI. Logs go to stderr (or a file) and never to stdout, which belongs to
the app. The default level is ``warning``, so a healthy run prints nothing of its own, and
structlog is imported only when the first event at an enabled level is emitted: a quiet run
does not pay for it at start-up (see ``bench/startup.py``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import IO, Any, TextIO, cast

__all__ = ["Logger", "configure_logging", "flush_logs", "get_logger"]

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class _Settings:
    level = LEVELS["warning"]
    fmt = "auto"
    stream: IO[str] | None = None
    configured = False  # structlog.configure() was called by us


_settings = _Settings()


def configure_logging(
    level: str = "warning", fmt: str = "auto", file: str | None = None
) -> IO[str]:
    """Set where and what the runtime logs; return the stream logs are written to."""
    stream: IO[str]
    if file is None:
        stream = sys.stderr
    else:
        try:
            stream = open(file, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        except OSError as err:
            from ._errors import ConfigError

            msg = f"log.file: cannot open {file!r} for writing: {err.strerror}"
            raise ConfigError(msg) from None
    _settings.level = LEVELS[level]
    _settings.fmt = fmt
    _settings.stream = stream
    _settings.configured = False
    return stream


def flush_logs() -> None:
    """Flush the log stream (before the command exits without interpreter teardown)."""
    if _settings.stream is not None:
        with contextlib.suppress(OSError, ValueError):
            _settings.stream.flush()


def _isatty(stream: IO[str]) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (OSError, ValueError):
        return False


def _configure_structlog() -> None:
    import structlog

    stream = _settings.stream or sys.stderr
    use_console = _settings.fmt == "console" or (_settings.fmt == "auto" and _isatty(stream))
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_console:
        processors.append(structlog.dev.ConsoleRenderer(colors=_isatty(stream)))
    else:
        processors += [
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(sort_keys=False),
        ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_settings.level),
        logger_factory=structlog.WriteLoggerFactory(file=cast("TextIO", stream)),
        cache_logger_on_first_use=False,
    )
    _settings.configured = True


class Logger:
    """A structlog-compatible bound logger that imports structlog on first use."""

    __slots__ = ("_fields",)

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def bind(self, **fields: Any) -> Logger:
        return Logger(**{**self._fields, **fields})

    def is_enabled_for(self, level: str) -> bool:
        """Whether an event at ``level`` would be written (skip building costly fields)."""
        return LEVELS[level] >= _settings.level

    def _emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if LEVELS[level] < _settings.level:
            return
        if not _settings.configured:
            _configure_structlog()
        import structlog

        getattr(structlog.get_logger("sidecar-run"), level)(event, **self._fields, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._emit("critical", event, fields)


def get_logger(**fields: Any) -> Logger:
    """A bound logger carrying ``fields`` on every event."""
    return Logger(**fields)
