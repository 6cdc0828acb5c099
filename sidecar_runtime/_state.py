"""The app's state machine, as data. Everything that decides which state follows which lives here.

States and names follow supervisord: the app starts in ``STOPPED``; ``STARTING`` until it has run
``start_seconds``; ``RUNNING``; ``BACKOFF`` while waiting to be started again; ``STOPPING`` once a
stop signal was sent; ``EXITED`` when it ended and will not be started again; ``FATAL`` when the
restart policy gave up. This module imports nothing but the standard library, and the docs'
state diagram is generated from :data:`TRANSITIONS`.
"""

from __future__ import annotations

import enum

__all__ = ["TRANSITIONS", "AppState", "InvalidTransition", "transition"]


class AppState(enum.Enum):
    """The app's lifecycle state."""

    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"

    @property
    def is_terminal(self) -> bool:
        """True for states the app never leaves (the runtime then shuts down)."""
        return self in (AppState.EXITED, AppState.FATAL)

    @property
    def has_process(self) -> bool:
        """True while a process of the app may be alive."""
        return self in (AppState.STARTING, AppState.RUNNING, AppState.STOPPING)


S = AppState

#: Every legal edge, with the reason it happens. Nothing else may change the state.
TRANSITIONS: dict[tuple[AppState, AppState], str] = {
    (S.STOPPED, S.STARTING): "spawned",
    (S.STOPPED, S.FATAL): "spawn failed",
    (S.STOPPED, S.EXITED): "stop requested before start",
    (S.STARTING, S.RUNNING): "ran start_seconds",
    (S.STARTING, S.BACKOFF): "exited early, will retry",
    (S.STARTING, S.EXITED): "exited, not restarted",
    (S.STARTING, S.FATAL): "exited early, retries exhausted",
    (S.STARTING, S.STOPPING): "stop requested",
    (S.RUNNING, S.BACKOFF): "exited, will restart",
    (S.RUNNING, S.EXITED): "exited, not restarted",
    (S.RUNNING, S.FATAL): "exited, retries exhausted",
    (S.RUNNING, S.STOPPING): "stop requested",
    (S.BACKOFF, S.STARTING): "respawned",
    (S.BACKOFF, S.EXITED): "stop requested while waiting",
    (S.BACKOFF, S.FATAL): "respawn failed",
    (S.STOPPING, S.BACKOFF): "stopped for a restart",
    (S.STOPPING, S.EXITED): "stopped",
}


class InvalidTransition(RuntimeError):
    """Raised by :func:`transition` for an edge that is not in :data:`TRANSITIONS`."""


def transition(current: AppState, new: AppState) -> str:
    """Check the edge ``current → new`` and return why it happens; raise if it is illegal."""
    try:
        return TRANSITIONS[(current, new)]
    except KeyError:
        msg = f"illegal app state transition {current.value} -> {new.value}"
        raise InvalidTransition(msg) from None
