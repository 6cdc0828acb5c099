"""The checks against real servers and processes: HTTP(S), TCP, exec and process alive.

Every failure is an outcome with a reason, never an exception; exec probes leave nothing behind.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from sidecar_plugins.health._config import ProbeConfig
from sidecar_plugins.health._probes import (
    USER_AGENT,
    ExecCheck,
    HttpCheck,
    Outcome,
    ProcessCheck,
    TcpCheck,
    http_session,
)

from sidecar_runtime import PluginContext
from sidecar_runtime.testing import plugin_harness, python_app
from tests.conftest import free_port
from tests.plugins.health.helpers import (
    ContextPlugin,
    group_alive,
    http_target,
    pid_alive,
    read_pids,
    reaped,
    self_signed,
    tcp_target,
    wait_for,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def session() -> AsyncIterator[Any]:
    """The plugin's aiohttp client session."""
    async with http_session() as client:
        yield client


async def http_check(session: Any, url: str, limit: int = 10240, **keys: Any) -> Outcome:
    """One HTTP check of ``url`` with probe ``keys``, bounded at 5 s."""
    probe = ProbeConfig(kind="readiness", http=url, **keys)
    with anyio.fail_after(5):
        return await HttpCheck(probe, session, limit)()


async def test_http_status_range_and_body_match(session: Any) -> None:
    """200-399 pass by default; others fail with a snippet of the body; body_contains works."""
    async with http_target() as target:
        assert await http_check(session, target.url) == Outcome(True, "HTTP 200")
        target.status, target.body = 503, b"database unreachable\n"
        assert await http_check(session, target.url) == Outcome(
            False, "HTTP 503 (expected 200-399): database unreachable"
        )
        assert (await http_check(session, target.url, expect_status="500-503")).ok
        target.status, target.body = 200, b'{"status": "degraded"}'
        assert (await http_check(session, target.url, body_contains='"degraded"')).ok
        assert await http_check(session, target.url, body_contains="green") == Outcome(
            False, "HTTP 200 but the body lacks 'green'"
        )


async def test_http_redirects_pass_and_are_not_followed(session: Any) -> None:
    """A 302 is in 200-399: it passes, and its Location is never fetched."""
    async with http_target() as target:
        target.status, target.location = 302, "http://127.0.0.1:1/elsewhere"
        assert await http_check(session, target.url) == Outcome(True, "HTTP 302")
        assert target.hits == 1


async def test_http_method_headers_and_user_agent(session: Any) -> None:
    """The probe's method and headers are sent, with a probe User-Agent and no keep-alive."""
    async with http_target() as target:
        await http_check(session, target.url, method="HEAD", headers={"Host": "app.local"})
        method, path, headers = target.requests[0]
        assert (method, path) == ("HEAD", "/health")
        assert headers["Host"] == "app.local"
        assert headers["User-Agent"] == USER_AGENT
        assert headers["Connection"] == "close"


async def test_http_reads_a_huge_body_only_up_to_the_limit(session: Any) -> None:
    """An endless body is read up to the limit and the connection dropped: fast, bounded."""
    async with http_target() as target:
        target.endless = True
        began = anyio.current_time()
        outcome = await http_check(session, target.url, limit=1000, body_contains="needle")
        assert outcome == Outcome(
            False, "HTTP 200 but the body lacks 'needle' in its first 1000 bytes"
        )
        assert anyio.current_time() - began < 2
        assert (await http_check(session, target.url, limit=1000)).ok


async def test_http_unreachable_and_unresolvable(session: Any) -> None:
    """A closed port and a name that does not resolve fail with the reason, no exception."""
    refused = await http_check(session, f"http://127.0.0.1:{free_port()}/")
    assert refused == Outcome(False, "Connection refused")
    unresolved = await http_check(session, "http://no-such-host.invalid/")
    assert not unresolved.ok
    assert unresolved.detail


