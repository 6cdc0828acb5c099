"""``[plugins.health]``: the --probe shapes, Kubernetes defaults, one-line keyed errors; and the
pure helpers around them (the watchdog interval, kube-style replies)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from sidecar_plugins.health import HealthConfig, HealthPlugin, ProbeConfig
from sidecar_plugins.health._config import parse_status_ranges, probe_names
from sidecar_plugins.health._endpoints import format_line, render
from sidecar_plugins.health._monitor import CheckLine
from sidecar_plugins.health._watchdog import watchdog_interval

from sidecar_runtime import ConfigError
from sidecar_runtime._cli import parse_run_args
from sidecar_runtime._config import load_config
from sidecar_runtime._plugins import load_plugins
from tests.conftest import run_sidecar


def health_config(overrides: dict[str, Any], path: Path | None = None) -> HealthConfig:
    """Load the config as a run would and return the health plugin's decoded table."""
    origins: dict[str, str] = {}
    config = load_config(path, environ={}, overrides=overrides, origins=origins)
    spec = next(s for s in load_plugins(config, origins=origins) if s.name == "health")
    assert isinstance(spec.config, HealthConfig)
    return spec.config


def probes(*tables: dict[str, Any]) -> HealthConfig:
    return health_config({"plugins.health.probes": list(tables)})


def test_enabled_by_default_without_probes() -> None:
    """The embedded default enables the health plugin with no probes and the watchdog on."""
    assert health_config({}) == HealthConfig()
    assert HealthConfig().probes == []
    assert HealthConfig().watchdog is True


def test_probe_flags_produce_tables_the_config_accepts() -> None:
    """--probe readiness=http://, liveness=tcp:// and startup=exec: decode with K8s defaults."""
    _, overrides = parse_run_args(
        [
            "--probe",
            "readiness=http://127.0.0.1:8080/health",
            "--probe",
            "liveness=tcp://127.0.0.1:8080",
            "--probe",
            "startup=exec:sh -c 'test -e /tmp/ready'",
            "--",
            "true",
        ]
    )
    config = health_config(overrides)
    ready, live, start = config.probes
    assert ready == ProbeConfig(kind="readiness", http="http://127.0.0.1:8080/health")
    assert live.tcp == "127.0.0.1:8080"
    assert start.exec == ["sh", "-c", "test -e /tmp/ready"]
    assert (ready.period, ready.timeout, ready.initial_delay) == (10.0, 1.0, 0.0)
    assert (ready.success_threshold, ready.failure_threshold) == (1, 3)
    assert probe_names(config.probes) == ["readiness-http", "liveness-tcp", "startup-exec"]


