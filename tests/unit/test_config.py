"""The config loader: TOML/YAML files, env and override precedence, interpolation, strict errors."""

from __future__ import annotations

import signal
import textwrap
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sidecar_runtime import ConfigError, Duration, Signal
from sidecar_runtime._config import Config, decode_struct, load_config
from sidecar_runtime._plugins import load_plugins

NO_ENV: dict[str, str] = {}


def write(tmp_path: Path, name: str, text: str) -> Path:
    """Write a dedented config file and return its path."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(*args: object, **kwargs: object) -> str:
    """Load a config that must fail; return the one-line message."""
    with pytest.raises(ConfigError) as err:
        load_config(*args, **kwargs)  # type: ignore[arg-type]
    message = str(err.value)
    assert "\n" not in message
    assert err.value.exit_code == 2
    return message


def test_defaults_without_sources() -> None:
    """With no file, env or overrides the embedded defaults decode: admin, metrics, health."""
    config = load_config(environ=NO_ENV)
    assert config == Config(plugins={"admin": {}, "metrics": {}, "health": {}})
    assert config.restart.policy == "never"
    assert config.stop.signal.as_signals() is signal.SIGTERM
    assert config.stop.timeout == 30.0
    assert config.restart.start_seconds == 1.0


def test_toml_file_is_read(tmp_path: Path) -> None:
    """A TOML file sets values in every section."""
    path = write(
        tmp_path,
        "c.toml",
        """
        subreaper = false
        [app]
        command = ["sleep", "1"]
        env = {A = "1"}
        [restart]
        policy = "on-failure"
        exit_codes = [0, 3]
        max_restarts = "unlimited"
        [stop]
        signal = "QUIT"
        timeout = "1m30s"
        """,
    )
    config = load_config(path, environ=NO_ENV)
    assert config.app.command == ["sleep", "1"]
    assert config.app.env == {"A": "1"}
    assert config.restart.policy == "on-failure"
    assert config.restart.exit_codes == [0, 3]
    assert config.restart.max_restarts == "unlimited"
    assert config.stop.signal.as_signals() is signal.SIGQUIT
    assert config.stop.timeout == 90.0
    assert config.subreaper is False


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".YAML"])
def test_yaml_file_is_read(tmp_path: Path, suffix: str) -> None:
    """A YAML file (.yaml or .yml, any case) is read like TOML."""
    path = write(
        tmp_path,
        f"c{suffix}",
        """
        app:
          command: [echo, hi]
        restart:
          policy: always
          delay: 500ms
        stop:
          signal: 2
        """,
    )
    config = load_config(path, environ=NO_ENV)
    assert config.app.command == ["echo", "hi"]
    assert config.restart.policy == "always"
    assert config.restart.delay == 0.5
    assert config.stop.signal.as_signals() is signal.SIGINT


def test_empty_yaml_file_is_the_defaults(tmp_path: Path) -> None:
    """An empty YAML document means no settings."""
    path = write(tmp_path, "c.yaml", "")
    assert load_config(path, environ=NO_ENV) == load_config(environ=NO_ENV)


def test_config_path_from_sidecar_config_env(tmp_path: Path) -> None:
    """Without a path, $SIDECAR_CONFIG names the file (and is not itself a config key)."""
    path = write(tmp_path, "c.toml", '[restart]\npolicy = "always"\n')
    config = load_config(environ={"SIDECAR_CONFIG": str(path)})
    assert config.restart.policy == "always"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [('"10s"', 10.0), ('"500ms"', 0.5), ('"1m30s"', 90.0), ("5", 5.0), ("2.5", 2.5)],
)
def test_durations_in_files(tmp_path: Path, text: str, seconds: float) -> None:
    """Durations are read from unit strings and bare numbers into Duration seconds."""
    path = write(tmp_path, "c.toml", f"[stop]\ntimeout = {text}\n")
    timeout = load_config(path, environ=NO_ENV).stop.timeout
    assert isinstance(timeout, Duration)
    assert timeout == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "sig"),
    [('"TERM"', signal.SIGTERM), ('"SIGHUP"', signal.SIGHUP), ('"int"', signal.SIGINT), ("3", 3)],
)
def test_signals_in_files(tmp_path: Path, text: str, sig: int) -> None:
    """Signals are read by name or number into Signal."""
    path = write(tmp_path, "c.toml", f"[stop]\nsignal = {text}\n")
    value = load_config(path, environ=NO_ENV).stop.signal
    assert isinstance(value, Signal)
    assert value == sig


def test_unknown_key_in_file_names_path_and_file(tmp_path: Path) -> None:
    """An unknown key is rejected with its dotted path and the file it came from."""
    path = write(tmp_path, "c.toml", '[restart]\npolicy = "always"\nbogus = 1\n')
    message = config_error(path, environ=NO_ENV)
    assert message == f"{path}: restart.bogus: unknown key"


def test_unknown_nested_key_in_yaml(tmp_path: Path) -> None:
    """Unknown keys deep in a YAML file are reported with their full path."""
    path = write(tmp_path, "c.yaml", "stop:\n  timeout: 1s\n  grace: 2s\n")
    message = config_error(path, environ=NO_ENV)
    assert message.startswith(f"{path}: stop.grace: ")
    assert "unknown key" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    """An unknown top-level section is rejected."""
    path = write(tmp_path, "c.toml", "[bogus]\nx = 1\n")
    assert config_error(path, environ=NO_ENV) == f"{path}: bogus: unknown key"


def test_env_overrides_file_and_overrides_override_env(tmp_path: Path) -> None:
    """Precedence: file < SIDECAR_* env < overrides, per key."""
    path = write(
        tmp_path, "c.toml", '[restart]\npolicy = "never"\ndelay = "3s"\nmax_restarts = 1\n'
    )
    env = {"SIDECAR_RESTART__POLICY": "on-failure", "SIDECAR_RESTART__MAX_RESTARTS": "7"}
    from_file = load_config(path, environ=NO_ENV).restart
    assert (from_file.policy, from_file.max_restarts) == ("never", 1)
    from_env = load_config(path, environ=env).restart
    assert (from_env.policy, from_env.max_restarts, from_env.delay) == ("on-failure", 7, 3.0)
    top = load_config(path, environ=env, overrides={"restart.policy": "always"}).restart
    assert (top.policy, top.max_restarts, top.delay) == ("always", 7, 3.0)


def test_env_values_are_read_as_toml_when_they_are() -> None:
    """SIDECAR_* values parse as TOML values (numbers, booleans, arrays) or stay text."""
    env = {
        "SIDECAR_SUBREAPER": "false",
        "SIDECAR_RESTART__EXIT_CODES": "[0, 2]",
        "SIDECAR_STOP__TIMEOUT": "5s",
        "SIDECAR_APP__COMMAND": '["a", "b"]',
    }
    config = load_config(environ=env)
    assert config.subreaper is False
    assert config.restart.exit_codes == [0, 2]
    assert config.stop.timeout == 5.0
    assert config.app.command == ["a", "b"]


def test_env_unknown_key_names_the_variable() -> None:
    """A SIDECAR_* variable for an unknown key names the variable and the key."""
    message = config_error(environ={"SIDECAR_RESTART__BOGUS": "1"})
    assert message == "environment variable SIDECAR_RESTART__BOGUS: restart.bogus: unknown key"


def test_env_bad_value_names_variable_key_and_value() -> None:
    """A bad env value is reported with the variable, the key and the value."""
    message = config_error(environ={"SIDECAR_RESTART__POLICY": "sometimes"})
    assert message.startswith("environment variable SIDECAR_RESTART__POLICY: restart.policy: ")
    assert "'sometimes'" in message


def test_env_malformed_variable_name() -> None:
    """An empty part in SIDECAR_A____B is an error showing the expected form."""
    message = config_error(environ={"SIDECAR_RESTART____POLICY": "always"})
    assert "SIDECAR_RESTART____POLICY" in message
    assert "SIDECAR_SECTION__KEY" in message


def test_override_through_a_non_table_is_rejected(tmp_path: Path) -> None:
    """Setting a.b where the file made a a value, not a table, is an error naming the path."""
    path = write(tmp_path, "c.toml", "subreaper = true\n")
    message = config_error(path, environ=NO_ENV, overrides={"subreaper.x": 1})
    assert message.startswith("command line: subreaper.x: ")
    assert "'subreaper' is not a table" in message


def test_interpolation_of_variables(tmp_path: Path) -> None:
    """${VAR}, ${VAR:-default} and $$ are expanded in every string of the file."""
    path = write(
        tmp_path,
        "c.toml",
        """
        [app]
        command = ["run", "${HOME_DIR}", "${MISSING:-dflt}", "${EMPTY:-e}", "a${HOME_DIR}b"]
        working_dir = "$${HOME_DIR}"
        [app.env]
        PRICE = "$$5"
        RAW = "${EMPTY}"
        """,
    )
    config = load_config(path, environ={"HOME_DIR": "/h", "EMPTY": ""})
    assert config.app.command == ["run", "/h", "dflt", "e", "a/hb"]
    assert config.app.working_dir == "${HOME_DIR}"
    assert config.app.env == {"PRICE": "$5", "RAW": ""}


def test_interpolation_in_yaml_values(tmp_path: Path) -> None:
    """YAML values are interpolated too, including nested lists."""
    path = write(tmp_path, "c.yaml", "app:\n  command: [x, '${WHO:-nobody}']\n")
    assert load_config(path, environ={"WHO": "me"}).app.command == ["x", "me"]
    assert load_config(path, environ=NO_ENV).app.command == ["x", "nobody"]


def test_interpolated_value_is_then_validated(tmp_path: Path) -> None:
    """A variable expanding to a duration is decoded as one."""
    path = write(tmp_path, "c.toml", '[stop]\ntimeout = "${GRACE:-2s}"\n')
    assert load_config(path, environ={"GRACE": "500ms"}).stop.timeout == 0.5
    assert load_config(path, environ=NO_ENV).stop.timeout == 2.0


def test_missing_variable_names_key_and_variable(tmp_path: Path) -> None:
    """An unset ${VAR} without default is an error naming the file, key path and variable."""
    path = write(tmp_path, "c.toml", '[app]\ncommand = ["x", "${NOPE}"]\n[app.env]\nK = "v"\n')
    message = config_error(path, environ=NO_ENV)
    assert message.startswith(f"{path}: app.command[1]: ")
    assert "${NOPE}" in message
    assert "default" in message


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ('[restart]\npolicy = "sometimes"\n', "restart.policy", "'sometimes'"),
        ('[stop]\ntimeout = "10 parsecs"\n', "stop.timeout", "'10 parsecs'"),
        ('[stop]\ntimeout = "-1s"\n', "stop.timeout", "'-1s'"),
        ('[stop]\nsignal = "SIGFOO"\n', "stop.signal", "'SIGFOO'"),
        ("[stop]\nsignal = 99\n", "stop.signal", "99"),
        ('[restart]\nmax_restarts = "lots"\n', "restart.max_restarts", "'lots'"),
        ('[output]\nmode = "tty"\n', "output.mode", "'tty'"),
        ('[log]\nlevel = "loud"\n', "log.level", "'loud'"),
        ('subreaper = "yes"\n', "subreaper", "'yes'"),
        ("[app]\ncommand = 3\n", "app.command", "3"),
    ],
)
def test_bad_value_names_source_key_and_value(
    tmp_path: Path, text: str, key: str, value: str
) -> None:
    """A wrong type or bad value is one ConfigError line: file, key path and the value."""
    path = write(tmp_path, "c.toml", text)
    message = config_error(path, environ=NO_ENV)
    assert message.startswith(f"{path}: {key}: ")
    assert value in message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[restart]\nmax_restarts = -1\n", "max_restarts must be >= 0"),
        ("[restart]\nmultiplier = 0.5\n", "multiplier must be >= 1"),
        ("[restart]\njitter = 1.5\n", "jitter must be within 0..1"),
        ("[restart]\nexit_codes = [256]\n", "exit_codes must be within 0..255"),
        ("[output]\nmax_line_bytes = 10\n", "max_line_bytes must be >= 64"),
        ('[app]\ncommand = [""]\n', "must not be an empty string"),
    ],
)
def test_cross_field_checks(tmp_path: Path, text: str, fragment: str) -> None:
    """Range checks in the structs become ConfigErrors naming the file and the value."""
    path = write(tmp_path, "c.toml", text)
    message = config_error(path, environ=NO_ENV)
    assert message.startswith(f"{path}: ")
    assert fragment in message


def test_pre_stop_delay_longer_than_timeout_is_rejected(tmp_path: Path) -> None:
    """pre_stop_delay must fit within the stop timeout."""
    path = write(tmp_path, "c.toml", '[stop]\ntimeout = "1s"\npre_stop_delay = "5s"\n')
    message = config_error(path, environ=NO_ENV)
    assert message.startswith(f"{path}: stop")
    assert "pre_stop_delay (5s) must not exceed the stop timeout (1s)" in message
    ok = write(tmp_path, "ok.toml", '[stop]\ntimeout = "5s"\npre_stop_delay = "5s"\n')
    assert load_config(ok, environ=NO_ENV).stop.pre_stop_delay == 5.0


@pytest.mark.parametrize("source", ["TERM", "SIGTERM", "15", "KILL", "STOP", "CHLD"])
def test_rewriting_term_and_uncatchables_is_rejected(source: str) -> None:
    """TERM (use stop.signal), KILL, STOP and CHLD cannot be rewritten."""
    message = config_error(environ=NO_ENV, overrides={"signals.rewrite": {source: "HUP"}})
    assert message.startswith("command line: signals")
    assert "cannot be rewritten" in message
    assert repr(source) in message


def test_rewrite_map_reads_names_and_none() -> None:
    """Valid rewrites map numbers to numbers; 'none' drops the signal (0)."""
    config = load_config(
        environ=NO_ENV, overrides={"signals.rewrite": {"HUP": "USR1", "WINCH": "none"}}
    )
    assert config.signals.rewrite_map() == {signal.SIGHUP: signal.SIGUSR1, signal.SIGWINCH: 0}


def test_rewrite_with_unknown_signal_is_rejected() -> None:
    """An unknown signal in a rewrite names the bad value."""
    message = config_error(environ=NO_ENV, overrides={"signals.rewrite": {"HUP": "BOGUS"}})
    assert "'BOGUS'" in message


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    """A TOML syntax error is one line naming the file and the position."""
    path = write(tmp_path, "c.toml", "[app\ncommand = 1\n")
    message = config_error(path, environ=NO_ENV)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert "line 1" in message


def test_invalid_yaml_is_one_line(tmp_path: Path) -> None:
    """A YAML syntax error (multi-line in PyYAML) is folded into one line."""
    path = write(tmp_path, "c.yaml", "app:\n  command: [a,\n")
    message = config_error(path, environ=NO_ENV)
    assert message.startswith(f"{path}: invalid YAML: ")


@pytest.mark.parametrize(("name", "text"), [("c.yaml", "- 1\n- 2\n"), ("s.yaml", "hello\n")])
def test_non_mapping_top_level_is_rejected(tmp_path: Path, name: str, text: str) -> None:
    """The top level must be a table of keys."""
    path = write(tmp_path, name, text)
    message = config_error(path, environ=NO_ENV)
    assert message.startswith(f"{path}: the top level must be a table")


def test_unknown_extension_is_rejected(tmp_path: Path) -> None:
    """Only .toml, .yaml and .yml files are read."""
    path = write(tmp_path, "c.json", "{}")
    message = config_error(path, environ=NO_ENV)
    assert message == f"{path}: unknown config file type '.json': use .toml, .yaml or .yml"


def test_missing_file_is_reported(tmp_path: Path) -> None:
    """A config path that does not exist is a ConfigError naming it."""
    path = tmp_path / "nope.toml"
    assert config_error(path, environ=NO_ENV) == f"{path}: config file not found"


def test_undecodable_file_is_reported(tmp_path: Path) -> None:
    """A file that is not UTF-8 is a ConfigError, not a UnicodeDecodeError."""
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xff\xfe[app]\n")
    assert config_error(path, environ=NO_ENV).startswith(f"{path}: cannot read config file")


def test_origins_record_where_each_key_came_from(tmp_path: Path) -> None:
    """origins maps key paths to defaults, the file, the env variable or the command line."""
    path = write(tmp_path, "c.toml", '[restart]\ndelay = "2s"\n')
    origins: dict[str, str] = {}
    load_config(
        path,
        environ={"SIDECAR_STOP__TIMEOUT": "3s"},
        overrides={"restart.policy": "always"},
        origins=origins,
    )
    assert origins["plugins.admin"] == "defaults"
    assert origins["restart.delay"] == str(path)
    assert origins["stop.timeout"] == "environment variable SIDECAR_STOP__TIMEOUT"
    assert origins["restart.policy"] == "command line"


def test_to_builtins_renders_durations_and_signals_as_text() -> None:
    """to_builtins writes durations as '1s'-style text and signals by name."""
    data = load_config(environ=NO_ENV, overrides={"stop.timeout": 0.25}).to_builtins()
    assert data["stop"] == {"signal": "TERM", "timeout": "250ms", "pre_stop_delay": "0s"}
    assert data["restart"]["start_seconds"] == "1s"


def test_plugin_table_unknown_key_names_file_and_path(tmp_path: Path) -> None:
    """An unknown key in a plugin's table is reported as plugins.<name>.<key> with its file."""
    path = write(tmp_path, "c.toml", "[plugins.admin]\nbogus = 1\n")
    origins: dict[str, str] = {}
    config = load_config(path, environ=NO_ENV, origins=origins)
    with pytest.raises(ConfigError) as err:
        load_plugins(config, origins=origins)
    assert str(err.value) == f"{path}: plugins.admin.bogus: unknown key"


