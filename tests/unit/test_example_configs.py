"""Every example in config/ passes ``sidecar-run check`` and keeps what its comments promise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sidecar_runtime import parse_duration

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "config").iterdir() if p.suffix in (".toml", ".yaml", ".yml"))
#: What the shutdown needs after stop.timeout: output drain (default 2 s) and plugin stop (5 s).
SHUTDOWN_TAIL = 2.0 + 5.0


def check(path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``sidecar-run check --config PATH`` with no SIDECAR_* variables leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    return subprocess.run(
        [sys.executable, "-m", "sidecar_runtime", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def resolved(name: str) -> Any:
    """The resolved config of ``config/NAME`` as ``check`` prints it."""
    result = check(ROOT / "config" / name)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_documented_examples_exist() -> None:
    """config/ holds the four examples the docs refer to."""
    names = {p.name for p in CONFIGS}
    assert {"minimal.toml", "demo.toml", "kubernetes.yaml", "systemd.toml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_passes_check(path: Path) -> None:
    """``sidecar-run check --config FILE`` accepts the example and exits 0."""
    result = check(path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["plugins"]["admin"]["enabled"] is True


def test_kubernetes_example_fits_a_30s_grace_period() -> None:
    """The pod config listens on all interfaces and finishes well inside 30 s."""
    config = resolved("kubernetes.yaml")
    assert config["plugins"]["admin"]["listen"] == "0.0.0.0:9901"
    assert config["restart"]["policy"] == "always"
    stop = config["stop"]
    assert parse_duration(stop["pre_stop_delay"]) > 0
    assert parse_duration(stop["timeout"]) + SHUTDOWN_TAIL <= 30.0 - 3.0


def test_systemd_example_fits_the_default_stop_timeout() -> None:
    """The systemd config stops well inside systemd's default TimeoutStopSec=90s."""
    config = resolved("systemd.toml")
    assert parse_duration(config["stop"]["timeout"]) + SHUTDOWN_TAIL <= 90.0 - 10.0
    assert config["notify"] is True
