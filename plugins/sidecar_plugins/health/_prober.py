"""Kubernetes' probe semantics: thresholds per probe, and the period loop with its timeout.

:class:`ProbeState` is pure: fed one result at a time, it says when the probe's status changes.
A readiness probe starts ``pending`` (not ready) and passes after ``success_threshold``
successes in a row; a liveness probe starts ``passing``; a startup probe passes on its first
success and is then done. ``failure_threshold`` failures in a row make any of them ``failing``;
a failing liveness or startup probe is done too (the app is restarted and the next process
starts from scratch). :func:`run_probe` runs one probe on its period until it is done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import anyio
import msgspec

from ._config import ProbeKind, format_seconds
from ._probes import Check, Outcome

__all__ = ["ProbeResult", "ProbeState", "Status", "run_probe"]

Status = Literal["pending", "passing", "failing"]


class ProbeResult(msgspec.Struct, frozen=True):
    """The last result of a probe, as the endpoints show it."""

    ok: bool
    detail: str
    duration: float
    timed_out: bool = False
    at: float = msgspec.field(default_factory=time.time)


class ProbeState:
    """The thresholds of one probe for one process of the app."""

    def __init__(self, kind: ProbeKind, success_threshold: int, failure_threshold: int) -> None:
        self.kind = kind
        self.success_threshold = success_threshold
        self.failure_threshold = failure_threshold
        self.status: Status = "passing" if kind == "liveness" else "pending"
        self.successes = 0
        self.failures = 0

    @property
    def done(self) -> bool:
        """No more probing in this run: startup passed, or liveness/startup failed."""
        if self.kind == "startup":
            return self.status != "pending"
        return self.kind == "liveness" and self.status == "failing"

    def record(self, ok: bool) -> Status | None:
        """Count one result; return the new status when it changed."""
        if ok:
            self.successes += 1
            self.failures = 0
            if self.status != "passing" and self.successes >= self.success_threshold:
                self.status = "passing"
                return self.status
        else:
            self.failures += 1
            self.successes = 0
            if self.status != "failing" and self.failures >= self.failure_threshold:
                self.status = "failing"
                return self.status
        return None


async def run_probe(
    check: Check,
    state: ProbeState,
    *,
    started_at: float,
    initial_delay: float,
    period: float,
    check_timeout: float,
    on_result: Callable[[ProbeResult, Status | None], None],
) -> None:
    """Probe every ``period`` from ``started_at + initial_delay`` (anyio clock) until done.

    Each result is recorded in ``state`` and passed to ``on_result`` with the status change it
    caused, if any. A check is cancelled at ``check_timeout`` and counts as a failure. Nothing
    runs between checks: the task sleeps until the next one is due.
    """
    due = started_at + initial_delay
    while not state.done:
        await anyio.sleep_until(due)
        began = anyio.current_time()
        with anyio.move_on_after(check_timeout) as scope:
            outcome = await check()
        duration = anyio.current_time() - began
        if scope.cancelled_caught:
            outcome = Outcome(False, f"timed out after {format_seconds(check_timeout)}")
        result = ProbeResult(outcome.ok, outcome.detail, duration, scope.cancelled_caught)
        on_result(result, state.record(result.ok))
        due += period
        now = anyio.current_time()
        if due < now:  # held up for more than a period: go on from now, never in a burst
            due = now + period
