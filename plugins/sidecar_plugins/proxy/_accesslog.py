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
        # The runtime's logger answers whether ``info`` is written; any other logger: assume so.
        self._info_enabled = getattr(log, "is_enabled_for", lambda level: True)
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
        """One ``request_finished`` event (unless sampled out, or ``info`` is not logged)."""
        if not self.enabled or not self._info_enabled("info"):
            return
        status = outcome.status
        detail = outcome.detail
        if (
            self._sample < 1.0
            and status < 500
            and status != 499
            and not detail
            and self._rng.random() >= self._sample
        ):
            return
        upstream_ms = outcome.upstream_ms
        if detail:
            self._log.info(
                "request_finished",
                method=method,
                path=path,
                status=status,
                bytes_in=outcome.bytes_in,
                bytes_out=bytes_out,
                duration_ms=round(duration * 1e6) / 1000,
                upstream_ms=round(upstream_ms * 1000) / 1000 if upstream_ms is not None else None,
                upstream=outcome.upstream or None,
                endpoint=outcome.endpoint or None,
                route=outcome.route or None,
                retries=outcome.retries,
                request_id=outcome.request_id.decode("latin-1"),
                client=client,
                identity=identity,
                detail=detail,
            )
            return
        self._log.info(  # the same fields without ``detail`` (a branch is cheaper than ``**``)
            "request_finished",
            method=method,
            path=path,
            status=status,
            bytes_in=outcome.bytes_in,
            bytes_out=bytes_out,
            duration_ms=round(duration * 1e6) / 1000,  # round(x, 3) formats a string: slower
            upstream_ms=round(upstream_ms * 1000) / 1000 if upstream_ms is not None else None,
            upstream=outcome.upstream or None,
            endpoint=outcome.endpoint or None,
            route=outcome.route or None,
            retries=outcome.retries,
            request_id=outcome.request_id.decode("latin-1"),
            client=client,
            identity=identity,
        )
