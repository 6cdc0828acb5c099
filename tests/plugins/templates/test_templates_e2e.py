"""The templates plugin in the real ``sidecar-run`` command: the file exists when the app's first
line runs, a ConfigMap swap reaches the app as SIGHUP, a template error stops the start before
the app is launched, and a full disk at run time keeps the old file."""

from __future__ import annotations

import json
import os
import resource
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SIDECAR, child_env, python_app, run_sidecar
from tests.plugins.templates.helpers import HUP_APP, ConfigMapVolume, read_records, wait_for_sync

pytestmark = pytest.mark.slow


def write_config(path: Path, app: list[str], templates: str, extra: str = "") -> Path:
    path.write_text(
        f"[app]\ncommand = {json.dumps(app)}\n"
        "[plugins.admin]\nlisten = '127.0.0.1:0'\n"
        f"{extra}\n[plugins.templates]\ndebounce = '20ms'\n{templates}\n"
    )
    return path


def test_configmap_swap_reaches_the_app_as_sighup(tmp_path: Path) -> None:
    """Rendered before the app starts; a changed output is one SIGHUP with the new content;
    an update that leaves the output unchanged signals nobody."""
    volume = ConfigMapVolume(tmp_path / "cm", {"level": "info\n", "other": "a"})
    source = tmp_path / "app.ini.tmpl"
    source.write_text(
        "[log]\nlevel = {{ file('" + volume.path("level") + "') | trim }}\n"
        "port = {{ env.APP_PORT | default('8080') }}\n"
    )
    target, records = tmp_path / "etc" / "app.ini", tmp_path / "records"
    config = write_config(
        tmp_path / "sidecar.toml",
        [*HUP_APP, str(target), str(records)],
        f"[[plugins.templates.templates]]\nsource = '{source}'\ntarget = '{target}'\n"
        "on_change = { signal = 'HUP' }\n",
    )
    proc = subprocess.Popen(
        [*SIDECAR, "--config", str(config)],
        env=child_env(APP_PORT="9000"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        first = wait_for_sync(lambda: read_records(records), what="the app's first read")
        assert first[0]["content"] == "[log]\nlevel = info\nport = 9000\n"
        volume.update({"level": "info\n", "other": "b"})  # same output: no signal
        volume.update({"level": "debug\n", "other": "b"})
        hups = wait_for_sync(lambda: [r for r in read_records(records) if r["event"] == "hup"])
        assert [h["content"] for h in hups] == ["[log]\nlevel = debug\nport = 9000\n"]
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=15)
    assert b"template_render_failed" not in stderr


def test_a_template_error_at_start_exits_before_the_app_is_launched(tmp_path: Path) -> None:
    """A missing variable: exit 2, one line naming the template, file:line and the variable;
    the app never ran and no file was written."""
    source = tmp_path / "app.tmpl"
    source.write_text(
        "# app config\nurl = {{ env.DATABASE_URL }}\nport = {{ env.PORT | default(80) }}\n"
    )
    target, marker = tmp_path / "app.conf", tmp_path / "app-ran"
    app = python_app(
        "import sys\nopen(sys.argv[2], 'w').close()\nprint(open(sys.argv[1]).read(), end='')"
    )
    config = write_config(
        tmp_path / "sidecar.toml",
        [*app, str(target), str(marker)],
        f"templates = [{{ source = '{source}', target = '{target}', name = 'app.conf' }}]",
    )
    env = child_env()
    env.pop("DATABASE_URL", None)
    failed = run_sidecar(["--config", str(config)], env=env)
    assert failed.returncode == 2
    last = failed.stderr.decode().strip().splitlines()[-1]
    assert last == (
        f"sidecar-run: plugin 'templates' failed to start: template 'app.conf' ({source} -> "
        f"{target}): {source}:2: environment variable 'DATABASE_URL' is not set "
        "(use env.DATABASE_URL | default(...))"
    )
    assert not marker.exists()
    assert not target.exists()


def _limit_file_size() -> None:  # pragma: no cover - runs in the child before exec
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))


def test_a_full_disk_at_run_time_keeps_the_old_file(tmp_path: Path) -> None:
    """With files capped at 64 KiB (RLIMIT_FSIZE, as a full disk would), a render too large to
    write fails cleanly: logged, the old file intact, no temporary file; a later one succeeds."""
    size = tmp_path / "size"
    size.write_text("10")
    source = tmp_path / "big.tmpl"
    source.write_text("{{ 'x' * (file('" + str(size) + "') | trim | int) }}")
    out = tmp_path / "out"
    out.mkdir()
    target, log = out / "big.txt", tmp_path / "sidecar.log"
    config = write_config(
        tmp_path / "sidecar.toml",
        python_app("import time\ntime.sleep(60)"),
        f"templates = [{{ source = '{source}', target = '{target}' }}]",
        extra=f"[log]\nlevel = 'info'\nfile = '{log}'\n",
    )
    proc = subprocess.Popen(
        [*SIDECAR, "--config", str(config)],
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_limit_file_size,  # setrlimit only, before exec
    )
    try:
        wait_for_sync(lambda: target.exists(), what="the first render")
        inode = target.stat().st_ino
        size.write_text("100000")

        def failure() -> dict[str, str] | None:
            for line in log.read_text().splitlines() if log.exists() else []:
                event = json.loads(line)
                if event["event"] == "template_render_failed":
                    return dict(event)
            return None

        event = wait_for_sync(failure, what="template_render_failed")
        assert event["reason"] == f"cannot write {target}: File too large"
        assert target.read_text() == "x" * 10
        assert target.stat().st_ino == inode
        assert os.listdir(out) == ["big.txt"]
        size.write_text("20")
        wait_for_sync(lambda: target.read_text() == "x" * 20, what="the recovery")
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
