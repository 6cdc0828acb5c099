"""Restart decisions and backoff: pure, with a seeded random source."""

# ruff: noqa: S311 - seeded random.Random is the point: jitter must be reproducible

from __future__ import annotations

import random

import pytest

from sidecar_runtime import ExitStatus
from sidecar_runtime._restart import Decision, RestartTracker, backoff_delay

OK = ExitStatus(code=0)
FAIL = ExitStatus(code=1)
KILLED = ExitStatus(signal=9)


def tracker(**kwargs: object) -> RestartTracker:
    """A tracker with no jitter and a seeded rng unless told otherwise."""
    kwargs.setdefault("jitter", 0.0)
    kwargs.setdefault("rng", random.Random(1))
    return RestartTracker(**kwargs)  # type: ignore[arg-type]


def test_exit_status_returncode_and_wait_status() -> None:
    """returncode is the code, or 128+N for signal N; wait statuses decode both ways."""
    assert OK.returncode == 0
    assert ExitStatus(code=3).returncode == 3
    assert KILLED.returncode == 137
    assert ExitStatus.from_wait_status(3 << 8) == ExitStatus(code=3)
    assert ExitStatus.from_wait_status(15) == ExitStatus(signal=15)


@pytest.mark.parametrize("status", [OK, FAIL, KILLED])
def test_never_policy_always_exits(status: ExitStatus) -> None:
    """Policy never: every exit ends the app, whatever its status."""
    decision = tracker(policy="never").on_exit(status, 0.1)
    assert decision.decision is Decision.EXIT
    assert "never" in decision.reason


def test_on_failure_exits_on_success_and_restarts_on_failure() -> None:
    """Policy on-failure: code 0 exits; a non-zero code or a signal restarts."""
    t = tracker(policy="on-failure")
    assert t.on_exit(OK, 0.1).decision is Decision.EXIT
    assert t.on_exit(FAIL, 0.1).decision is Decision.RESTART
    assert t.on_exit(KILLED, 0.1).decision is Decision.RESTART


def test_on_failure_uses_configured_exit_codes() -> None:
    """exit_codes lists the successful codes; 0 is then a failure if not listed."""
    t = tracker(policy="on-failure", exit_codes=frozenset({0, 3}))
    assert t.on_exit(ExitStatus(code=3), 0.1).decision is Decision.EXIT
    t = tracker(policy="on-failure", exit_codes=frozenset({2}))
    assert t.on_exit(ExitStatus(code=2), 0.1).decision is Decision.EXIT
    assert t.on_exit(OK, 0.1).decision is Decision.RESTART


def test_signal_is_never_a_success() -> None:
    """A death by signal is a failure under on-failure even when its number is in exit_codes."""
    t = tracker(policy="on-failure", exit_codes=frozenset({0, 9}))
    assert t.on_exit(KILLED, 0.1).decision is Decision.RESTART


@pytest.mark.parametrize("status", [OK, FAIL, KILLED])
def test_always_policy_restarts_any_exit(status: ExitStatus) -> None:
    """Policy always: even a clean exit is restarted."""
    assert tracker(policy="always").on_exit(status, 0.1).decision is Decision.RESTART


def test_gives_up_after_max_restarts_unstable_runs() -> None:
    """After max_restarts consecutive unstable restarts, the next exit gives up."""
    t = tracker(policy="always", max_restarts=3, stable_seconds=10)
    decisions = [t.on_exit(FAIL, 0.5).decision for _ in range(3)]
    assert decisions == [Decision.RESTART] * 3
    final = t.on_exit(FAIL, 0.5)
    assert final.decision is Decision.GIVE_UP
    assert "max_restarts=3" in final.reason


def test_max_restarts_zero_gives_up_at_once() -> None:
    """max_restarts 0 never restarts an unstable run."""
    assert tracker(policy="always", max_restarts=0).on_exit(FAIL, 0.1).decision is Decision.GIVE_UP


def test_unlimited_restarts_never_give_up() -> None:
    """max_restarts None (unlimited) restarts forever."""
    t = tracker(policy="always", max_restarts=None, max_delay=1.0)
    assert all(t.on_exit(FAIL, 0.0).decision is Decision.RESTART for _ in range(200))


def test_stable_run_resets_the_streak() -> None:
    """A run of at least stable_seconds resets the streak and the backoff step."""
    t = tracker(policy="always", max_restarts=2, stable_seconds=5, delay=1, multiplier=2)
    assert t.on_exit(FAIL, 0.1).delay == 1
    assert t.on_exit(FAIL, 0.1).delay == 2
    stable = t.on_exit(FAIL, 5.0)
    assert stable.decision is Decision.RESTART
    assert stable.delay == 1
    assert t.streak == 1
    assert t.on_exit(FAIL, 0.1).decision is Decision.RESTART
    assert t.on_exit(FAIL, 0.1).decision is Decision.GIVE_UP


def test_run_just_below_stable_seconds_counts_as_unstable() -> None:
    """A run shorter than stable_seconds keeps the streak going."""
    t = tracker(policy="always", max_restarts=1, stable_seconds=5)
    t.on_exit(FAIL, 4.999)
    assert t.on_exit(FAIL, 4.999).decision is Decision.GIVE_UP


def test_backoff_grows_geometrically_and_is_capped() -> None:
    """Delays follow delay*multiplier**(n-1) up to max_delay."""
    t = tracker(policy="always", max_restarts=None, delay=0.5, multiplier=3, max_delay=10)
    delays = [t.on_exit(FAIL, 0.0).delay for _ in range(6)]
    assert delays == pytest.approx([0.5, 1.5, 4.5, 10, 10, 10])


def test_multiplier_one_is_constant_delay() -> None:
    """With multiplier 1 every restart waits the first delay."""
    t = tracker(policy="always", max_restarts=None, delay=0.7, multiplier=1)
    assert [t.on_exit(FAIL, 0.0).delay for _ in range(4)] == pytest.approx([0.7] * 4)


@pytest.mark.parametrize("seed", range(5))
def test_jitter_stays_within_bounds(seed: int) -> None:
    """Jitter j scales each delay by a factor within [1-j, 1]."""
    rng = random.Random(seed)
    for step in range(1, 30):
        base = min(2.0 * 2 ** (step - 1), 60.0)
        delay = backoff_delay(step, initial=2.0, maximum=60.0, multiplier=2, jitter=0.3, rng=rng)
        assert base * 0.7 <= delay <= base


def test_jitter_is_deterministic_for_a_seed_and_actually_varies() -> None:
    """The same seed gives the same delays; different draws differ (jitter is applied)."""

    def delays(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [
            backoff_delay(1, initial=1.0, maximum=1.0, multiplier=2, jitter=0.5, rng=rng)
            for _ in range(20)
        ]

    assert delays(42) == delays(42)
    assert len(set(delays(42))) > 1
    assert all(0.5 <= d <= 1.0 for d in delays(42))


def test_zero_jitter_is_exact() -> None:
    """Jitter 0 leaves the delay unchanged."""
    rng = random.Random(0)
    assert backoff_delay(3, initial=1, maximum=100, multiplier=2, jitter=0, rng=rng) == 4


def test_requested_restart_backs_off_and_never_gives_up() -> None:
    """Requested restarts count as unstable runs, grow the delay, and reset after a stable run."""
    t = tracker(policy="never", max_restarts=1, delay=1, multiplier=2, max_delay=100)
    delays = [t.on_requested_restart(0.1) for _ in range(4)]
    assert delays == [1, 2, 4, 8]
    assert t.on_requested_restart(t.stable_seconds) == 1
