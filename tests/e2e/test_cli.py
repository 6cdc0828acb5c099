"""The ``sidecar-run`` command through a real subprocess: check, plugins, status, flags."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import child_env, free_port, python_app, run_sidecar
from tests.conftest import running_sidecar as sidecar

SLEEPER = python_app("import time\ntime.sleep(60)")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def check_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``sidecar-run check ARGS``; it must succeed; return its JSON."""
    result = run_sidecar(["check", *args], env=env, timeout=20)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def one_line(stderr: bytes) -> str:
    """The single line a failed command writes to stderr."""
    text = stderr.decode()
    assert text.endswith("\n"), text
    assert text.count("\n") == 1, text
    return text.strip()


def wait_running(port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> dict[str, Any]:
    """Poll GET /status until the app is RUNNING; return the status."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "sidecar-run exited early"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=2) as reply:
                data: dict[str, Any] = json.loads(reply.read())
                if data["state"] == "RUNNING":
                    return data
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, "the app never reached RUNNING"
        time.sleep(0.05)


def test_check_prints_resolved_json(tmp_path: Path) -> None:
    """check --config prints the resolved config: durations as text, signals by name."""
    path = write(
        tmp_path,
        "c.toml",
        """
        [restart]
        delay = 0.25
        start_seconds = "1m30s"
        [stop]
        signal = 3
        timeout = "2s"
        """,
    )
    data = check_json("--config", str(path), "--admin", "off")
    assert data["restart"]["delay"] == "250ms"
    assert data["restart"]["start_seconds"] == "90s"
    assert data["stop"] == {"signal": "QUIT", "timeout": "2s", "pre_stop_delay": "0s"}
    assert data["app"]["command"] == []
    assert data["plugins"]["admin"]["enabled"] is False


def test_check_shows_enabled_plugin_with_its_resolved_config(tmp_path: Path) -> None:
    """check fills each enabled plugin's table with its defaults and reserved flags."""
    data = check_json("--admin", "127.0.0.1:0", "--", "true")
    assert data["plugins"]["admin"] == {
        "enabled": True,
        "critical": False,
        "listen": "127.0.0.1:0",
        "token": None,
        "max_body_bytes": 1048576,
    }
    assert data["app"]["command"] == ["true"]


def test_check_without_command_notes_it(tmp_path: Path) -> None:
    """check with no app.command still exits 0 and says so on stderr."""
    result = run_sidecar(["check"], timeout=20)
    assert result.returncode == 0
    assert b"no app.command" in result.stderr


def test_check_bad_file_is_one_line_exit_2(tmp_path: Path) -> None:
    """A bad value exits 2 with one stderr line naming the file, key path and value."""
    path = write(tmp_path, "bad.toml", '[stop]\ntimeout = "10 parsecs"\n')
    result = run_sidecar(["check", "--config", str(path)], timeout=20)
    assert result.returncode == 2
    assert result.stdout == b""
    line = one_line(result.stderr)
    assert line.startswith(f"sidecar-run: {path}: stop.timeout: ")
    assert "'10 parsecs'" in line


def test_check_unknown_key_is_one_line_exit_2(tmp_path: Path) -> None:
    """An unknown key exits 2 naming the file and dotted key."""
    path = write(tmp_path, "bad.yaml", "restart:\n  policy: always\n  retries: 3\n")
    result = run_sidecar(["check", "--config", str(path)], timeout=20)
    assert result.returncode == 2
    assert one_line(result.stderr) == f"sidecar-run: {path}: restart.retries: unknown key"


def test_check_invalid_toml_is_one_line(tmp_path: Path) -> None:
    """A TOML syntax error exits 2 with one line."""
    path = write(tmp_path, "bad.toml", "[restart\n")
    result = run_sidecar(["check", "--config", str(path)], timeout=20)
    assert result.returncode == 2
    assert one_line(result.stderr).startswith(f"sidecar-run: {path}: invalid TOML")


@pytest.mark.slow
def test_precedence_file_env_flag(tmp_path: Path) -> None:
    """check shows file < SIDECAR_RESTART__POLICY < --restart."""
    path = write(tmp_path, "c.toml", '[restart]\npolicy = "on-failure"\nmax_restarts = 2\n')
    base = ["--config", str(path), "--admin", "off"]
    assert check_json(*base)["restart"]["policy"] == "on-failure"
    env = child_env(SIDECAR_RESTART__POLICY="always", SIDECAR_RESTART__MAX_RESTARTS="4")
    from_env = check_json(*base, env=env)["restart"]
    assert (from_env["policy"], from_env["max_restarts"]) == ("always", 4)
    from_flag = check_json(*base, "--restart", "never", env=env)["restart"]
    assert (from_flag["policy"], from_flag["max_restarts"]) == ("never", 4)


def test_sidecar_config_env_names_the_file(tmp_path: Path) -> None:
    """Without --config, $SIDECAR_CONFIG names the config file."""
    path = write(tmp_path, "c.toml", '[stop]\ntimeout = "7s"\n')
    data = check_json("--admin", "off", env=child_env(SIDECAR_CONFIG=str(path)))
    assert data["stop"]["timeout"] == "7s"


def test_yaml_config_works(tmp_path: Path) -> None:
    """A YAML config file is read by check."""
    path = write(
        tmp_path,
        "c.yaml",
        """
        app:
          command: [echo, hi]
        restart:
          policy: on-failure
          delay: 500ms
        plugins:
          admin:
            listen: unix:/tmp/x.sock
        """,
    )
    data = check_json("--config", str(path))
    assert data["app"]["command"] == ["echo", "hi"]
    assert data["restart"]["policy"] == "on-failure"
    assert data["restart"]["delay"] == "500ms"
    assert data["plugins"]["admin"]["listen"] == "unix:/tmp/x.sock"


def test_bad_flag_value_is_one_line_exit_2() -> None:
    """An invalid flag value exits 2 with one line naming the value."""
    result = run_sidecar(["--stop-timeout", "10x", "--", "true"], timeout=20)
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "--stop-timeout" in line
    assert "'10x'" in line


def test_plugins_lists_admin_with_distribution() -> None:
    """plugins lists the admin plugin, its distribution sidecar-run and a version."""
    from importlib.metadata import version

    result = run_sidecar(["plugins"], timeout=20)
    assert result.returncode == 0
    lines = result.stdout.decode().splitlines()
    admin = [line for line in lines if line.split()[0] == "admin"]
    assert len(admin) == 1
    assert f"sidecar-run {version('sidecar-run')}" in admin[0]
    assert "sidecar_plugins.admin:AdminPlugin" in admin[0]


def test_plugins_json() -> None:
    """plugins --json prints name, object, distribution and version."""
    result = run_sidecar(["plugins", "--json"], timeout=20)
    assert result.returncode == 0
    rows = json.loads(result.stdout)
    admin = next(row for row in rows if row["name"] == "admin")
    assert admin["distribution"] == "sidecar-run"
    assert admin["object"] == "sidecar_plugins.admin:AdminPlugin"
    assert admin["version"]


def test_version_flag() -> None:
    """--version prints the version and exits 0."""
    import sidecar_runtime

    result = run_sidecar(["--version"], timeout=20)
    assert result.returncode == 0
    assert result.stdout.decode().strip() == f"sidecar-run {sidecar_runtime.__version__}"


@pytest.mark.parametrize("args", [["--help"], ["check", "--help"], ["status", "--help"]])
def test_help_exits_0(args: list[str]) -> None:
    """--help prints usage and exits 0, for the run and the subcommands."""
    result = run_sidecar(args, timeout=20)
    assert result.returncode == 0
    assert result.stdout.startswith(b"usage: sidecar-run")


def test_no_command_is_exit_2() -> None:
    """A run without CMD and without app.command exits 2 with one line."""
    result = run_sidecar(["--admin", "off"], timeout=20)
    assert result.returncode == 2
    assert "no command to run" in one_line(result.stderr)


def test_missing_command_is_127() -> None:
    """A CMD that does not exist exits 127 with one line naming it."""
    result = run_sidecar(["--admin", "off", "--", "definitely-not-a-command-xyz"], timeout=20)
    assert result.returncode == 127
    assert "definitely-not-a-command-xyz" in one_line(result.stderr)


def test_command_from_config_when_no_dashdash(tmp_path: Path) -> None:
    """Without '--', app.command from the config is run and its exit status is ours."""
    marker = tmp_path / "ran"
    path = write(
        tmp_path,
        "c.toml",
        f"""
        [app]
        command = {json.dumps(python_app(f"open({str(marker)!r}, 'w'); raise SystemExit(7)"))}
        """,
    )
    result = run_sidecar(["--config", str(path), "--admin", "off"], timeout=20)
    assert result.returncode == 7, result.stderr
    assert marker.exists()


def test_dashdash_command_overrides_config(tmp_path: Path) -> None:
    """A CMD after '--' replaces app.command from the config."""
    path = write(tmp_path, "c.toml", '[app]\ncommand = ["false"]\n')
    result = run_sidecar(
        ["--config", str(path), "--admin", "off", "--", *python_app("raise SystemExit(5)")],
        timeout=20,
    )
    assert result.returncode == 5


def test_app_output_passes_through() -> None:
    """The app's stdout reaches our stdout unchanged; the runtime itself prints nothing."""
    result = run_sidecar(
        ["--admin", "off", "--", *python_app("print('hello'); print('world')")], timeout=20
    )
    assert result.returncode == 0
    assert result.stdout == b"hello\nworld\n"
    assert result.stderr == b""


@pytest.mark.slow
def test_status_of_a_running_instance() -> None:
    """status prints the human view (RUNNING, pid, plugins) and --json the raw status."""
    port = free_port()
    admin = f"127.0.0.1:{port}"
    with sidecar(["--admin", admin, "--start-seconds", "100ms", "--", *SLEEPER]) as proc:
        status = wait_running(port, proc)
        human = run_sidecar(["status", "--admin", admin], timeout=20)
        assert human.returncode == 0, human.stderr
        text = human.stdout.decode()
        assert f"app:      RUNNING  pid {status['pid']}" in text
        assert "ready:    yes" in text
        assert "plugins:  admin running" in text
        assert f"pid {proc.pid}" in text
        raw = run_sidecar(["status", "--admin", admin, "--json"], timeout=20)
        assert raw.returncode == 0
        data = json.loads(raw.stdout)
        assert data["state"] == "RUNNING"
        assert data["pid"] == status["pid"]
        assert data["runtime"]["pid"] == proc.pid
        assert data["plugins"]["admin"]["state"] == "running"


@pytest.mark.slow
def test_status_reads_the_address_from_the_config(tmp_path: Path) -> None:
    """status --config uses plugins.admin.listen from that file."""
    port = free_port()
    path = write(tmp_path, "c.toml", f'[plugins.admin]\nlisten = "127.0.0.1:{port}"\n')
    with sidecar(["--config", str(path), "--start-seconds", "100ms", "--", *SLEEPER]) as proc:
        wait_running(port, proc)
        result = run_sidecar(["status", "--config", str(path), "--json"], timeout=20)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["state"] == "RUNNING"


def test_status_with_nothing_listening_exits_1() -> None:
    """status against a closed port exits 1 with one line naming the address."""
    port = free_port()
    result = run_sidecar(["status", "--admin", f"127.0.0.1:{port}", "--timeout", "2"], timeout=20)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"127.0.0.1:{port}" in line
    assert "cannot reach" in line
    assert result.stdout == b""


def test_status_bad_address_exits_2() -> None:
    """status with an invalid --admin exits 2 with one line."""
    result = run_sidecar(["status", "--admin", "nope"], timeout=20)
    assert result.returncode == 2
    assert "'nope'" in one_line(result.stderr)


def test_no_plugins_runs_a_plain_supervisor() -> None:
    """--no-plugins drops every plugin table, even one a flag asked for (e.g. --admin)."""
    result = run_sidecar(
        ["check", "--no-plugins", "--admin", "127.0.0.1:1", "--", "true"], timeout=20
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["plugins"] == {}
    run = run_sidecar(["--no-plugins", "--", "sh", "-c", "echo plain"], timeout=20)
    assert (run.returncode, run.stdout, run.stderr) == (0, b"plain\n", b"")


def test_check_prints_plugin_warnings_and_exits_zero() -> None:
    """check shows a plugin's warnings (health: liveness as strict as readiness) on stderr."""
    probe = "http://127.0.0.1:8080/health"
    args = ["check", "--probe", f"liveness={probe}", "--probe", f"readiness={probe}", "--", "true"]
    result = run_sidecar(args, timeout=20)
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.decode().splitlines()
    assert warnings
    assert all(w.startswith("sidecar-run check: warning: plugins.health: ") for w in warnings)
