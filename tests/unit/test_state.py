"""The app state machine as data: legal edges, illegal edges, reachability, terminal states."""

from __future__ import annotations

import itertools
from collections import deque

import pytest

from sidecar_runtime import AppState
from sidecar_runtime._state import TRANSITIONS, InvalidTransition, transition

S = AppState
ALL_PAIRS = list(itertools.product(AppState, AppState))
ILLEGAL = [pair for pair in ALL_PAIRS if pair not in TRANSITIONS]

#: The supervisord-style graph the docs describe, spelled out independently of the table.
EXPECTED_EDGES = {
    (S.STOPPED, S.STARTING),
    (S.STOPPED, S.FATAL),
    (S.STOPPED, S.EXITED),
    (S.STARTING, S.RUNNING),
    (S.STARTING, S.BACKOFF),
    (S.STARTING, S.EXITED),
    (S.STARTING, S.FATAL),
    (S.STARTING, S.STOPPING),
    (S.RUNNING, S.BACKOFF),
    (S.RUNNING, S.EXITED),
    (S.RUNNING, S.FATAL),
    (S.RUNNING, S.STOPPING),
    (S.BACKOFF, S.STARTING),
    (S.BACKOFF, S.EXITED),
    (S.BACKOFF, S.FATAL),
    (S.STOPPING, S.BACKOFF),
    (S.STOPPING, S.EXITED),
}


def test_table_is_the_documented_graph() -> None:
    """TRANSITIONS holds exactly the documented edges."""
    assert set(TRANSITIONS) == EXPECTED_EDGES


@pytest.mark.parametrize(("old", "new"), sorted(TRANSITIONS, key=str))
def test_every_legal_edge_is_accepted_with_a_reason(old: AppState, new: AppState) -> None:
    """transition() returns a non-empty reason for each edge in the table."""
    reason = transition(old, new)
    assert reason
    assert reason == TRANSITIONS[(old, new)]


@pytest.mark.parametrize(("old", "new"), ILLEGAL, ids=[f"{a.value}->{b.value}" for a, b in ILLEGAL])
def test_every_illegal_edge_raises(old: AppState, new: AppState) -> None:
    """Any pair not in the table (self-loops included) raises InvalidTransition naming both."""
    with pytest.raises(InvalidTransition, match=f"{old.value} -> {new.value}"):
        transition(old, new)


def test_self_loops_are_illegal() -> None:
    """No state transitions to itself."""
    assert all((state, state) not in TRANSITIONS for state in AppState)


def test_every_state_is_reachable_from_stopped() -> None:
    """A breadth-first walk of the table from STOPPED visits every state."""
    seen = {S.STOPPED}
    queue = deque([S.STOPPED])
    while queue:
        current = queue.popleft()
        for old, new in TRANSITIONS:
            if old is current and new not in seen:
                seen.add(new)
                queue.append(new)
    assert seen == set(AppState)


def test_terminal_states_have_no_outgoing_edges() -> None:
    """EXITED and FATAL are terminal: the table has no edge leaving them."""
    terminal = {state for state in AppState if state.is_terminal}
    assert terminal == {S.EXITED, S.FATAL}
    assert not [edge for edge in TRANSITIONS if edge[0] in terminal]


def test_non_terminal_states_can_leave() -> None:
    """Every non-terminal state has at least one outgoing edge."""
    for state in AppState:
        if not state.is_terminal:
            assert any(old is state for old, _ in TRANSITIONS), state


def test_stopped_is_never_reentered() -> None:
    """STOPPED is only the initial state: no edge leads back to it."""
    assert not [edge for edge in TRANSITIONS if edge[1] is S.STOPPED]


def test_has_process_states() -> None:
    """Only STARTING, RUNNING and STOPPING may have a live process."""
    assert {s for s in AppState if s.has_process} == {S.STARTING, S.RUNNING, S.STOPPING}
