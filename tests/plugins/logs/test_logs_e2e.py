"""The logs plugin through the real ``sidecar-run`` command: streams, files, outputs, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SIDECAR, child_env, run_sidecar

pytestmark = pytest.mark.slow


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def numbers(messages: list[str]) -> list[int]:
    return [int(m.split()[1]) for m in messages]


def env(tmp_path: Path) -> dict[str, str]:
    return child_env(STATE_DIRECTORY=str(tmp_path / "state"))


def test_the_apps_last_line_is_delivered(tmp_path: Path) -> None:
    """stdout and stderr lines, in order per stream, and the final line without a newline."""
    out = tmp_path / "out.jsonl"
    app = (
        "import sys\n"
        "for i in range(2000):\n"
        "    print(f'out {i}')\n"
        "    if i % 100 == 0: print(f'err {i}', file=sys.stderr)\n"
        "sys.stdout.flush()\n"
        "sys.stdout.write('last words')\n"
    )
    result = run_sidecar(
        ["--admin", "off", "--log-output", f"file:{out}", "--", sys.executable, "-c", app],
        env=env(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    got = records(out)
    stdout = [r["message"] for r in got if r["stream"] == "stdout"]
    stderr = [r["message"] for r in got if r["stream"] == "stderr"]
    assert stdout == [f"out {i}" for i in range(2000)] + ["last words"]
    assert stderr == [f"err {i}" for i in range(0, 2000, 100)]
    assert result.stdout.endswith(b"last words")  # the passthrough is untouched


def test_rotation_while_writing_loses_and_repeats_nothing(tmp_path: Path) -> None:
    """The app rotates its log by rename and by copytruncate while writing; every line
    arrives exactly once. (copytruncate loses what the reader has not read when the file is
    truncated, by its nature: the app waits for the reader to catch up first.)"""
    log = tmp_path / "app.log"
    out = tmp_path / "out.jsonl"
    app = f"""
import os, shutil, time
path = {str(log)!r}
out = {str(out)!r}
f = open(path, "a")
time.sleep(1.5)  # sidecar-run globs every second: let it find the file first
for i in range(60000):
    f.write(f"line {{i}}\\n")
    if i == 20000:  # rename and create
        f.flush(); os.rename(path, path + ".1"); f.close(); f = open(path, "a")
    if i == 40000:  # copytruncate, once the reader has caught up (it loses unread lines)
        f.flush()
        end = time.monotonic() + 20
        while time.monotonic() < end and not (
            os.path.exists(out) and '"line 40000"' in open(out).read()
        ):
            time.sleep(0.05)
        shutil.copyfile(path, path + ".2"); os.truncate(path, 0)
        f.seek(0)
f.close()
"""
    result = run_sidecar(
        [
            "--admin",
            "off",
            "--tail",
            str(log),
            "--log-output",
            f"file:{out}",
            "--",
            sys.executable,
            "-c",
            app,
        ],
        env=env(tmp_path),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    got = numbers([r["message"] for r in records(out) if "file" in r])
    assert sorted(got) == list(range(60000))


class Collector(BaseHTTPRequestHandler):
    """An NDJSON/JSON-array sink that fails while ``down`` is set."""

    received: list[dict[str, Any]]
    down: threading.Event

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.server.down.is_set():  # type: ignore[attr-defined]
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.server.received.extend(json.loads(body))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def collector() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    server.received = []  # type: ignore[attr-defined]
    server.down = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_kill_9_and_restart_resume_from_the_checkpoint(tmp_path: Path) -> None:
    """sidecar-run is SIGKILLed while shipping a file over HTTP; the next run resumes at the
    checkpoint: every line arrives, and only lines of unacknowledged batches arrive twice."""
    log = tmp_path / "app.log"
    log.write_text("".join(f"line {i}\n" for i in range(100_000)))
    config = tmp_path / "sidecar.toml"
    with collector() as server:
        port = server.server_address[1]
        config.write_text(
            f"""
