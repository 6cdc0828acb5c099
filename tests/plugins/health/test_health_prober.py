"""Kubernetes' probe semantics, without processes or sockets: thresholds and the period loop.

Pure logic: the period loop runs on asyncio and trio.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable

import anyio
import pytest
from sidecar_plugins.health._prober import ProbeResult, ProbeState, run_probe
from sidecar_plugins.health._probes import Outcome


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The prober imports neither asyncio nor aiohttp: both backends."""
    return str(request.param)


def feed(state: ProbeState, results: str) -> list[str | None]:
    """Record ``results`` (``+`` success, ``-`` failure); return each change."""
    return [state.record(r == "+") for r in results]


def test_readiness_starts_pending_and_follows_both_thresholds() -> None:
    """Readiness: pending until success_threshold passes; failing after failure_threshold."""
    state = ProbeState("readiness", success_threshold=2, failure_threshold=3)
    assert state.status == "pending"
    assert feed(state, "+-++") == [None, None, None, "passing"]
    assert feed(state, "--+--") == [None, None, None, None, None]  # never 3 in a row
    assert feed(state, "-") == ["failing"]
    assert feed(state, "+") == [None]
    assert feed(state, "+") == ["passing"]
    assert not state.done


def test_readiness_that_never_passes_reports_failing() -> None:
    """A readiness probe failing from the start turns pending → failing for the log."""
    state = ProbeState("readiness", success_threshold=1, failure_threshold=2)
    assert feed(state, "--") == [None, "failing"]


def test_liveness_starts_passing_and_is_done_when_it_fails() -> None:
    """Liveness: passing at first; failure_threshold failures in a row fail it for the run."""
    state = ProbeState("liveness", success_threshold=1, failure_threshold=3)
    assert state.status == "passing"
    assert feed(state, "--+--") == [None] * 5
    assert not state.done
    assert feed(state, "-") == ["failing"]
    assert state.done


def test_startup_passes_once_or_fails_after_its_threshold() -> None:
    """Startup: done on the first success, or failing (restart) after failure_threshold."""
    passed = ProbeState("startup", success_threshold=1, failure_threshold=3)
    assert feed(passed, "--+") == [None, None, "passing"]
    assert passed.done
    failed = ProbeState("startup", success_threshold=1, failure_threshold=3)
    assert feed(failed, "---") == [None, None, "failing"]
    assert failed.done


def scripted(
    results: str, delay: float = 0.0
) -> tuple[Callable[[], Awaitable[Outcome]], list[float]]:
    """A check returning ``results`` in turn (then successes), recording when each began."""
    calls: list[float] = []

    async def check() -> Outcome:
        calls.append(anyio.current_time())
        i = len(calls) - 1
        if delay:
            await anyio.sleep(delay)
        ok = results[i] == "+" if i < len(results) else True
        return Outcome(ok, "fine" if ok else "broken")

    return check, calls


@pytest.mark.anyio
async def test_period_and_initial_delay_are_kept() -> None:
    """The first check waits initial_delay from the start; then one check per period."""
    check, calls = scripted("++")
    state = ProbeState("startup", 1, 3)
    seen: list[ProbeResult] = []
    start = anyio.current_time()
    with anyio.fail_after(5):
        await run_probe(
            check,
            state,
            started_at=start,
            initial_delay=0.05,
            period=0.02,
            check_timeout=0.01,
            on_result=lambda result, change: seen.append(result),
        )
    assert len(calls) == 1  # a startup probe stops at its first success
    assert calls[0] - start >= 0.05
    assert seen[0].ok
    assert seen[0].detail == "fine"

    check, calls = scripted("---")
    state = ProbeState("liveness", 1, 3)
    start = anyio.current_time()
    with anyio.fail_after(5):
        await run_probe(
            check,
            state,
            started_at=start,
            initial_delay=0.0,
            period=0.05,
            check_timeout=0.01,
            on_result=lambda result, change: seen.append(result),
        )
    assert len(calls) == 3
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert all(0.045 <= gap < 0.5 for gap in gaps), gaps


@pytest.mark.anyio
async def test_a_slow_check_is_cancelled_at_its_timeout_and_fails() -> None:
    """A check that outlives check_timeout is cancelled and recorded as a timed-out failure."""
    check, _ = scripted("+", delay=10)
    state = ProbeState("liveness", 1, 1)
    seen: list[ProbeResult] = []
    with anyio.fail_after(5):
        await run_probe(
            check,
            state,
            started_at=anyio.current_time(),
            initial_delay=0,
            period=0.2,
            check_timeout=0.03,
            on_result=lambda result, change: seen.append(result),
        )
    (result,) = seen
    assert not result.ok
    assert result.timed_out
    assert result.detail == "timed out after 30ms"
    assert 0.03 <= result.duration < 1
    assert state.status == "failing"


@pytest.mark.anyio
async def test_a_late_loop_does_not_burst_to_catch_up() -> None:
    """After a stall the next check runs once, not once per missed period."""
    check, calls = scripted("---")
    state = ProbeState("liveness", 1, 3)
    with anyio.fail_after(5):
        await run_probe(
            check,
            state,
            started_at=anyio.current_time() - 1.0,  # ten periods overdue
            initial_delay=0,
            period=0.1,
            check_timeout=0.05,
            on_result=lambda result, change: None,
        )
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert all(gap >= 0.09 for gap in gaps), gaps
