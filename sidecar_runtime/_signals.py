"""Signal policy: what the runtime does with each signal it receives.

SIGTERM and SIGINT start the graceful stop (a second one escalates to SIGKILL); every other
catchable signal is forwarded to the app exactly once, to its process group or to it alone,
optionally rewritten (dumb-init's ``--rewrite``; rewriting to ``none`` drops it). SIGWINCH first
copies the terminal size to the app's pty. SIGTSTP, SIGTTIN and SIGTTOU are forwarded and then
the runtime stops itself, as a shell job would. SIGHUP reloads the runtime's own configuration
instead of being forwarded when ``signals.hup`` says so (``auto``: with a config file).
Handlers are installed for all of them, so as PID 1 (where the kernel drops signals without a
handler) nothing is ignored by accident.

Not handled: SIGCHLD (the reaper's), SIGKILL/SIGSTOP (uncatchable), the synchronous fault
signals (SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS, SIGABRT), and SIGPIPE and SIGXFSZ,
which the runtime would raise against itself when its own output breaks.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping

import anyio
from anyio.abc import TaskStatus

from ._convert import signal_name

__all__ = ["FORWARDED_SIGNALS", "SignalPolicy", "capture_early_signals", "take_early_signals"]

_NOT_HANDLED = {
    signal.SIGCHLD,
    signal.SIGKILL,
    signal.SIGSTOP,
    signal.SIGSEGV,
    signal.SIGBUS,
    signal.SIGFPE,
    signal.SIGILL,
    signal.SIGTRAP,
    signal.SIGSYS,
    signal.SIGABRT,
    signal.SIGPIPE,
    signal.SIGXFSZ,
}
#: Every signal the runtime installs a handler for.
FORWARDED_SIGNALS: tuple[int, ...] = tuple(
    sorted(int(s) for s in signal.valid_signals() if s not in _NOT_HANDLED)
)
_STOP_SIGNALS = {int(signal.SIGTERM), int(signal.SIGINT)}
_JOB_CONTROL = {int(signal.SIGTSTP), int(signal.SIGTTIN), int(signal.SIGTTOU)}


_early: list[int] = []


def _record(signum: int, frame: object) -> None:
    _early.append(signum)


def capture_early_signals() -> None:
    """Hold every handled signal from the first moment of the command until the runtime's own
    handlers are installed (as PID 1, a signal without a handler would be dropped)."""
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, _record)


def take_early_signals() -> list[int]:
    """The signals held since :func:`capture_early_signals`, in arrival order."""
    taken = list(_early)
    _early.clear()
    return taken


class SignalPolicy:
    """Receives signals and acts on them through the callbacks it is given."""

    def __init__(
        self,
        *,
        rewrite: Mapping[int, int],
        forward: Callable[[int], bool],
        stop: Callable[[int, int], None],
        escalate: Callable[[], None],
        on_winch: Callable[[], None],
        log: object,
        on_child: Callable[[], None] = lambda: None,
        on_reload: Callable[[int], None] = lambda sig: None,
        reload_signals: frozenset[int] = frozenset(),
    ) -> None:
        self.rewrite = dict(rewrite)
        self._forward = forward
        self._stop = stop
        self._escalate = escalate
        self._on_winch = on_winch
        self._on_child = on_child
        self._on_reload = on_reload
        self.reload_signals = reload_signals
        self._log = log
        self.stopping = False
        self.received: dict[int, int] = {}

    def handle(self, sig: int) -> None:
        """Act on one received signal."""
        self.received[sig] = self.received.get(sig, 0) + 1
        log = self._log
        if sig in _STOP_SIGNALS:
            if self.stopping:
                log.warning("signal_escalated", signal=signal_name(sig))  # type: ignore[attr-defined]
                self._escalate()
            else:
                self.stopping = True
                self._stop(sig, self.rewrite.get(sig, sig))  # the stop signal goes out first
                log.info("signal_received", signal=signal_name(sig), action="stop")  # type: ignore[attr-defined]
            return
        if sig in self.reload_signals:
            log.info("signal_received", signal=signal_name(sig), action="reload")  # type: ignore[attr-defined]
            self._on_reload(sig)
            return
        target = self.rewrite.get(sig, sig)
        if sig == signal.SIGWINCH:
            self._on_winch()
        if target:
            sent = self._forward(target)
            log.debug(  # type: ignore[attr-defined]
                "signal_forwarded",
                signal=signal_name(sig),
                sent=signal_name(target),
                delivered=sent,
            )
        if sig in _JOB_CONTROL and os.getpid() != 1:
            os.kill(os.getpid(), signal.SIGSTOP)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own every handled signal (and SIGCHLD, for the reaper) until cancelled.

        The process's signal wakeup fd is this task's pipe: the interpreter writes one byte,
        the signal number, per delivery, so queued real-time signals keep their count and a
        signal taken by another thread still wakes the loop. (Installing some 60 handlers
        through the event loop's signal API would also cost ~20 ms at start and at exit.)
        """
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        handled = (*FORWARDED_SIGNALS, int(signal.SIGCHLD))
        previous = -1
        try:
            for sig in handled:
                signal.signal(sig, _ignore)  # a Python handler makes the wakeup fd get the byte
            previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
            task_status.started()
            while True:
                await anyio.wait_readable(read_fd)
                try:
                    data = os.read(read_fd, 4096)
                except BlockingIOError:
                    continue
                if signal.SIGCHLD in data:
                    self._on_child()
                for sig in data:
                    if sig != signal.SIGCHLD:
                        self.handle(sig)
        finally:
            for sig in handled:  # late signals are held, never lost to a default disposition
                signal.signal(sig, _record)
            signal.set_wakeup_fd(previous)
            anyio.notify_closing(read_fd)
            os.close(read_fd)
            os.close(write_fd)


def _ignore(signum: int, frame: object) -> None:
    """The Python-level handler; the work happens on the wakeup fd's byte."""
