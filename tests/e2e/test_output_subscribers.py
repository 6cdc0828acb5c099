"""Output line events: slow, dead and blocking subscribers never corrupt the passthrough.

A driver process runs the real runtime with in-script plugins (the CLI would find them through
entry points; here they are handed to the runtime directly) and a real app writing 8 MB.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import child_env

DRIVER = textwrap.dedent(
    """
    import json, sys
    import anyio, msgspec
    from sidecar_runtime._config import load_config
    from sidecar_runtime._plugins import PluginSpec
    from sidecar_runtime._runtime import Runtime

    class Empty(msgspec.Struct):
        pass

    class Stalled:  # subscribes with a tiny buffer and never reads
        Config = Empty
        def __init__(self, config): pass
        async def run(self, ctx, *, task_status):
            ctx.subscribe_output(max_buffer=4)
            task_status.started()
            await anyio.sleep_forever()

    class Dead:  # subscribes with overflow=block, then crashes
        Config = Empty
        def __init__(self, config): pass
        async def run(self, ctx, *, task_status):
            ctx.subscribe_output(max_buffer=1, overflow="block")
            task_status.started()
            await anyio.sleep(0.05)
            raise RuntimeError("boom")

    RESULT = {"lines": 0, "bytes": 0, "partial": 0, "streams": set()}

    class Reader:  # reads everything, lossless (block)
        Config = Empty
        def __init__(self, config): pass
        async def run(self, ctx, *, task_status):
            sub = ctx.subscribe_output(max_buffer=64, overflow="block")
            task_status.started()
            async for line in sub:
                RESULT["lines"] += 1
                RESULT["bytes"] += len(line.data)
                RESULT["partial"] += line.partial
                RESULT["streams"].add(line.stream)
            await anyio.sleep_forever()

    app = [sys.executable, "-c", sys.argv[1]]
    config = load_config(None, overrides={"app.command": app, "plugins.admin.enabled": False,
                                          "output.max_line_bytes": 4096})
    specs = [PluginSpec(n, c, Empty()) for n, c in
             (("stalled", Stalled), ("dead", Dead), ("reader", Reader))]

    async def main():
        runtime = Runtime(config, specs)
        status = await runtime.run()
        RESULT["streams"] = sorted(RESULT["streams"])
        RESULT["dropped"] = runtime.output_hub.dropped
        RESULT["dead_restarts"] = runtime.runners[1].restarts
        sys.stderr.write(json.dumps(RESULT) + "\\n")
        return status

    sys.exit(anyio.run(main))
    """
)

APP = textwrap.dedent(
    """
    import os, random
    rng = random.Random(7)
    out = bytearray()
    for i in range(60000):
        out += b"line %d " % i + rng.randbytes(rng.randrange(0, 100)).hex().encode() + b"\\n"
    out += b"x" * 10000  # a long last line without newline: cut at 4096, flagged partial
    view = memoryview(bytes(out))
    while view:
        view = view[os.write(1, view[:65536]):]
    """
)


def _expected() -> bytes:
    namespace: dict[str, object] = {}
    code = APP.replace("os.write(1, view[:65536])", "len(view[:65536])").replace(
        "while view:", "RESULT = bytes(out)\nwhile False:"
    )
    exec(code, namespace)  # noqa: S102 - the app's own code, to know its exact output
    result = namespace["RESULT"]
    assert isinstance(result, bytes)
    return result


@pytest.mark.slow
def test_slow_and_dead_subscribers_never_corrupt_passthrough(tmp_path: Path) -> None:
    """8 MB pass through byte-exactly while one subscriber stalls and one dies; a lossless
    (block) subscriber sees every line; the stalled one's drops are counted."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc = subprocess.run(
        [sys.executable, str(driver), APP],
        capture_output=True,
        timeout=60,
        env=child_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = _expected()
    assert hashlib.sha256(proc.stdout).hexdigest() == hashlib.sha256(expected).hexdigest()
    result = json.loads(proc.stderr.decode().strip().splitlines()[-1])
    full_lines = expected.count(b"\n")
    # 60000 full lines, then 10000 bytes cut into 4096 + 4096 + 1808 (all flagged partial)
    assert result["lines"] == full_lines + 3
    assert result["partial"] == 3
    assert result["bytes"] == len(expected) - full_lines
    assert result["streams"] == ["stdout"]
    assert result["dropped"] >= full_lines - 4  # the stalled subscriber kept only its buffer
    assert result["dead_restarts"] >= 1
