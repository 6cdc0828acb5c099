"""Restart policy and backoff: pure decisions, no processes, no clocks of their own.

``RestartTracker.on_exit`` is told how a run ended and how long it lasted, and answers whether to
restart, after what delay, or give up. Backoff is exponential with jitter and a cap, and its step
resets after a stable run (one that lasted ``stable_seconds``). The policy gives up (FATAL) after
``max_restarts`` consecutive unstable runs that it would otherwise have restarted.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    import random

__all__ = ["Decision", "ExitStatus", "RestartDecision", "RestartTracker", "backoff_delay"]


class ExitStatus(msgspec.Struct, frozen=True):
    """How a process ended: exactly one of ``code`` and ``signal`` is set."""

    code: int | None = None
    signal: int | None = None

    @classmethod
    def from_wait_status(cls, status: int) -> ExitStatus:
        """Decode a ``waitpid`` status word."""
        import os

        if os.WIFSIGNALED(status):
            return cls(signal=os.WTERMSIG(status))
        return cls(code=os.waitstatus_to_exitcode(status))

    @property
    def returncode(self) -> int:
        """The shell's view: the exit code, or 128+N when killed by signal N."""
        if self.signal is not None:
            return 128 + self.signal
        assert self.code is not None
        return self.code


class Decision(enum.Enum):
    RESTART = "restart"
    EXIT = "exit"
    GIVE_UP = "give_up"


class RestartDecision(msgspec.Struct, frozen=True):
    decision: Decision
    delay: float = 0.0
    reason: str = ""


def backoff_delay(
    step: int,
    *,
    initial: float,
    maximum: float,
    multiplier: float,
    jitter: float,
    rng: random.Random,
) -> float:
    """Delay before restart number ``step`` (1-based) of a streak.

    ``initial * multiplier**(step-1)``, capped at ``maximum``, then scaled by a uniform factor in
    ``[1 - jitter, 1]`` so that many replicas restarting together spread out.
    """
    base = initial * multiplier ** max(step - 1, 0) if multiplier > 1 else initial
    base = min(base, maximum)
    return base * (1.0 - jitter * rng.random())


class RestartTracker(msgspec.Struct):
    """Decides what follows an exit under ``policy`` (``never | on-failure | always``)."""

    policy: str = "never"
    exit_codes: frozenset[int] = frozenset({0})
    max_restarts: int | None = 5
    delay: float = 1.0
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    stable_seconds: float = 10.0
    rng: random.Random = msgspec.field(default_factory=lambda: _new_rng())
    streak: int = 0  # consecutive unstable runs restarted so far

    def on_exit(self, status: ExitStatus, ran_for: float) -> RestartDecision:
        """Return what to do after a run that ended with ``status`` after ``ran_for`` seconds."""
        success = status.signal is None and status.code in self.exit_codes
        if self.policy == "never":
            return RestartDecision(Decision.EXIT, reason="restart policy is never")
        if self.policy == "on-failure" and success:
            return RestartDecision(Decision.EXIT, reason=f"exit code {status.code} is a success")
        if ran_for >= self.stable_seconds:
            self.streak = 0
        if self.max_restarts is not None and self.streak >= self.max_restarts:
            return RestartDecision(
                Decision.GIVE_UP,
                reason=f"{self.streak} restarts in a row without a stable run "
                f"(max_restarts={self.max_restarts})",
            )
        self.streak += 1
        delay = backoff_delay(
            self.streak,
            initial=self.delay,
            maximum=self.max_delay,
            multiplier=self.multiplier,
            jitter=self.jitter,
            rng=self.rng,
        )
        return RestartDecision(Decision.RESTART, delay=delay, reason=f"policy {self.policy}")

    def on_requested_restart(self, ran_for: float) -> float:
        """Delay before a restart that was asked for (liveness, admin), whatever the policy.

        It counts as an unstable run unless the app ran ``stable_seconds``, so a liveness probe
        that keeps failing backs off like a crash loop does; it never gives up (Kubernetes).
        """
        self.streak = 1 if ran_for >= self.stable_seconds else self.streak + 1
        return backoff_delay(
            self.streak,
            initial=self.delay,
            maximum=self.max_delay,
            multiplier=self.multiplier,
            jitter=self.jitter,
            rng=self.rng,
        )


def _new_rng() -> random.Random:
    import random

    return random.Random()  # noqa: S311 - backoff jitter, not cryptography
