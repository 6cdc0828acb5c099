"""The reaper and spawn API on both backends: real processes, real SIGCHLD."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import pytest

from sidecar_runtime._errors import SpawnError
from sidecar_runtime._reaper import Reaper
from sidecar_runtime._spawn import SpawnRequest

pytestmark = pytest.mark.anyio


async def test_exit_statuses_are_exact_for_many_children() -> None:
    """200 children exiting with distinct codes and signals are all reported exactly."""
    reaper = Reaper()
    async with anyio.create_task_group() as tg:
        await tg.start(reaper.run)
        children = []
        for i in range(200):
            code = f"kill -{signal.SIGTERM} $$" if i % 7 == 0 else f"exit {i % 256}"
            children.append((i, reaper.spawn(SpawnRequest(argv=["sh", "-c", code]))))
        with anyio.fail_after(20):
            for i, child in children:
                status = await child.wait()
                if i % 7 == 0:
                    assert status.signal == signal.SIGTERM
                    assert status.returncode == 143
                else:
                    assert status.code == i % 256
        tg.cancel_scope.cancel()


async def test_missing_command_is_127_and_not_executable_is_126(tmp_path: os.PathLike[str]) -> None:
    """Spawn errors carry the shell's exit codes."""
    reaper = Reaper()
    script = os.path.join(tmp_path, "script")
    Path(script).write_text("#!/bin/sh\n")  # noqa: ASYNC240 - test set-up, before any task
    async with anyio.create_task_group() as tg:
        await tg.start(reaper.run)
        with pytest.raises(SpawnError) as missing:
            reaper.spawn(SpawnRequest(argv=["definitely-not-a-command-xyz"]))
        assert missing.value.exit_code == 127
        with pytest.raises(SpawnError) as denied:
            reaper.spawn(SpawnRequest(argv=[script]))
        assert denied.value.exit_code == 126
        tg.cancel_scope.cancel()