async def test_https_with_and_without_verification(session: Any, tmp_path: Path) -> None:
    """A self-signed certificate fails verification; tls_verify = false accepts it."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command makes the test certificate")
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    async with http_target(context) as target:
        url = f"https://127.0.0.1:{target.port}/health"
        verified = await http_check(session, url)
        assert not verified.ok
        assert "certificate" in verified.detail.lower()
        assert await http_check(session, url, tls_verify=False) == Outcome(True, "HTTP 200")


async def test_tcp_connect_up_down_and_dns() -> None:
    """TCP passes while something listens, fails when it is gone or the name is unknown."""
    async with tcp_target() as target:
        check = TcpCheck(f"127.0.0.1:{target.port}")
        assert await check() == Outcome(True, f"connected to 127.0.0.1:{target.port}")
        target.down()
        await anyio.sleep(0.05)
        assert await check() == Outcome(
            False, f"connect to 127.0.0.1:{target.port}: Connection refused"
        )
        await target.up()
        assert (await check()).ok
    unknown = await TcpCheck("no-such-host.invalid:80")()
    assert not unknown.ok
    assert unknown.detail.startswith("connect to no-such-host.invalid:80: ")


async def spawn_context() -> PluginContext:
    return ContextPlugin.contexts[-1]


async def test_exec_exit_codes_output_and_missing_command() -> None:
    """Exit 0 passes; another code fails with the last output line; a missing command fails."""
    async with plugin_harness(ContextPlugin, name="ctx"):
        ctx = await spawn_context()
        ok = ExecCheck(["sh", "-c", "echo fine"], ctx.spawn, 1024)
        assert await ok() == Outcome(True, "exit 0")
        bad = ExecCheck(
            ["sh", "-c", "echo starting; echo 'no quorum' >&2; exit 3"], ctx.spawn, 1024
        )
        assert await bad() == Outcome(False, "exit 3: no quorum")
        killed = ExecCheck(["sh", "-c", "kill -TERM $$"], ctx.spawn, 1024)
        assert await killed() == Outcome(False, "killed by SIGTERM")
        missing = ExecCheck(["no-such-command-here"], ctx.spawn, 1024)
        outcome = await missing()
        assert not outcome.ok
        assert outcome.detail == "exec: no-such-command-here: command not found in PATH"


async def test_exec_drains_huge_output_and_keeps_the_start() -> None:
    """10 MB of output never blocks the command; only the first max_bytes are kept."""
    async with plugin_harness(ContextPlugin, name="ctx"):
        ctx = await spawn_context()
        code = "import sys; sys.stdout.write('y' * 10_000_000 + '\\nlast line\\n'); sys.exit(1)"
        check = ExecCheck([sys.executable, "-c", code], ctx.spawn, 100)
        with anyio.fail_after(10):
            outcome = await check()
        assert outcome == Outcome(False, "exit 1: " + "y" * 100)


async def test_exec_timeout_kills_the_whole_group_and_leaves_no_process(tmp_path: Path) -> None:
    """A hung probe that forked: at the timeout its group is killed and the probe is reaped."""
    pids = tmp_path / "pids"
    script = f"sleep 30 & echo $! >> {pids}; echo $$ >> {pids}; wait"
    async with plugin_harness(ContextPlugin, name="ctx"):
        ctx = await spawn_context()
        check = ExecCheck(["sh", "-c", script], ctx.spawn, 1024)
        began = anyio.current_time()
        with anyio.move_on_after(0.5) as scope:
            await check()
        assert scope.cancelled_caught
        assert anyio.current_time() - began < 2
        sleeper, shell = read_pids(pids)
        assert not pid_alive(shell)  # SIGKILLed and reaped by the core
        assert reaped(shell)
        await wait_for(lambda: not pid_alive(sleeper))  # the group went too
        assert not group_alive(shell)


async def test_exec_that_exits_leaves_nothing_it_forked(tmp_path: Path) -> None:
    """A probe that exits 0 and leaves a background child: the child is killed with the group."""
    pids = tmp_path / "pids"
    script = f"sleep 30 & echo $! > {pids}; exit 0"
    async with plugin_harness(ContextPlugin, name="ctx"):
        ctx = await spawn_context()
        with anyio.fail_after(5):
            assert (await ExecCheck(["sh", "-c", script], ctx.spawn, 1024)()).ok
        (sleeper,) = read_pids(pids)
        await wait_for(lambda: not pid_alive(sleeper))


async def test_process_alive_follows_the_app() -> None:
    """Process passes while the app runs, fails while it is stopped (SIGSTOP) or gone."""
    app = python_app("import time\ntime.sleep(30)")
    async with plugin_harness(ContextPlugin, name="ctx", app=app) as harness:
        ctx = await spawn_context()
        check = ProcessCheck(ctx.app)
        assert await check() == Outcome(False, "the app has no process (STOPPED)")
        pid = await harness.start_app()
        assert (await check()).ok
        os.kill(pid, signal.SIGSTOP)
        await wait_for(lambda: _stopped(pid))
        assert await check() == Outcome(False, f"process {pid} is stopped")
        os.kill(pid, signal.SIGCONT)
        await harness.stop_app()
        assert not (await check()).ok


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        return f.read().rpartition(")")[2].split()[0] == "T"
