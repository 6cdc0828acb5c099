"""The readiness board: all checks must pass, shutdown makes it false for good, listeners."""

from __future__ import annotations

import anyio
import pytest

from sidecar_runtime import CheckResult, Readiness

pytestmark = pytest.mark.anyio


def is_ready(board: Readiness) -> bool:
    """Read the property afresh (keeps mypy from narrowing it across calls that change it)."""
    return board.ready


async def test_not_ready_without_checks() -> None:
    """A board with no checks is not ready."""
    board = Readiness()
    assert not is_ready(board)
    assert not board.ever_ready
    assert board.checks() == {}


async def test_ready_only_when_every_check_passes() -> None:
    """Readiness is the conjunction of all checks."""
    board = Readiness()
    board.set("app", True)
    assert is_ready(board)
    board.set("db", False, "connection refused")
    assert not is_ready(board)
    board.set("db", True)
    assert is_ready(board)
    board.set("app", False, "STARTING")
    assert not is_ready(board)
    assert board.ever_ready


async def test_removing_the_failing_check_makes_it_ready() -> None:
    """Removing a failing check re-evaluates readiness; removing the last one makes it false."""
    board = Readiness()
    board.set("app", True)
    board.set("probe", False)
    board.remove("probe")
    assert is_ready(board)
    board.remove("app")
    assert not is_ready(board)
    board.remove("never-registered")


async def test_checks_snapshot_holds_results() -> None:
    """checks() returns a copy with ok, detail and a timestamp."""
    board = Readiness()
    board.set("db", False, "down")
    snapshot = board.checks()
    assert snapshot["db"].ok is False
    assert snapshot["db"].detail == "down"
    assert snapshot["db"].at > 0
    assert isinstance(snapshot["db"], CheckResult)
    snapshot.clear()
    assert "db" in board.checks()


async def test_begin_shutdown_is_false_forever() -> None:
    """After begin_shutdown nothing makes the board ready again."""
    board = Readiness()
    board.set("app", True)
    board.begin_shutdown()
    assert board.shutting_down
    assert not is_ready(board)
    board.set("app", True)
    board.set("other", True)
    board.remove("other")
    assert not is_ready(board)


async def test_listener_called_once_per_change() -> None:
    """on_change listeners get the new value once per change of the overall readiness."""
    board = Readiness()
    calls: list[bool] = []
    board.on_change(calls.append)
    board.set("app", False)  # still not ready: no change
    board.set("app", True)
    board.set("app", True)  # no change
    board.set("x", True)  # no change
    board.set("x", False)
    board.set("x", False)  # no change
    board.remove("x")
    board.begin_shutdown()
    board.begin_shutdown()  # no change
    assert calls == [True, False, True, False]


async def test_every_listener_is_called() -> None:
    """All registered listeners are notified."""
    board = Readiness()
    first: list[bool] = []
    second: list[bool] = []
    board.on_change(first.append)
    board.on_change(second.append)
    board.set("app", True)
    assert first == second == [True]


async def test_wait_ready_returns_when_ready() -> None:
    """wait_ready blocks until the board turns ready."""
    board = Readiness()
    board.set("app", False)
    done = anyio.Event()

    async def waiter() -> None:
        await board.wait_ready()
        done.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set()
            board.set("other", True)  # still not ready
            await anyio.wait_all_tasks_blocked()
            assert not done.is_set()
            board.set("app", True)
    assert done.is_set()


async def test_wait_changed_reports_the_new_value() -> None:
    """wait_changed returns the new readiness after the next change."""
    board = Readiness()
    board.set("app", True)
    results: list[bool] = []

    async def waiter() -> None:
        results.append(await board.wait_changed())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            board.begin_shutdown()
    assert results == [False]


async def test_wait_ready_when_already_ready_returns_at_once() -> None:
    """wait_ready on a ready board does not block."""
    board = Readiness()
    board.set("app", True)
    with anyio.fail_after(1):
        await board.wait_ready()