def test_every_key_in_a_file(tmp_path: Path) -> None:
    """A TOML file sets every probe key; durations read as the core reads them."""
    path = tmp_path / "health.toml"
    path.write_text(
        """
        [plugins.health]
        watchdog = false
        max_response_bytes = 100

        [[plugins.health.probes]]
        kind = "readiness"
        name = "web"
        http = "https://127.0.0.1:8443/ready"
        method = "HEAD"
        headers = { Host = "app.local" }
        expect_status = "200,204,300-399"
        body_contains = "ok"
        tls_verify = false
        initial_delay = "2s"
        period = "500ms"
        timeout = "100ms"
        success_threshold = 2
        failure_threshold = 5

        [[plugins.health.probes]]
        kind = "liveness"
        process = true
        """,
        encoding="utf-8",
    )
    config = health_config({}, path)
    web, alive = config.probes
    assert (web.period, web.timeout, web.initial_delay) == (0.5, 0.1, 2.0)
    assert web.headers == {"Host": "app.local"}
    assert parse_status_ranges(web.expect_status) == ((200, 200), (204, 204), (300, 399))
    assert alive.target_kind == "process"
    assert probe_names(config.probes) == ["web", "liveness-process"]


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            {"kind": "readiness", "tcp": "127.0.0.1:1", "period": -1},
            "plugins.health.probes[0].period: invalid duration -1: must not be negative",
        ),
        (
            {"kind": "readiness", "tcp": "127.0.0.1:1", "period": "1s", "timeout": "1s"},
            "plugins.health.probes[0]: timeout: must be more than 0 and less than period (1s)",
        ),
        (
            {"kind": "readiness", "tcp": "127.0.0.1:1", "period": "5ms"},
            "plugins.health.probes[0]: period: must be at least 10ms, got 5ms",
        ),
        ({"kind": "lively", "tcp": "127.0.0.1:1"}, "plugins.health.probes[0].kind: Invalid enum"),
        ({"tcp": "127.0.0.1:1"}, "plugins.health.probes[0]: Object missing required field `kind`"),
        (
            {"kind": "readiness", "tcp": "127.0.0.1:1", "http": "http://127.0.0.1/"},
            "plugins.health.probes[0]: a probe needs exactly one of http, tcp, exec or process "
            "(found: http, tcp)",
        ),
        ({"kind": "readiness"}, "exactly one of http, tcp, exec or process (found: none)"),
        (
            {"kind": "liveness", "tcp": "127.0.0.1:1", "success_threshold": 2},
            "plugins.health.probes[0]: success_threshold: must be 1 for liveness probes",
        ),
        (
            {"kind": "readiness", "tcp": "127.0.0.1:1", "failure_threshold": 0},
            "plugins.health.probes[0].failure_threshold: Expected `int` >= 1",
        ),
        (
            {"kind": "readiness", "tcp": "127.0.0.1:1", "method": "POST"},
            "plugins.health.probes[0]: method: only http probes take these keys",
        ),
        ({"kind": "readiness", "http": "ftp://host/x"}, "http: expected a URL like"),
        ({"kind": "readiness", "http": "http://[::1/x"}, "http: invalid URL"),
        ({"kind": "readiness", "tcp": "localhost"}, "tcp: invalid address 'localhost'"),
        ({"kind": "readiness", "tcp": "127.0.0.1:0"}, "tcp: expected HOST:PORT with a port"),
        ({"kind": "readiness", "exec": []}, "exec: expected a command as a list"),
        ({"kind": "readiness", "process": False}, "process: must be true (or leave it out)"),
        (
            {"kind": "readiness", "http": "http://a/", "expect_status": "2xx"},
            "expect_status: expected codes or ranges",
        ),
        ({"kind": "readiness", "http": "http://a/", "expect_status": "399-200"}, "low before"),
        ({"kind": "readiness", "http": "http://a/", "method": "get"}, "method: expected"),
        ({"kind": "readiness", "tcp": "127.0.0.1:1", "name": "a/b"}, "name: use 1-63 letters"),
        ({"kind": "readiness", "tcp": "127.0.0.1:1", "bogus": 1}, "probes[0].bogus: unknown key"),
    ],
)
def test_bad_probe_is_a_one_line_keyed_error(table: dict[str, Any], expected: str) -> None:
    """Each bad probe is one ConfigError line that names plugins.health.probes[i] and the key."""
    with pytest.raises(ConfigError) as err:
        probes(table)
    message = str(err.value)
    assert "\n" not in message
    assert expected in message, message
    assert message.startswith("command line: ")


def test_names_must_be_unique() -> None:
    """Two probes with one name (given or default) are refused, naming the second."""
    with pytest.raises(ConfigError, match=r"plugins\.health: probes\[1\]\.name: 'web' is already"):
        probes(
            {"kind": "readiness", "name": "web", "tcp": "127.0.0.1:1"},
            {"kind": "liveness", "name": "web", "tcp": "127.0.0.1:1"},
        )
    config = probes(
        {"kind": "readiness", "tcp": "127.0.0.1:1"},
        {"kind": "readiness", "tcp": "127.0.0.1:2"},
        {"kind": "readiness", "tcp": "127.0.0.1:3"},
    )
    assert probe_names(config.probes) == ["readiness-tcp", "readiness-tcp-2", "readiness-tcp-3"]


