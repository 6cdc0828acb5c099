"""Property tests: config data decodes or is a ConfigError; converters raise only ValueError."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar_runtime import ConfigError, parse_address, parse_duration, parse_signal
from sidecar_runtime._config import Config, load_config

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Values that mean something somewhere in the config.
WORDS = [
    "10s", "500ms", "1m30s", "-1s", "TERM", "HUP", "none", "always", "never", "group",
    "${X}", "${X:-d}", "$$", "127.0.0.1:0", "unix:/x", "unlimited",
]  # fmt: skip
#: TOML holds 64-bit integers; huge integers are a known bug (see test_config.py).
toml_ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
scalars = (
    st.none()
    | st.booleans()
    | toml_ints
    | st.floats()
    | st.text(max_size=10)
    | st.sampled_from(WORDS)
)
KNOWN_KEYS = [
    "app", "restart", "stop", "signals", "output", "log", "plugins", "admin", "command",
    "env", "policy", "exit_codes", "max_restarts", "delay", "timeout", "signal",
    "pre_stop_delay", "rewrite", "forward_to", "mode", "level", "listen", "enabled",
    "critical", "token", "subreaper", "notify", "HUP", "USR1", "TERM",
]  # fmt: skip
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=6)
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=4),
    max_leaves=8,
)
DOTTED = [
    "app.command", "app.env", "app.working_dir", "restart.policy", "restart.exit_codes",
    "restart.max_restarts", "restart.delay", "restart.multiplier", "restart.jitter",
    "stop.signal", "stop.timeout", "stop.pre_stop_delay", "signals.rewrite",
    "signals.forward_to", "output.mode", "output.max_line_bytes", "log.level", "subreaper",
    "plugins", "plugins.admin", "plugins.admin.listen",
]  # fmt: skip


@pytest.fixture(scope="module")
def yaml_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One YAML file path, rewritten by every example."""
    return tmp_path_factory.mktemp("fuzz") / "c.yaml"


def _load_or_config_error(**kwargs: Any) -> None:
    """Load and accept only success or ConfigError (anything else propagates and fails)."""
    try:
        config = load_config(environ={}, **kwargs)
    except ConfigError as err:
        message = str(err)
    else:
        assert isinstance(config, Config)
        return
    assert message


@pytest.mark.slow
@FUZZ
@given(st.dictionaries(keys, trees, max_size=3))
def test_arbitrary_top_level_overrides_decode_or_config_error(data: dict[str, Any]) -> None:
    """Arbitrary nested data as top-level overrides decodes or raises ConfigError only."""
    _load_or_config_error(overrides=data)


@pytest.mark.slow
@FUZZ
@given(st.dictionaries(st.sampled_from(DOTTED), trees, max_size=4))
def test_arbitrary_values_at_real_keys_decode_or_config_error(data: dict[str, Any]) -> None:
    """Arbitrary values at real dotted keys decode or raise ConfigError only."""
    _load_or_config_error(overrides=data)


@pytest.mark.slow
@FUZZ
@given(data=st.dictionaries(keys, trees, max_size=3))
def test_arbitrary_yaml_files_decode_or_config_error(yaml_path: Path, data: dict[str, Any]) -> None:
    """Arbitrary nested data written as a YAML file decodes or raises ConfigError only."""
    yaml_path.write_text(yaml.safe_dump(data), encoding="utf-8")
    _load_or_config_error(path=yaml_path)


@FUZZ
@given(
    text=st.text(max_size=80)
    | st.text(alphabet="{}[]:-,\n !&*|>'\"#%@`?$tabc0129.", max_size=80)
    | st.sampled_from(["!!binary x", "a: !!python/name:os.system\n", "{a: 1, a: 2}", "? [a]\n: 1"])
)
def test_arbitrary_yaml_text_decodes_or_config_error(yaml_path: Path, text: str) -> None:
    """Arbitrary YAML text (syntax errors, tags, scalars) decodes or raises ConfigError only."""
    yaml_path.write_text(text, encoding="utf-8")
    _load_or_config_error(path=yaml_path)


@FUZZ
@given(st.text(max_size=40) | st.text(alphabet="0123456789.smhu ", max_size=12))
def test_parse_duration_raises_only_value_error(text: str) -> None:
    """parse_duration returns a finite non-negative float or raises ValueError."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert 0 <= seconds < float("inf")


@FUZZ
@given(st.text(max_size=20) | st.text(alphabet="SIGTERMHUPsigtermhup0123456789 ", max_size=8))
def test_parse_signal_raises_only_value_error(text: str) -> None:
    """parse_signal returns a signal or raises ValueError."""
    try:
        sig = parse_signal(text)
    except ValueError:
        return
    assert sig.value > 0


@FUZZ
@given(st.text(max_size=30) | st.text(alphabet="unix:/[]0123456789.abc", max_size=20))
def test_parse_address_raises_only_value_error(text: str) -> None:
    """parse_address returns a TCP address with a valid port or a unix path, or ValueError."""
    try:
        address = parse_address(text)
    except ValueError:
        return
    assert address.kind in ("tcp", "unix")
    if address.kind == "tcp":
        assert 0 <= address.port <= 65535
        assert address.host
    else:
        assert address.path
