"""Kubernetes' probe semantics: thresholds per probe, and the period loop with its timeout.

:class:`Probe` is one configured probe: its check, its state in the current run of the app and
its last result, as a :class:`CheckLine` for the endpoints.

:class:`ProbeState` is pure: fed one result at a time, it says when the probe's status changes.
A readiness probe starts ``pending`` (not ready) and passes after ``success_threshold``
successes in a row; a liveness probe starts ``passing``; a startup probe passes on its first
success and is then done. ``failure_threshold`` failures in a row make any of them ``failing``;
a failing liveness or startup probe is done too (the app is restarted and the next process
starts from scratch). :func:`run_probe` runs one probe on its period until it is done; a
reload that changes only a probe's timing carries its state over (:meth:`ProbeState.retuned`)
and resumes the loop one new period after the last check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import anyio
import msgspec

from ._config import ProbeConfig, ProbeKind, format_seconds
from ._probes import Check, Outcome

__all__ = ["CheckLine", "Probe", "ProbeResult", "ProbeState", "Status", "run_probe"]

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

    def retuned(self, success_threshold: int, failure_threshold: int) -> ProbeState:
        """A copy with new thresholds: same status and counts, the new thresholds apply from
        the next result (a reload never changes a status by itself)."""
        state = ProbeState(self.kind, success_threshold, failure_threshold)
        state.status, state.successes, state.failures = self.status, self.successes, self.failures
        return state

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


class CheckLine(msgspec.Struct, frozen=True):
    """One line of a ``?verbose`` listing."""

    name: str
    ok: bool
    detail: str = ""
    duration: float | None = None


class Probe:
    """A configured probe, its check, and its state in the current run."""

    def __init__(self, name: str, config: ProbeConfig, check: Check, board_name: str) -> None:
        self.name = name
        self.config = config
        self.kind = config.kind
        self.check = check
        self.board_name = board_name
        self.state = self._new_state()
        self.last: ProbeResult | None = None
        self.last_check: float | None = None  # when the last check began (anyio clock)
        self.scope: anyio.CancelScope | None = None  # its loop in the current run
        self.note = ""  # the detail shown until it is probed

    def _new_state(self) -> ProbeState:
        c = self.config
        return ProbeState(c.kind, c.success_threshold, c.failure_threshold)

    def reset(self) -> None:
        self.state = self._new_state()
        self.last = None
        self.last_check = None
        self.scope = None
        self.note = ""

    def cancel(self) -> None:
        """Stop its loop; a result the loop still delivers is ignored."""
        if self.scope is not None:
            self.scope.cancel()
            self.scope = None

    @property
    def on_board(self) -> bool:
        """Readiness and startup probes hold readiness back; liveness probes do not."""
        return self.kind != "liveness"

    def line(self) -> CheckLine:
        ok = self.state.status != "failing"
        if self.last is None:
            return CheckLine(self.board_name, ok, self.note or "not probed yet")
        duration = None if self.last.timed_out else self.last.duration
        return CheckLine(self.board_name, ok, self._detail(), duration)

    def _detail(self) -> str:
        assert self.last is not None
        s = self.state
        if self.last.ok and s.status != "passing":
            return f"{self.last.detail} ({s.successes}/{s.success_threshold} successes)"
        if not self.last.ok and s.status != "failing":
            return f"{self.last.detail} ({s.failures}/{s.failure_threshold} failures)"
        return self.last.detail


async def run_probe(
    check: Check,
    state: ProbeState,
    *,
    started_at: float,
    initial_delay: float,
    period: float,
    check_timeout: float,
    on_result: Callable[[ProbeResult, Status | None], None],
    last_check: float | None = None,
) -> None:
    """Probe every ``period`` from ``started_at + initial_delay`` (anyio clock) until done.

    Each result is recorded in ``state`` and passed to ``on_result`` with the status change it
    caused, if any. A check is cancelled at ``check_timeout`` and counts as a failure. Nothing
    runs between checks: the task sleeps until the next one is due. ``last_check`` (anyio
    clock) is when an earlier loop of the same probe last checked: the first check is then no
    sooner than one ``period`` after it (a reload adds no extra check).
    """
    due = started_at + initial_delay
    if last_check is not None:
        due = max(due, last_check + period)
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