[app]
command = [{json.dumps(sys.executable)}, "-c", "import time; time.sleep(60)"]
[plugins.admin]
enabled = false
[plugins.logs]
streams = []
checkpoint_interval = "100ms"
[[plugins.logs.files]]
paths = [{json.dumps(str(log))}]
start_at = "head"
[plugins.logs.outputs.http]
type = "http"
url = "http://127.0.0.1:{port}/"
batch_max_records = 500
"""
        )
        proc = subprocess.Popen(
            [*SIDECAR, "--config", str(config)],
            env=env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while len(server.received) < 30_000:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "nothing shipped"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        first = len(server.received)  # type: ignore[attr-defined]
        assert first < 100_000, "the file was shipped before the kill"
        again = subprocess.Popen(
            [*SIDECAR, "--config", str(config)],
            env=env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while len({r["offset"] for r in server.received}) < 100_000:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the second run did not finish the file"
            time.sleep(0.02)
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=15)
        got = numbers([r["message"] for r in server.received])  # type: ignore[attr-defined]
    assert sorted(set(got)) == list(range(100_000))
    repeated = len(got) - 100_000
    assert repeated <= 2 * 500 + 1000, f"{repeated} lines shipped twice"


def test_a_huge_line_is_cut_and_flagged_and_invalid_utf8_kept(tmp_path: Path) -> None:
    """A 200 KB line (longer than the core's 64 KiB pieces) arrives cut at max_line_bytes and
    flagged; a line of invalid UTF-8 arrives with replacement characters; nothing else is lost."""
    out = tmp_path / "out.jsonl"
    app = (
        "import sys\n"
        "sys.stdout.buffer.write(b'x' * 200_000 + b'\\n')\n"
        "sys.stdout.buffer.write(b'bad \\xff\\xfe bytes\\n')\n"
        "print('after')\n"
    )
    result = run_sidecar(
        ["--admin", "off", "--log-output", f"file:{out}", "--", sys.executable, "-c", app],
        env={**env(tmp_path), "SIDECAR_PLUGINS__LOGS__MAX_LINE_BYTES": "1000"},
    )
    assert result.returncode == 0, result.stderr
    got = records(out)
    assert [r.get("truncated", False) for r in got] == [True, False, False]
    assert got[0]["message"] == "x" * 1000
    assert got[1]["message"] == "bad \ufffd\ufffd bytes"
    assert got[2]["message"] == "after"


def test_a_reload_switches_outputs_in_place_without_losing_lines(tmp_path: Path) -> None:
    """POST /reload with a new output: the plugin is reloaded in place (not restarted), and
    every line the app printed is in the old output or the new one, none in neither."""
    import urllib.request

    from tests.conftest import free_port

    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    port = free_port()
    config = tmp_path / "sidecar.toml"
    app = "import time\\nfor i in range(100000):\\n    print(f'line {i}', flush=True)\\n"
    app += "    time.sleep(0.001)\\n"

    def write(path: Path) -> None:
        config.write_text(
            f"""
[app]
command = [{json.dumps(sys.executable)}, "-c", "{app}"]
[plugins.admin]
listen = "127.0.0.1:{port}"
[plugins.metrics]
enabled = false
[plugins.health]
enabled = false
[plugins.logs.outputs.out]
type = "file"
path = {json.dumps(str(path))}
"""
        )

    write(first)
    proc = subprocess.Popen(
        [*SIDECAR, "--config", str(config)],
        env=env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not first.exists() or first.stat().st_size < 2000:
            assert time.monotonic() < deadline, "nothing shipped"
            time.sleep(0.02)
        write(second)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/reload", method="POST")
        with urllib.request.urlopen(request, timeout=20) as reply:  # noqa: S310 - loopback
            outcome = json.loads(reply.read())
        assert outcome["plugins_reloaded"] == ["logs"], outcome
        while not second.exists() or second.stat().st_size < 2000:
            assert time.monotonic() < deadline, "nothing shipped after the reload"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    old = numbers([r["message"] for r in records(first)])
    new = numbers([r["message"] for r in records(second)])
    assert old
    assert new
    assert old == list(range(len(old)))
    assert new == list(range(new[0], new[0] + len(new)))
    assert new[0] == len(old)  # no gap and no overlap between the two outputs