def test_plugin_reserved_flags_must_be_booleans() -> None:
    """plugins.<name>.enabled must be true or false."""
    config = load_config(environ=NO_ENV, overrides={"plugins.admin.enabled": "yes"})
    with pytest.raises(ConfigError, match=r"plugins\.admin\.enabled: expected true or false"):
        load_plugins(config)


def test_unknown_plugin_is_rejected() -> None:
    """Enabling a plugin that is not installed names it and lists the installed ones."""
    config = load_config(environ=NO_ENV, overrides={"plugins.nosuch": {}})
    with pytest.raises(ConfigError, match=r"no plugin named 'nosuch'.*installed: .*admin"):
        load_plugins(config)


def test_disabled_plugin_is_skipped() -> None:
    """enabled = false leaves the plugin out."""
    config = load_config(environ=NO_ENV, overrides={"plugins.admin.enabled": False})
    assert "admin" not in [spec.name for spec in load_plugins(config)]


def test_plugin_value_error_names_the_file(tmp_path: Path) -> None:
    """A bad plugins.admin.listen in a file is reported against that file, not 'defaults'."""
    path = write(tmp_path, "c.toml", '[plugins.admin]\nlisten = "nope"\n')
    origins: dict[str, str] = {}
    config = load_config(path, environ=NO_ENV, origins=origins)
    with pytest.raises(ConfigError) as err:
        load_plugins(config, origins=origins)
    assert str(err.value).startswith(f"{path}: plugins.admin")
    assert "'nope'" in str(err.value)


