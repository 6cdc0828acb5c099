"""Enrichment: static/env/host/Kubernetes fields, event times from fields, level names."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from sidecar_plugins.logs._enrich import (
    Enrich,
    EnrichConfig,
    kubernetes_fields,
    normalize_level,
)
from sidecar_plugins.logs._processors import ProcessorConfig, build_chain
from structlog.testing import capture_logs

from sidecar_runtime import ConfigError
from sidecar_runtime._config import decode_struct

K8S_VARS = [
    "POD_NAME", "KUBERNETES_POD_NAME", "MY_POD_NAME", "POD_NAMESPACE", "KUBERNETES_NAMESPACE",
    "MY_POD_NAMESPACE", "NODE_NAME", "KUBERNETES_NODE_NAME", "MY_NODE_NAME", "CONTAINER_NAME",
    "KUBERNETES_CONTAINER_NAME", "POD_IP", "KUBERNETES_POD_IP", "MY_POD_IP", "POD_UID",
    "KUBERNETES_POD_UID", "MY_POD_UID", "KUBERNETES_SERVICE_HOST",
]  # fmt: skip


def rec(**fields: Any) -> dict[str, Any]:
    return {"message": "m", "time": 1.0, "stream": "stdout", **fields}


def processor(table: dict[str, Any]) -> Any:
    """One processor built from its table, decoded as the config loader would."""
    config = decode_struct(table, ProcessorConfig, prefix=".plugins.logs.processors[0]")
    return build_chain([config])[0]


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# enrich ----------------------------------------------------------------------------------


def test_static_env_and_host_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """Static fields, ``env`` from real variables (read once), the host name; app data wins."""
    monkeypatch.setenv("APP_VERSION", "1.4.2")
    step = processor(
        {
            "enrich": {
                "fields": {"service": "api", "replicas": 3, "canary": False},
                "env": {"version": "APP_VERSION"},
                "host": True,
            }
        }
    )
    monkeypatch.setenv("APP_VERSION", "changed later")
    assert step(rec()) == rec(
        service="api", replicas=3, canary=False, version="1.4.2", host=socket.gethostname()
    )
    assert step(rec(service="own"))["service"] == "own"


def test_overwrite_and_host_field_name() -> None:
    """``overwrite = true`` replaces existing fields; ``host = "hostname"`` renames the key."""
    step = Enrich("e", EnrichConfig(fields={"env": "prod"}, host="hostname", overwrite=True))
    assert step(rec(env="dev")) == rec(env="prod", hostname=socket.gethostname())


def test_unset_env_variable_adds_nothing_and_is_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset variable is left out of the records and reported once when the chain is built."""
    monkeypatch.delenv("SURELY_UNSET_VAR", raising=False)
    config = decode_struct(
        {"enrich": {"env": {"zone": "SURELY_UNSET_VAR"}, "fields": {"a": "b"}}}, ProcessorConfig
    )
    with capture_logs() as logs:
        (step,) = build_chain([config], log=structlog.get_logger())
    assert step(rec()) == rec(a="b")
    assert logs == [
        {
            "event": "log_enrich_env_unset",
            "log_level": "warning",
            "processor": "enrich",
            "variables": ["SURELY_UNSET_VAR"],
        }
    ]


def test_kubernetes_from_downward_api_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """POD_*/NODE_NAME variables fill a ``kubernetes`` map with Fluent Bit's key names."""
    for name in K8S_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POD_NAME", "api-7d9f-abcde")
    monkeypatch.setenv("POD_NAMESPACE", "shop")
    monkeypatch.setenv("KUBERNETES_NODE_NAME", "node-3")
    monkeypatch.setenv("MY_POD_IP", "10.0.0.7")
    monkeypatch.setenv("CONTAINER_NAME", "app")
    step = processor({"enrich": {"kubernetes": True}})
    first, second = step(rec()), step(rec())
    expected = {
        "pod_name": "api-7d9f-abcde",
        "namespace_name": "shop",
        "host": "node-3",
        "pod_ip": "10.0.0.7",
        "container_name": "app",
    }
    assert first["kubernetes"] == expected
    first["kubernetes"]["pod_name"] = "mutated"
    assert second["kubernetes"] == expected  # each record has its own map


