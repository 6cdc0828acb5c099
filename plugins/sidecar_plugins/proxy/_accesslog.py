"""The access log: one ``request_finished`` event per request, as structlog fields.

Sampling (``access_log.sample``) applies to successful requests only: every response of 500
or more, every proxy-generated error and every request the client abandoned is logged.
"""

from __future__ import annotations

import random
from typing import Any

from ._config import AccessLogConfig

__all__ = ["AccessLog", "Outcome"]


class Outcome:
    """What the engine learned about one request, for the log and the metrics."""

    __slots__ = (
        "bytes_in",
        "detail",
        "endpoint",
        "request_id",
        "retries",
        "route",
        "status",
        "upstream",
        "upstream_ms",
    )

    def __init__(self) -> None:
        self.status = 0
        self.route = ""
        self.upstream = ""
        self.endpoint = ""
        self.upstream_ms: float | None = None
        self.retries = 0
        self.detail = ""
        self.bytes_in = 0
        self.request_id = b""


class AccessLog:
    """Emits ``request_finished`` events through the plugin's logger."""

    def __init__(self, log: Any, config: AccessLogConfig, rng: random.Random | None = None) -> None:
        self._log = log
        self.enabled = config.enabled
        self._sample = config.sample
        self._rng = rng or random.Random()  # noqa: S311 - sampling, not cryptography

    def emit(
        self,
        *,
        method: str,
        path: str,
        outcome: Outcome,
        bytes_out: int,
        duration: float,
        client: str,
        identity: str | None,
    ) -> None:
        if not self.enabled:
            return
        status = outcome.status
        if (
            self._sample < 1.0
            and status < 500
            and status != 499
            and not outcome.detail
            and self._rng.random() >= self._sample
        ):
            return
        fields: dict[str, Any] = {
            "method": method,
            "path": path,
            "status": status,
            "bytes_in": outcome.bytes_in,
            "bytes_out": bytes_out,
            "duration_ms": round(duration * 1000, 3),
            "upstream_ms": (
                round(outcome.upstream_ms, 3) if outcome.upstream_ms is not None else None
            ),
            "upstream": outcome.upstream or None,
            "endpoint": outcome.endpoint or None,
            "route": outcome.route or None,
            "retries": outcome.retries,
            "request_id": outcome.request_id.decode("latin-1"),
            "client": client,
            "identity": identity,
        }
        if outcome.detail:
            fields["detail"] = outcome.detail
        self._log.info("request_finished", **fields)