def test_huge_integer_duration_is_a_config_error(tmp_path: Path) -> None:
    """A YAML integer too big for a float is a ConfigError, not an OverflowError."""
    path = write(tmp_path, "c.yaml", f"stop:\n  timeout: {10**400}\n")
    message = config_error(path, environ=NO_ENV)
    assert message.startswith(f"{path}: stop.timeout: ")


def test_nan_multiplier_is_rejected(tmp_path: Path) -> None:
    """restart.multiplier = nan (valid TOML) is rejected like any multiplier below 1."""
    path = write(tmp_path, "c.toml", "[restart]\nmultiplier = nan\n")
    assert "multiplier" in config_error(path, environ=NO_ENV)


def test_bad_list_item_names_the_file(tmp_path: Path) -> None:
    """A bad item in a list is reported with the file, the indexed key and the value."""
    path = write(tmp_path, "c.toml", '[restart]\nexit_codes = [0, "x"]\n')
    message = config_error(path, environ=NO_ENV)
    assert message.startswith(f"{path}: restart.exit_codes[1]: ")
    assert "'x'" in message


def test_unknown_key_with_newline_is_one_line(tmp_path: Path) -> None:
    """An unknown key containing a newline still gives a one-line message naming the file."""
    path = write(tmp_path, "c.yaml", '"a\\nb": 1\n')
    message = config_error(path, environ=NO_ENV)
    assert message.startswith(f"{path}: ")


