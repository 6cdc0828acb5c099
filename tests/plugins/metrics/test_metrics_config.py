"""``[plugins.metrics]``: defaults, the CLI's shape, and bad input refused with its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sidecar_plugins.metrics import MetricsConfig, MetricsPlugin

from sidecar_runtime import ConfigError
from sidecar_runtime._cli import parse_run_args
from sidecar_runtime._config import decode_struct, load_config
from sidecar_runtime._plugins import load_plugins


def decode(table: dict[str, Any]) -> MetricsConfig:
    """Decode a ``[plugins.metrics]`` table as the loader does."""
    return decode_struct(table, MetricsConfig, prefix=".plugins.metrics")


def test_embedded_default_enables_metrics() -> None:
    """With no file, the metrics plugin is on with its defaults."""
    specs = load_plugins(load_config(environ={}))
    spec = next(s for s in specs if s.name == "metrics")
    assert spec.cls is MetricsPlugin
    assert spec.config == MetricsConfig()
    assert spec.config.path == "/metrics"
    assert spec.config.listen is None


def test_app_metrics_flag_shape_is_accepted() -> None:
    """``--app-metrics URL`` (repeated) decodes into endpoints named app, app2."""
    path, overrides = parse_run_args(
        [
            "--app-metrics",
            "http://127.0.0.1:8080/metrics",
            "--app-metrics",
            "http://[::1]:9/m",
            "--",
            "true",
        ]
    )
    config = load_config(path, environ={}, overrides=overrides)
    spec = next(s for s in load_plugins(config) if s.name == "metrics")
    sources = spec.config.sources()
    assert [(s.name, s.prefix, s.url) for s in sources] == [
        ("app", "app_", "http://127.0.0.1:8080/metrics"),
        ("app2", "app2_", "http://[::1]:9/m"),
    ]
    assert sources[0].timeout == 3.0
    assert sources[0].max_bytes == 4 << 20


def test_endpoint_options(tmp_path: Path) -> None:
    """name, prefix (also empty), timeout and max_bytes per endpoint; const labels; collectors."""
    path = tmp_path / "m.toml"
    path.write_text(
        """
        [plugins.metrics]
        const_labels = { pod = "${POD:-p1}", app = "shop" }
        collectors = { python = false, app_pss_uss = true }

        [[plugins.metrics.app_metrics]]
        url = "http://127.0.0.1:1/metrics"
        name = "web"
        timeout = "250ms"
        max_bytes = 1000

        [[plugins.metrics.app_metrics]]
        url = "https://127.0.0.1:2/metrics"
        prefix = ""
        """,
        encoding="utf-8",
    )
    config = load_config(path, environ={})
    metrics = next(s for s in load_plugins(config) if s.name == "metrics").config
    assert metrics.const_labels == {"pod": "p1", "app": "shop"}
    assert metrics.collectors.python is False
    assert metrics.collectors.app_pss_uss is True
    web, second = metrics.sources()
    assert (web.name, web.prefix, web.timeout, web.max_bytes) == ("web", "web_", 0.25, 1000)
    assert (second.name, second.prefix) == ("app2", "")


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"app_metrics": [{"url": "ftp://x/metrics"}]}, r"app_metrics\[0\].*url: expected an http"),
        ({"app_metrics": [{"url": "http:///metrics"}]}, r"url: expected an http"),
        ({"app_metrics": [{"name": "x"}]}, r"app_metrics\[0\].*url"),
        (
            {"app_metrics": [{"url": "http://a/", "bogus": 1}]},
            r"app_metrics\[0\]\.bogus: unknown key",
        ),
        ({"app_metrics": [{"url": "http://a/", "timeout": "0s"}]}, r"timeout must be within"),
        ({"app_metrics": [{"url": "http://a/", "timeout": "soon"}]}, r"app_metrics\[0\]\.timeout"),
        ({"app_metrics": [{"url": "http://a/", "max_bytes": 0}]}, r"max_bytes must be >= 1"),
        ({"app_metrics": [{"url": "http://a/", "name": "1x"}]}, r"name: expected letters"),
        ({"app_metrics": [{"url": "http://a/", "prefix": "a-b"}]}, r"prefix: expected a metric"),
        (
            {"app_metrics": [{"url": "http://a/"}, {"url": "http://b/", "name": "app"}]},
            r"two endpoints are named 'app'",
        ),
        ({"app_metrics": "http://a/"}, r"app_metrics: Expected `array`"),
        ({"const_labels": {"pod-name": "x"}}, r"'pod-name' is not a label name"),
        ({"const_labels": {"__x": "x"}}, r"'__x' is not a label name"),
        ({"const_labels": {"le": "x"}}, r"'le' is reserved"),
        ({"const_labels": {"pod": 3}}, r"const_labels\.pod: Expected `str`"),
        ({"collectors": {"gpu": True}}, r"collectors\.gpu: unknown key"),
        ({"listen": "nowhere"}, r"invalid address 'nowhere'"),
        ({"path": "metrics"}, r"path must start with '/'"),
        ({"port": 9100}, r"plugins\.metrics\.port: unknown key"),
    ],
)
def test_bad_config_is_refused_with_its_key(table: dict[str, Any], message: str) -> None:
    """Each bad value is a ConfigError naming plugins.metrics and the key."""
    with pytest.raises(ConfigError, match=r"plugins\.metrics") as err:
        decode(table)
    assert err.match(message)


def test_check_warns_about_risky_endpoints() -> None:
    """An empty prefix beside sidecar-run's process_*, a long timeout, a URL twice."""
    config = decode(
        {
            "app_metrics": [
                {"url": "http://127.0.0.1:1/m", "prefix": "", "timeout": "15s"},
                {"url": "http://127.0.0.1:1/m"},
            ]
        }
    )
    warnings = MetricsPlugin.check_warnings(config)
    assert len(warnings) == 3
    assert "prefix is empty" in warnings[0]
    assert "timeout 15s" in warnings[1]
    assert "same url as 'app'" in warnings[2]
    assert MetricsPlugin.check_warnings(MetricsConfig()) == []
    quiet = decode(
        {"app_metrics": [{"url": "http://a/", "prefix": ""}], "collectors": {"process": False}}
    )
    assert MetricsPlugin.check_warnings(quiet) == []
