"""``states.md``: the app's state machine, as a diagram and as tables of states and edges."""

from __future__ import annotations

from sidecar_runtime import _state

from .markdown import page, table
from .prose import STATE_DOCS, check_prose


def state_diagram() -> str:
    """The state table as a Mermaid ``stateDiagram-v2`` block, every edge labelled."""
    states = [s.value for s in _state.AppState]
    mermaid = ["stateDiagram-v2", f"    [*] --> {states[0]}"]
    mermaid += [f"    {a.value} --> {b.value}: {why}" for (a, b), why in _state.TRANSITIONS.items()]
    mermaid += [f"    {s.value} --> [*]" for s in _state.AppState if s.is_terminal]
    return "```mermaid\n" + "\n".join(mermaid) + "\n```"


def render_states() -> str:
    states = [s.value for s in _state.AppState]
    check_prose("states", "STATE_DOCS", STATE_DOCS, states)
    rows = [
        [
            f"`{s.value}`",
            "yes" if s.has_process else "no",
            "yes" if s.is_terminal else "no",
            STATE_DOCS[s.value],
        ]
        for s in _state.AppState
    ]
    edges = [[f"`{a.value}`", f"`{b.value}`", why] for (a, b), why in _state.TRANSITIONS.items()]
    return page(
        "App states",
        (
            "The app's lifecycle is one state machine with supervisord's state names. Every "
            "change is logged as `app_state_changed` with the reason below, published to plugins "
            "as a `StateChanged` event, and shown by `/status`. Any edge not listed here is a bug "
            "and raises `InvalidTransition`."
        ),
        "## Diagram",
        state_diagram(),
        "## States",
        table(["State", "Process alive", "Terminal", "Meaning"], rows),
        "## Transitions",
        table(["From", "To", "Reason"], edges),
    )
