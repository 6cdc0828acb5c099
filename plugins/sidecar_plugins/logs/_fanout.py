"""The outputs of one plugin run: a delivery per output, their acks and tasks.

A reload that changes only outputs (or processors) swaps the whole set in place: the new
outputs start, the pipeline switches to them between two chunks, and the old ones get a bounded
time to deliver what they hold before they stop.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import anyio

from ._checkpoint import CheckpointStore
from ._delivery import Delivery
from ._pipeline import Acks
from .outputs import OutputConfig, make_output

__all__ = ["Fanout"]


class Fanout:
    """Builds, runs, flushes and stops the deliveries of a set of named outputs."""

    def __init__(
        self,
        outputs: dict[str, OutputConfig],
        *,
        store: CheckpointStore | None,
        state_dir: Path,
        log: Any,
    ) -> None:
        self.configs = dict(outputs)
        self.acks = Acks(len(outputs), store)
        self.entries: list[tuple[str, Delivery]] = []
        for i, (name, config) in enumerate(outputs.items()):
            bound = log.bind(output=name)
            output = make_output(name, config, log=bound)
            delivery = Delivery(
                output,
                config,
                spool_dir=str(state_dir / "spool" / name),
                on_delivered=self.acks.callback(i),
                log=bound,
            )
            self.entries.append((name, delivery))
        self._scopes: list[anyio.CancelScope] = []

    @property
    def deliveries(self) -> list[Delivery]:
        return [d for _, d in self.entries]

    @property
    def batch_records(self) -> int:
        """The pipeline's batch size: the smallest output batch, so no batch is split."""
        return min(c.batch_max_records for c in self.configs.values())

    async def start(self, tg: Any) -> None:
        """Open every output and start its delivery loop in ``tg``."""
        for _, delivery in self.entries:
            await delivery.output.open()
            await tg.start(self._run, delivery)

    async def _run(
        self, delivery: Delivery, *, task_status: Any = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.CancelScope() as scope:
            self._scopes.append(scope)
            await delivery.run(task_status=task_status)

    async def flush(self) -> None:
        """Deliver everything held (the caller bounds it)."""
        async with anyio.create_task_group() as tg:
            for delivery in self.deliveries:
                tg.start_soon(delivery.flush)

    async def stop(self, seconds: float) -> None:
        """Flush for at most ``seconds``, then stop the loops and close the outputs."""
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(seconds):
                await self.flush()
            for scope in self._scopes:
                scope.cancel()
            for delivery in self.deliveries:
                with contextlib.suppress(Exception):
                    await delivery.output.close()
