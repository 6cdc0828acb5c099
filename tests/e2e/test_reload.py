"""Reloading sidecar-run's own config: SIGHUP and POST /reload, with the app kept running."""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import free_port, running_sidecar

APP = """
import os, signal, sys, time
signal.signal(signal.SIGHUP, lambda *a: print("app got HUP", flush=True))
print(f"{TAG} pid", os.getpid(), flush=True)
while True:
    time.sleep(0.05)
"""


def write_config(path: Path, port: int, *, tag: str = "first", extra: str = "") -> None:
    command = [sys.executable, "-c", f"TAG = {tag!r}\n" + APP]
    path.write_text(
        f"[app]\ncommand = {json.dumps(command)}\n"
        f'[log]\nlevel = "info"\nformat = "json"\n'
        f'[plugins.admin]\nlisten = "127.0.0.1:{port}"\n{extra}'
    )


def get_status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as reply:
        data: dict[str, Any] = json.loads(reply.read())
        return data


def post_reload(port: int) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/reload", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:  # noqa: S310 - loopback
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def wait_for(predicate: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (urllib.error.URLError, ConnectionError):
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def running_pid(port: int) -> int | None:
    status = get_status(port)
    return status["pid"] if status["state"] == "RUNNING" else None


def test_sighup_applies_plugin_changes_and_keeps_the_app(tmp_path: Path) -> None:
    """SIGHUP with a config file: a plugin removed from the config stops, one added starts,
    the app keeps its pid, and the reload is logged with what changed."""
    port, config = free_port(), tmp_path / "sidecar.toml"
    write_config(config, port)
    with running_sidecar(["--config", str(config)]) as proc:
        pid = wait_for(lambda: running_pid(port))
        assert "metrics" in get_status(port)["plugins"]
        write_config(config, port, extra="[plugins.metrics]\nenabled = false\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "metrics" not in get_status(port)["plugins"])
        assert running_pid(port) == pid
        write_config(config, port, extra='[plugins.metrics]\nlisten = "127.0.0.1:0"\n')
        code, outcome = post_reload(port)
        assert code == 200, outcome
        assert outcome["ok"] is True
        assert outcome["plugins_started"] == ["metrics"]
        assert outcome["app_restarted"] is False
        assert get_status(port)["plugins"]["metrics"]["state"] == "running"
        assert running_pid(port) == pid
        proc.terminate()
        out, err = proc.communicate(timeout=15)
    assert b"app got HUP" not in out  # the HUP reloaded sidecar-run; it was not forwarded
    events = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
    reloaded = [e for e in events if e["event"] == "config_reloaded"]
    assert len(reloaded) == 2
    assert reloaded[0]["plugins_stopped"] == ["metrics"]


def test_invalid_config_is_rejected_and_the_old_one_stays(tmp_path: Path) -> None:
    """A broken file: POST /reload answers 400 with the one-line error, SIGHUP logs it, and
    everything keeps running as before."""
    port, config = free_port(), tmp_path / "sidecar.toml"
    write_config(config, port)
    with running_sidecar(["--config", str(config)]) as proc:
        pid = wait_for(lambda: running_pid(port))
        before = get_status(port)["plugins"]
        config.write_text(config.read_text() + "[restart]\npolicy = 'sometimes'\n")
        code, outcome = post_reload(port)
        assert code == 400
        assert outcome["ok"] is False
        assert "restart.policy" in outcome["error"]
        assert "\n" not in outcome["error"]
        config.write_text("this is = not [toml")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        status = get_status(port)
        assert status["pid"] == pid
        assert status["state"] == "RUNNING"
        assert status["plugins"].keys() == before.keys()
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    failures = [
        json.loads(line)
        for line in err.decode().splitlines()
        if line.startswith("{") and '"config_reload_failed"' in line
    ]
    assert len(failures) == 2
    assert "sidecar.toml" in failures[1]["error"]


def test_a_new_app_command_restarts_the_app_gracefully(tmp_path: Path) -> None:
    """Changing app.command restarts the app with the new command (a new pid)."""
    port, config = free_port(), tmp_path / "sidecar.toml"
    write_config(config, port, tag="first")
    with running_sidecar(["--config", str(config)]) as proc:
        pid = wait_for(lambda: running_pid(port))
        write_config(config, port, tag="second")
        code, outcome = post_reload(port)
        assert code == 200, outcome
        assert outcome["app_restarted"] is True
        assert outcome["changed"] == ["app"]
        new_pid = wait_for(lambda: (p := running_pid(port)) != pid and p)
        assert new_pid != pid
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert f"first pid {pid}".encode() in out
    assert f"second pid {new_pid}".encode() in out


def test_hup_is_forwarded_when_configured(tmp_path: Path) -> None:
    """signals.hup = "forward": the app gets SIGHUP even though a config file is used."""
    port, config = free_port(), tmp_path / "sidecar.toml"
    write_config(config, port, extra='[signals]\nhup = "forward"\n')
    with running_sidecar(["--config", str(config)]) as proc:
        wait_for(lambda: running_pid(port))
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert b"app got HUP" in out
