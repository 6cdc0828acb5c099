"""Drain hooks: run after the app's output ended, before plugins stop (the logs plugin's flush).

A driver process runs the real runtime with an in-script plugin (the CLI would find it through
entry points) whose drain hook records what it had received by then.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import child_env

DRIVER = textwrap.dedent(
    """
    import json, sys, time
    import anyio, msgspec
    from sidecar_runtime._config import load_config
    from sidecar_runtime._plugins import PluginSpec
    from sidecar_runtime._runtime import Runtime

    class Empty(msgspec.Struct):
        pass

    RESULT = {"lines": [], "ended": False, "seen_at_drain": None, "cancelled_before": False}

    class Shipper:
        Config = Empty
        def __init__(self, config): pass
        async def run(self, ctx, *, task_status):
            sub = ctx.subscribe_output(overflow="block")
            ended = anyio.Event()

            async def drain():
                await ended.wait()           # every line, then the end of stream
                await anyio.sleep(0.2)       # "shipping": the plugin is not cancelled meanwhile
                RESULT["seen_at_drain"] = list(RESULT["lines"])

            ctx.on_drain(drain)
            task_status.started()
            try:
                async for line in sub:
                    RESULT["lines"].append(line.data.decode())
                RESULT["ended"] = True
                ended.set()
                await anyio.sleep_forever()
            except BaseException:
                RESULT["cancelled_before"] = RESULT["seen_at_drain"] is None
                raise

    app = [sys.executable, "-c", sys.argv[1]]
    config = load_config(None, overrides={"app.command": app, "plugins.admin.enabled": False,
                                          "stop.timeout": sys.argv[2]})
    specs = [PluginSpec("shipper", Shipper, Empty())]

    async def main():
        status = await Runtime(config, specs).run()
        sys.stderr.write(json.dumps(RESULT) + "\\n")
        return status

    sys.exit(anyio.run(main))
    """
)

APP = "import sys\nfor i in range(500): print(f'line {i}')\nsys.stdout.write('last words')\n"


@pytest.mark.parametrize("stop_timeout", ["10s", "0s"])
def test_drain_hook_sees_the_last_line_before_plugins_stop(stop_timeout: str) -> None:
    """The hook runs after the end of stream with every line, the unterminated last one
    included, and the plugin is still running while it ships, even with no deadline left
    (the plugin grace applies)."""
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, APP, stop_timeout],
        capture_output=True,
        env=child_env(),
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    result = json.loads(proc.stderr.decode().strip().splitlines()[-1])
    expected = [f"line {i}" for i in range(500)] + ["last words"]
    assert result["ended"] is True
    assert result["seen_at_drain"] == expected
    assert result["cancelled_before"] is False