def test_embedded_default_tree_matches_its_toml_text() -> None:
    """The default config used at start-up is exactly DEFAULT_CONFIG_TOML, parsed."""
    import tomllib

    from sidecar_runtime._config import DEFAULT_CONFIG_TOML, _default_tree

    assert _default_tree() == tomllib.loads(DEFAULT_CONFIG_TOML)
    assert load_config(None, environ={}) == load_config(
        None, environ={}, defaults=DEFAULT_CONFIG_TOML
    )


class _Endpoint(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    port: int


class _Tables(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    upstreams: dict[str, _Endpoint] = {}
    groups: list[dict[str, _Endpoint]] = []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"upstreams": {"app": {"port": 1}, "db": {"port": 2, "host": "x"}}},
            "config: plugins.p.upstreams.db.host: unknown key",
        ),
        (
            {"upstreams": {"app": {"port": "eighty"}, "db": {"port": 2}}},
            "config: plugins.p.upstreams.app.port: Expected `int`, got `str` (got 'eighty')",
        ),
        (
            {"groups": [{"a": {"port": 1}}, {"b b": {"port": None}}]},
            "config: plugins.p.groups[1]['b b'].port: Expected `int`, got `null`",
        ),
    ],
)
def test_errors_in_a_table_of_tables_name_its_key(data: dict[str, Any], message: str) -> None:
    """msgspec writes a table's key as `[...]`; the error names the entry instead."""
    with pytest.raises(ConfigError) as caught:
        decode_struct(data, _Tables, prefix=".plugins.p")
    assert str(caught.value) == message
