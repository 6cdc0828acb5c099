"""``signals.md``: the signals sidecar-run handles (and what it does with each), and the rest."""

from __future__ import annotations

import signal

from sidecar_runtime import _signals
from sidecar_runtime._convert import signal_name

from .markdown import page, table
from .prose import NOT_HANDLED_DOCS, check_prose


def _signal_action(sig: int) -> str:
    if sig in _signals._STOP_SIGNALS:
        if sig == signal.SIGTERM:
            return (
                "Starts the graceful shutdown; the app gets `stop.signal`. "
                "A second one: SIGKILL to the app's group."
            )
        return (
            "Starts the graceful shutdown; the app gets SIGINT (or its rewrite). "
            "A second one: SIGKILL to the app's group."
        )
    if sig == signal.SIGWINCH:
        return "Copies the terminal size to the app's pty, then forwarded."
    if sig in _signals._JOB_CONTROL:
        return "Forwarded; then sidecar-run stops itself like a shell job (not as PID 1)."
    return "Forwarded."


def render_signals() -> str:
    named = []
    realtime = []
    for sig in _signals.FORWARDED_SIGNALS:
        if signal.SIGRTMIN <= sig <= signal.SIGRTMAX:
            realtime.append(sig)
        else:
            named.append([f"`SIG{signal_name(sig)}`", str(sig), _signal_action(sig)])
    if realtime:
        named.append(
            [
                "`SIGRTMIN`..`SIGRTMAX`",
                f"{realtime[0]}-{realtime[-1]}",
                "Forwarded.",
            ]
        )
    not_handled = sorted(_signals._NOT_HANDLED)
    names = [signal_name(s) for s in not_handled]
    check_prose("signals", "NOT_HANDLED_DOCS", NOT_HANDLED_DOCS, names)
    skipped = [
        [f"`SIG{n}`", str(int(s)), NOT_HANDLED_DOCS[n]]
        for s, n in zip(not_handled, names, strict=True)
    ]
    return page(
        "Signals",
        (
            "sidecar-run installs a handler for every signal in the first table, so as PID 1 "
            "(where the kernel drops signals that have no handler) none is ignored by accident. "
            "A forwarded signal goes to the app's process group, or to the app alone with "
            '`signals.forward_to = "child"`, after `signals.rewrite` (`--rewrite HUP:USR1`; a '
            "rewrite to `none` drops it). Signals that arrive while no app process runs are "
            "dropped."
        ),
        "## Handled",
        table(["Signal", "Number", "What sidecar-run does"], named),
        "## Not handled",
        table(["Signal", "Number", "Why"], skipped),
        (
            "The app itself starts with every signal at its default disposition and an empty "
            "signal mask, in its own session and process group, whatever sidecar-run inherited."
        ),
    )
