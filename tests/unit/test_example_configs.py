"""Every example in config/ passes ``sidecar-run check`` and keeps what its comments promise."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sidecar_runtime import parse_duration

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p for p in (ROOT / "config").iterdir() if p.suffix in (".toml", ".yaml", ".yml"))
#: What the shutdown needs after stop.timeout: output drain (default 2 s), the plugins' drain
#: hooks and their stop (5 s each).
SHUTDOWN_TAIL = 2.0 + 5.0 + 5.0


def check(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``sidecar-run check --config PATH [EXTRA...]`` with no SIDECAR_* variables leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
    return subprocess.run(
        [sys.executable, "-m", "sidecar_runtime", "check", "--config", str(path), *extra],
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


def test_kubernetes_example_asks_for_the_grace_period_check_computes(tmp_path: Path) -> None:
    """The pod config listens on all interfaces, and the terminationGracePeriodSeconds its
    comments ask for is the one ``check --manifest`` suggests for Kubernetes' default of 30 s;
    with it, the check is silent."""
    config = resolved("kubernetes.yaml")
    assert config["plugins"]["admin"]["listen"] == "0.0.0.0:9901"
    assert config["restart"]["policy"] == "always"
    stop = config["stop"]
    assert parse_duration(stop["pre_stop_delay"]) > 0
    text = (ROOT / "config" / "kubernetes.yaml").read_text(encoding="utf-8")
    found = re.search(r"terminationGracePeriodSeconds: (\d+) or more", text)
    assert found, "the comments name the grace period to use"
    promised = int(found.group(1))
    assert promised >= parse_duration(stop["timeout"]) + SHUTDOWN_TAIL
    manifest = tmp_path / "pod.yaml"
    suggested = []
    for grace in (30, promised):
        manifest.write_text(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
            f"spec: {{terminationGracePeriodSeconds: {grace}, containers: [{{name: c}}]}}\n",
            encoding="utf-8",
        )
        result = check(ROOT / "config" / "kubernetes.yaml", "--manifest", str(manifest))
        assert result.returncode == 0, result.stderr
        suggested += re.findall(r"use terminationGracePeriodSeconds: (\d+)", result.stderr)
    assert suggested == [str(promised)]


def test_systemd_example_fits_the_default_stop_timeout() -> None:
    """The systemd config stops well inside systemd's default TimeoutStopSec=90s."""
    config = resolved("systemd.toml")
    assert parse_duration(config["stop"]["timeout"]) + SHUTDOWN_TAIL <= 90.0 - 10.0
    assert config["notify"] is True