def test_liveness_as_strict_as_readiness_is_warned() -> None:
    """check_warnings names a liveness probe no more lenient than readiness on one target."""
    url = "http://127.0.0.1:8080/health"
    strict = probes({"kind": "readiness", "http": url}, {"kind": "liveness", "http": url})
    (warning,) = HealthPlugin.check_warnings(strict)
    assert warning.startswith(
        "plugins.health.probes[1] (liveness 'liveness-http') is as strict as probes[0] "
        "(readiness 'readiness-http') on the same target http://127.0.0.1:8080/health"
    )
    lenient = probes(
        {"kind": "readiness", "http": url},
        {"kind": "liveness", "http": url, "failure_threshold": 6},
    )
    elsewhere = probes(
        {"kind": "readiness", "http": url}, {"kind": "liveness", "tcp": "127.0.0.1:8080"}
    )
    assert HealthPlugin.check_warnings(lenient) == []
    assert HealthPlugin.check_warnings(elsewhere) == []


def test_check_command_prints_the_probes_and_refuses_bad_ones(tmp_path: Path) -> None:
    """`sidecar-run check --probe ...` resolves the probes; a bad file exits 2 with one line."""
    result = run_sidecar(["check", "--probe", "readiness=tcp://127.0.0.1:8080", "--", "true"])
    assert result.returncode == 0, result.stderr
    (probe,) = json.loads(result.stdout)["plugins"]["health"]["probes"]
    assert probe["kind"] == "readiness"
    assert probe["tcp"] == "127.0.0.1:8080"
    assert probe["period"] == "10s"
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[plugins.health.probes]]\nkind = "liveness"\nexec = ["true"]\ntimeout = "20s"\n',
        encoding="utf-8",
    )
    result = run_sidecar(["check", "--config", str(bad)])
    assert result.returncode == 2
    assert result.stderr.decode() == (
        f"sidecar-run: {bad}: plugins.health.probes[0]: timeout: must be more than 0 and less "
        "than period (10s), got 20s\n"
    )


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process() -> None:
    """WATCHDOG_USEC → pings at half of it; another WATCHDOG_PID or a bad value → none, why."""
    sock = {"NOTIFY_SOCKET": "/run/notify"}
    assert watchdog_interval({**sock, "WATCHDOG_USEC": "30000000"}) == (15.0, "")
    own = {**sock, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(own) == (1.0, "")
    assert watchdog_interval(sock) == (None, "WATCHDOG_USEC is not set")
    other = {**sock, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    assert watchdog_interval(other) == (None, "WATCHDOG_PID=1 is another process")
    assert watchdog_interval({"WATCHDOG_USEC": "1000000"}) == (None, "NOTIFY_SOCKET is not set")
    assert watchdog_interval({**sock, "WATCHDOG_USEC": "soon"})[1] == (
        "WATCHDOG_USEC='soon' is not a number"
    )
    assert watchdog_interval({**sock, "WATCHDOG_USEC": "0"})[0] is None


def test_kube_style_replies() -> None:
    """`ok` when passing; every check and a verdict when failing or asked for ?verbose."""
    lines = [CheckLine("ping", True), CheckLine("app", True, "RUNNING")]
    failing = [*lines, CheckLine("health/web", False, "HTTP 503", 0.0021)]
    assert render("readyz", lines, True, verbose=False).body == b"ok\n"
    assert render("livez", lines, True, verbose=True).body == (
        b"[+]ping ok\n[+]app ok: RUNNING\nlivez check passed\n"
    )
    reply = render("readyz", failing, False, verbose=False)
    assert reply.status == 503
    assert reply.body == (
        b"[+]ping ok\n[+]app ok: RUNNING\n[-]health/web failed: HTTP 503 in 2.1ms\n"
        b"readyz check failed\n"
    )
    assert format_line(CheckLine("x", False, "timed out after 1s")) == (
        "[-]x failed: timed out after 1s"
    )