def test_kubernetes_fallbacks(tmp_path: Path) -> None:
    """In a pod without POD_NAME, HOSTNAME is the pod; the namespace comes from the SA file."""
    ns = tmp_path / "namespace"
    ns.write_text("payments\n")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "HOSTNAME": "worker-0"}
    assert kubernetes_fields(env, str(ns)) == {
        "pod_name": "worker-0",
        "namespace_name": "payments",
    }
    assert kubernetes_fields({"HOSTNAME": "laptop"}, str(tmp_path / "absent")) == {}
    step = Enrich("e", EnrichConfig(kubernetes=True), environ={}, namespace_file=str(ns / "x"))
    assert step(rec()) == rec()  # outside a pod nothing is added


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({}, "nothing to add"),
        ({"fields": {"time": "x"}}, "fields: 'time' belongs to the pipeline"),
        ({"env": {"v": "A=B"}}, "is not an environment variable name"),
        ({"host": "message"}, "host: 'message' belongs to the pipeline"),
        ({"fields": {"a": [1]}}, "Expected `bool | int | float | str`, got `array`"),
    ],
)
def test_bad_enrich_config(table: dict[str, Any], expected: str) -> None:
    """Bad ``enrich`` tables are one keyed line."""
    with pytest.raises(ConfigError, match=r"plugins\.logs\.processors\[0\]") as caught:
        processor({"enrich": table})
    assert expected in str(caught.value)


# timestamp -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-01T12:00:00.123Z", epoch("2024-05-01T12:00:00.123")),
        ("2024-05-01T14:00:00+02:00", epoch("2024-05-01T12:00:00")),
        ("2024-05-01 12:00:00,250", epoch("2024-05-01T12:00:00.25")),
        ("2024-05-01T12:00:00.123456789Z", epoch("2024-05-01T12:00:00.123456")),
        (1714564800, epoch("2024-05-01T12:00:00")),
        (1714564800.5, epoch("2024-05-01T12:00:00.5")),
        ("1714564800", epoch("2024-05-01T12:00:00")),
        (1714564800123, epoch("2024-05-01T12:00:00.123")),
        (1714564800123456, epoch("2024-05-01T12:00:00.123456")),
        (1714564800123456789, epoch("2024-05-01T12:00:00.123456789")),
        ("Wed, 01 May 2024 12:00:00 +0000", epoch("2024-05-01T12:00:00")),
        ("01/May/2024:14:00:00 +0200", epoch("2024-05-01T12:00:00")),
    ],
)
def test_timestamp_auto_formats(value: Any, expected: float) -> None:
    """RFC 3339/ISO 8601, epoch s/ms/µs/ns (numbers or digits), RFC 2822 and CLF."""
    step = processor({"timestamp": "ts"})
    out = step(rec(ts=value))
    assert out["time"] == pytest.approx(expected, abs=1e-6)
    assert "ts" not in out
    assert "parse_error" not in out


def test_timestamp_failure_keeps_read_time() -> None:
    """An unreadable time leaves ``time`` as read, keeps the field and flags the record."""
    step = processor({"timestamp": "ts"})
    for bad in ("yesterday", "", True, None, [1], float("nan"), "9" * 400):
        out = step(rec(ts=bad))
        assert out["time"] == 1.0
        assert out["ts"] == bad or bad != bad
        assert out["parse_error"] == "timestamp"
    assert step(rec()) == rec()  # no field: nothing to do


def test_timestamp_explicit_format_zone_keep_and_field_order() -> None:
    """A strptime format in a named zone, ``keep``, and the first present field wins."""
    step = processor(
        {
            "timestamp": {
                "field": ["when", "ts"],
                "format": "%d.%m.%Y %H:%M:%S",
                "timezone": "Europe/Berlin",
                "keep": True,
            }
        }
    )
    out = step(rec(when="01.05.2024 14:00:00", ts="ignored"))
    assert out["time"] == epoch("2024-05-01T12:00:00")
    assert out["when"] == "01.05.2024 14:00:00"
    ms = processor({"timestamp": {"field": "t", "format": "epoch_ms"}})
    assert ms(rec(t=5000))["time"] == 5.0
    assert ms(rec(t="2024-05-01T00:00:00Z"))["parse_error"] == "timestamp"
    rfc = processor({"timestamp": {"field": "t", "format": "rfc3339"}})
    assert rfc(rec(t=1714564800))["parse_error"] == "timestamp"


