"""The event hub: fan-out to every subscriber, drop and block overflow, close semantics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, TypeVar

import anyio
import pytest

from sidecar_runtime import AppState, OutputLine, StateChanged, Subscription
from sidecar_runtime._events import Hub

pytestmark = pytest.mark.anyio

T = TypeVar("T")


class ClosingHub(Hub[T]):
    """A hub whose subscriptions are all closed at test teardown (anyio warns otherwise)."""

    def __init__(self, created: list[Subscription[Any]]) -> None:
        super().__init__()
        self._created = created

    def subscribe(
        self, max_buffer: int = 1024, overflow: Literal["drop", "block"] = "drop"
    ) -> Subscription[T]:
        sub = super().subscribe(max_buffer, overflow)
        self._created.append(sub)
        return sub


@pytest.fixture
def created() -> Iterator[list[Subscription[Any]]]:
    """Subscriptions made during a test; closed afterwards."""
    subs: list[Subscription[Any]] = []
    yield subs
    for sub in subs:
        sub.close()


async def drain(sub: Subscription[T], count: int) -> list[T]:
    """Receive ``count`` items from a subscription."""
    return [await sub.receive() for _ in range(count)]


async def test_every_subscriber_gets_every_item(created: list[Subscription[Any]]) -> None:
    """Each subscription receives all published items in order."""
    hub: Hub[int] = ClosingHub(created)
    subs = [hub.subscribe(16) for _ in range(3)]
    assert hub.subscriber_count == 3
    with anyio.fail_after(5):
        for i in range(5):
            await hub.publish(i)
        hub.publish_nowait(5)
        for sub in subs:
            assert await drain(sub, 6) == [0, 1, 2, 3, 4, 5]
            assert sub.dropped == 0


async def test_events_are_frozen_structs(created: list[Subscription[Any]]) -> None:
    """Published events carry their fields and a timestamp."""
    hub: Hub[StateChanged] = ClosingHub(created)
    sub = hub.subscribe()
    event = StateChanged(old=AppState.STOPPED, new=AppState.STARTING, reason="spawned", pid=7)
    with anyio.fail_after(5):
        await hub.publish(event)
        got = await sub.receive()
    assert got is event
    assert got.at > 0
    line = OutputLine("stdout", b"hi", 7)
    assert (line.stream, line.data, line.pid, line.partial) == ("stdout", b"hi", 7, False)


async def test_drop_policy_counts_drops_and_never_blocks(created: list[Subscription[Any]]) -> None:
    """A full drop subscriber loses the newest items, counts them, and publish returns at once."""
    hub: Hub[int] = ClosingHub(created)
    slow = hub.subscribe(2, "drop")
    fast = hub.subscribe(100, "drop")
    with anyio.fail_after(2):
        for i in range(10):
            await hub.publish(i)
        for i in range(10, 15):
            hub.publish_nowait(i)
    assert slow.dropped == 13
    assert fast.dropped == 0
    with anyio.fail_after(5):
        assert await drain(slow, 2) == [0, 1]
        assert await drain(fast, 15) == list(range(15))


async def test_block_policy_makes_publish_wait_for_room(created: list[Subscription[Any]]) -> None:
    """publish waits at a full block subscriber until it reads, and loses nothing."""
    hub: Hub[int] = ClosingHub(created)
    sub = hub.subscribe(1, "block")
    assert hub.has_blocking_subscribers
    published: list[int] = []

    async def producer() -> None:
        for i in range(5):
            await hub.publish(i)
            published.append(i)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(producer)
            await anyio.wait_all_tasks_blocked()
            # One item fits the buffer; the producer is stuck on the second.
            assert published == [0]
            received = await drain(sub, 5)
    assert received == [0, 1, 2, 3, 4]
    assert published == [0, 1, 2, 3, 4]
    assert sub.dropped == 0


async def test_publish_nowait_counts_a_drop_at_full_block_subscriber(
    created: list[Subscription[Any]],
) -> None:
    """publish_nowait never waits, even for a block subscriber: it counts a drop instead."""
    hub: Hub[int] = ClosingHub(created)
    sub = hub.subscribe(1, "block")
    hub.publish_nowait(1)
    hub.publish_nowait(2)
    assert sub.dropped == 1


async def test_close_ends_iteration_after_buffered_items(created: list[Subscription[Any]]) -> None:
    """After close, readers get what was buffered and then the end of iteration."""
    hub: Hub[int] = ClosingHub(created)
    sub = hub.subscribe(10)
    with anyio.fail_after(5):
        for i in range(3):
            await hub.publish(i)
        hub.close()
        assert hub.subscriber_count == 0
        assert [item async for item in sub] == [0, 1, 2]
        with pytest.raises(anyio.EndOfStream):
            await sub.receive()


async def test_subscribe_after_close_is_ended(created: list[Subscription[Any]]) -> None:
    """A subscription taken after the hub closed ends at once."""
    hub: Hub[int] = ClosingHub(created)
    hub.close()
    sub = hub.subscribe()
    with anyio.fail_after(5):
        assert [item async for item in sub] == []


async def test_closed_subscription_is_forgotten(created: list[Subscription[Any]]) -> None:
    """Closing a subscription removes it; the hub keeps delivering to the others."""
    hub: Hub[int] = ClosingHub(created)
    gone = hub.subscribe()
    kept = hub.subscribe()
    gone.close()
    assert hub.subscriber_count == 1
    with anyio.fail_after(5):
        await hub.publish(1)
        assert await kept.receive() == 1


async def test_close_wakes_a_waiting_reader(created: list[Subscription[Any]]) -> None:
    """A reader blocked on an empty subscription finishes when the hub closes."""
    hub: Hub[int] = ClosingHub(created)
    sub = hub.subscribe()
    seen: list[int] = []

    async def reader() -> None:
        async for item in sub:
            seen.append(item)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            await hub.publish(7)
            await anyio.wait_all_tasks_blocked()
            hub.close()
    assert seen == [7]


async def test_unbounded_subscription(created: list[Subscription[Any]]) -> None:
    """max_buffer 0 means no limit: nothing is dropped."""
    hub: Hub[int] = ClosingHub(created)
    sub = hub.subscribe(0)
    for i in range(5000):
        hub.publish_nowait(i)
    assert sub.dropped == 0
    hub.close()
    with anyio.fail_after(5):
        assert len([item async for item in sub]) == 5000
