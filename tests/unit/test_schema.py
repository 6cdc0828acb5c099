"""``sidecar-run schema``: a valid draft 2020-12 schema that accepts the example configs and
rejects what the loader rejects (unknown keys, bad durations and signals)."""

from __future__ import annotations

import json
import signal
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from sidecar_runtime import parse_duration, parse_signal
from sidecar_runtime._schema import config_schema, duration_schema, signal_schema
from tests.conftest import ROOT, run_sidecar

jsonschema = pytest.importorskip("jsonschema")

#: The sidecar configs of config/: not the Kubernetes and Compose manifests beside them (the
#: ConfigMap's embedded config is checked in test_manifests.py).
CONFIGS = sorted(
    p
    for p in (ROOT / "config").rglob("*")
    if p.suffix in (".toml", ".yaml", ".yml")
    and p.parent.name != "kubernetes"
    and p.name not in ("docker-compose.yml", "prometheus.yml")
)


def load(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    return tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)


@cache
def printed_schema() -> dict[str, Any]:
    """What ``sidecar-run schema`` prints (run once)."""
    result = run_sidecar(["schema"])
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def validator(schema: dict[str, Any] | None = None) -> Any:
    return jsonschema.Draft202012Validator(schema or printed_schema())


def errors(data: Any, schema: dict[str, Any] | None = None) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in validator(schema).iter_errors(data)]


def test_printed_schema_is_a_valid_draft_2020_12_schema() -> None:
    """The command prints one JSON document that is itself a valid schema of the dialect."""
    schema = printed_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    plugins = schema["properties"]["plugins"]["properties"]
    assert {"admin", "health", "metrics"} <= plugins.keys()


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_example_configs_validate(path: Path) -> None:
    """Every example config under config/ is valid under the schema."""
    assert errors(load(path)) == []


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"aap": {"command": ["x"]}}, "$"),
        ({"app": {"comand": ["x"]}}, "$.app"),
        ({"restart": {"policy": "sometimes"}}, "$.restart.policy"),
        ({"restart": {"max_restarts": "many"}}, "$.restart.max_restarts"),
        ({"stop": {"timeout": "10 s"}}, "$.stop.timeout"),
        ({"stop": {"timeout": -1}}, "$.stop.timeout"),
        ({"stop": {"signal": "TERMINATE"}}, "$.stop.signal"),
        ({"subreaper": "yes"}, "$.subreaper"),
        ({"plugins": {"metrics": {"colectors": {}}}}, "$.plugins.metrics"),
        ({"plugins": {"metrics": {"collectors": {"gpu": True}}}}, "$.plugins.metrics.collectors"),
        ({"plugins": {"health": {"probes": [{"tcp": "h:1"}]}}}, "$.plugins.health.probes[0]"),
        (
            {"plugins": {"health": {"probes": [{"kind": "liveness", "tcp": "h:1", "perod": 1}]}}},
            "$.plugins.health.probes[0]",
        ),
        ({"plugins": {"health": {"enabled": "no"}}}, "$.plugins.health.enabled"),
        ({"plugins": {"notinstalled": {"listen": ":80"}}}, "$.plugins.notinstalled"),
    ],
)
def test_wrong_keys_and_values_are_rejected(config: dict[str, Any], where: str) -> None:
    """A misspelt key or a bad value at any level fails validation at that key's path."""
    found = errors(config)
    assert found
    assert any(e.startswith(f"{where}:") for e in found), found


def test_what_the_loader_accepts_the_schema_accepts() -> None:
    """Text forms, interpolation, reserved plugin keys and disabled unknown plugins pass."""
    config = {
        "app": {"command": ["app"], "env": {"PORT": "${PORT:-8080}"}},
        "restart": {"policy": "always", "max_restarts": "unlimited", "delay": "500ms"},
        "stop": {"signal": "sigquit", "timeout": "${STOP_TIMEOUT:-20s}", "pre_stop_delay": 5},
        "plugins": {
            "health": {"critical": True, "probes": [{"kind": "readiness", "tcp": "h:1"}]},
            "admin": {"listen": "unix:/run/app/admin.sock"},
            "notinstalled": {"enabled": False},
        },
    }
    assert errors(config) == []


def test_defaults_and_plugin_prose_are_shown() -> None:
    """Defaults read as a person writes them; a plugin's CONFIG_DOCS become descriptions."""
    schema = printed_schema()
    restart = schema["$defs"]["RestartConfig"]["properties"]
    assert restart["delay"]["default"] == "1s"
    assert restart["exit_codes"]["default"] == [0]
    stop = schema["$defs"]["StopConfig"]["properties"]
    assert stop["signal"]["default"] == "TERM"
    health = schema["properties"]["plugins"]["properties"]["health"]["properties"]
    assert "WATCHDOG=1" in health["watchdog"]["description"]
    assert health["enabled"]["default"] is True


class Target(msgspec.Struct, forbid_unknown_fields=True):
    port: int


class TwinConfig(msgspec.Struct, forbid_unknown_fields=True):
    target: Target | None = None


class TwinPlugin:
    """A plugin whose config names a struct that another plugin's config names too."""


def test_struct_names_of_plugins_do_not_collide() -> None:
    """Two plugins with a struct of the same name get separate $defs entries."""
    schema = config_schema({"a": (TwinConfig, TwinPlugin), "b": (TwinConfig, TwinPlugin)})
    assert {"a.Target", "b.Target"} <= schema["$defs"].keys()
    assert errors({"plugins": {"a": {"target": {"port": 1}}}}, schema) == []
    assert errors({"plugins": {"b": {"target": {"port": "x"}}}}, schema)


@cache
def _validator(kind: str) -> Any:
    return jsonschema.Draft202012Validator(
        duration_schema() if kind == "duration" else signal_schema()
    )


def _accepts(kind: str, value: Any) -> bool:
    return bool(_validator(kind).is_valid(value))


def _parses(parse: Any, value: Any) -> bool:
    try:
        parse(value)
    except ValueError:
        return False
    return True


@given(st.text(alphabet="0123456789.smhu +", max_size=8))
def test_duration_schema_agrees_with_parse_duration(text: str) -> None:
    """For duration-like text, the schema accepts exactly what parse_duration reads."""
    assert _accepts("duration", text) == _parses(parse_duration, text)


_SIGNAL_WORDS = [n for n in signal.Signals.__members__] + ["TERMINATE", "SIG", "KILLS", "0", "99"]


@given(
    st.one_of(
        st.sampled_from(_SIGNAL_WORDS).map(lambda w: w.lower()),
        st.sampled_from(_SIGNAL_WORDS).map(lambda w: w.removeprefix("SIG")),
        st.integers(min_value=0, max_value=70),
        st.integers(min_value=0, max_value=70).map(str),
    )
)
def test_signal_schema_agrees_with_parse_signal(value: str | int) -> None:
    """Signal names in any case, with or without SIG, and numbers: as parse_signal decides."""
    assert _accepts("signal", value) == _parses(parse_signal, value)


def test_usage_error_is_one_line() -> None:
    """An unknown option is exit 2 with one line on stderr and nothing on stdout."""
    result = run_sidecar(["schema", "--pretty"])
    assert result.returncode == 2
    assert result.stdout == b""
    assert len(result.stderr.splitlines()) == 1