def test_default_timestamp_fields_take_a_parsed_time() -> None:
    """``parse = "json"`` then ``timestamp = {}``: the line's ``time`` becomes the record's."""
    parse = processor({"parse": "json"})
    step = processor({"timestamp": {}})
    out = step(parse(rec(message='{"time": "2024-05-01T12:00:00Z", "msg": "hi"}')))
    assert out == rec(message="hi", time=epoch("2024-05-01T12:00:00"))


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"field": "time"}, "field: expected field names other than 'time'"),
        ({"format": "unix"}, "format: expected auto, rfc3339, epoch"),
        ({"timezone": "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_timestamp_config(table: dict[str, Any], expected: str) -> None:
    """Bad ``timestamp`` tables are one keyed line."""
    with pytest.raises(ConfigError, match=r"plugins\.logs\.processors\[0\]") as caught:
        processor({"timestamp": table})
    assert expected in str(caught.value)


# level -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        *[(v, "trace") for v in ("TRACE", "trc", "Verbose", "finest", 5 - 4 + 8)],
        *[(v, "debug") for v in ("debug", "DBG", "D", "DEBU", 7, 10, "10", 15)],
        *[(v, "info") for v in ("INFO", "information", "I", "notice", 6, 5, 20, "[info]")],
        *[(v, "warn") for v in ("WARN", "warning", "W", "wrn", 4, 30, 35.0)],
        *[(v, "error") for v in ("ERROR", "err", "E", "ERRO", "severe", 3, 40)],
        *[(v, "fatal") for v in ("FATAL", "CRIT", "critical", "emerg", "panic", 0, 2, 50, 60)],
        *[(v, None) for v in ("chatty", "", True, None, -1, [1], float("nan"))],
    ],
)
def test_level_names_and_numbers(value: Any, expected: str | None) -> None:
    """Spellings in any case, syslog 0-7 and Python's 10-50 map to the six levels."""
    assert normalize_level(value) == expected


def test_bunyan_numbers() -> None:
    """pino/bunyan numbers: 10 trace … 60 fatal."""
    assert [normalize_level(n, "bunyan") for n in (10, 20, 30, 40, 50, 60)] == [
        "trace", "debug", "info", "warn", "error", "fatal"
    ]  # fmt: skip


def test_level_processor_fields_target_and_unknown() -> None:
    """The first present field is normalised into ``target``; unknown values stay as they are."""
    step = processor({"level": True})
    assert step(rec(severity="WARNING")) == rec(severity="WARNING", level="warn")
    assert step(rec(level="E", severity="debug"))["level"] == "error"
    assert step(rec(log={"level": "crit"}))["level"] == "fatal"  # ECS's log.level
    assert step(rec(level="chatty")) == rec(level="chatty")
    custom = processor({"level": {"field": "lvl", "target": "severity"}})
    assert custom(rec(lvl=40)) == rec(lvl=40, severity="error")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("ERROR: disk full", "error"),
        ("[warn] retrying", "warn"),
        ("WARNING:root:deprecated call", "warn"),
        ("<info> started", "info"),
        ("2024-05-01 12:00:00,123 CRITICAL db down", "fatal"),
        ("E0501 12:00:00.123456   42 main.go:10] failed", "error"),
        ("I0501 12:00:00.123456   42 main.go:10] ok", "info"),
        ("an error occurred while reading", None),
        ("Infrastructure is fine", None),
        ("x" * 100 + " ERROR late", None),
        ('Traceback (most recent call last):\n  File "x"\nKeyError: 1', "error"),
        ('Exception in thread "main" java.lang.IllegalStateException: x', "error"),
        ("java.io.IOException: disk full\n\tat Main.write(Main.java:6)", "error"),
        ("com.example.Service$Inner: not an exception name", None),
    ],
)
def test_level_from_message(message: str, expected: str | None) -> None:
    """``from_message`` reads a leading level word, a capitalised one near the start, or klog."""
    step = processor({"level": {"from_message": True}})
    out = step(rec(message=message))
    assert out.get("level") == expected


def test_level_from_message_is_off_by_default() -> None:
    """Without ``from_message`` a plain line gets no level."""
    assert processor({"level": True})(rec(message="ERROR: x")) == rec(message="ERROR: x")
