"""The runtime's configuration: strict, frozen structs and the loader that layers its sources.

Precedence, lowest first: the embedded defaults < the config file (TOML or YAML, with ``${VAR}``
interpolation) < ``SIDECAR_*`` environment variables < command-line flags. The merged tree is
decoded once, strictly: an unknown key, a wrong type or a bad value is a :class:`ConfigError` that
names the source, the dotted key path and the value. Plugin tables (``plugins.<name>``) are kept
as plain data here and decoded into each plugin's own ``Config`` by the plugin loader.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from ._errors import ConfigError
from ._types import Duration, Signal, dec_hook, enc_hook

__all__ = [
    "DEFAULT_CONFIG_TOML",
    "AppConfig",
    "Config",
    "LogConfig",
    "OutputConfig",
    "RestartConfig",
    "SignalsConfig",
    "StopConfig",
    "decode_struct",
    "load_config",
]

T = TypeVar("T")

_STRUCT = {"frozen": True, "forbid_unknown_fields": True, "kw_only": True}


class AppConfig(msgspec.Struct, **_STRUCT):
    """``[app]``: what to run."""

    command: list[str] = []
    working_dir: str | None = None
    user: str | None = None
    group: str | None = None
    env: dict[str, str] = {}

    def __post_init__(self) -> None:
        if self.command and self.command[0] == "":
            msg = "the command must not be an empty string"
            raise ValueError(msg)


class RestartConfig(msgspec.Struct, **_STRUCT):
    """``[restart]``: when the app is started again (supervisord's vocabulary)."""

    policy: Literal["never", "on-failure", "always"] = "never"
    exit_codes: list[int] = msgspec.field(default_factory=lambda: [0])
    start_seconds: Duration = Duration(1.0)
    max_restarts: int | Literal["unlimited"] = 5
    delay: Duration = Duration(1.0)
    max_delay: Duration = Duration(30.0)
    multiplier: float = 2.0
    jitter: float = 0.2
    stable_seconds: Duration = Duration(10.0)

    def __post_init__(self) -> None:
        if isinstance(self.max_restarts, int) and self.max_restarts < 0:
            msg = f"max_restarts must be >= 0 or 'unlimited', got {self.max_restarts}"
            raise ValueError(msg)
        if not self.multiplier >= 1 or self.multiplier == float("inf"):
            msg = f"multiplier must be >= 1, got {self.multiplier}"
            raise ValueError(msg)
        if not 0 <= self.jitter <= 1:  # also rejects nan
            msg = f"jitter must be within 0..1, got {self.jitter}"
            raise ValueError(msg)
        if any(not 0 <= c <= 255 for c in self.exit_codes):
            msg = f"exit_codes must be within 0..255, got {self.exit_codes}"
            raise ValueError(msg)


class StopConfig(msgspec.Struct, **_STRUCT):
    """``[stop]``: how the app is stopped, against one deadline."""

    signal: Signal = Signal(15)
    timeout: Duration = Duration(30.0)
    pre_stop_delay: Duration = Duration(0.0)

    def __post_init__(self) -> None:
        if self.pre_stop_delay > self.timeout:
            msg = (
                f"pre_stop_delay ({self.pre_stop_delay:g}s) must not exceed the stop "
                f"timeout ({self.timeout:g}s)"
            )
            raise ValueError(msg)


class SignalsConfig(msgspec.Struct, **_STRUCT):
    """``[signals]``: which process gets forwarded signals, and rewrites (dumb-init style)."""

    forward_to: Literal["group", "child"] = "group"
    rewrite: dict[str, str] = {}
    hup: Literal["auto", "reload", "forward"] = "auto"

    def __post_init__(self) -> None:
        from ._convert import parse_signal

        for source, target in self.rewrite.items():
            src = parse_signal(source)
            if src.name in ("SIGTERM", "SIGKILL", "SIGSTOP", "SIGCHLD"):
                msg = f"{source!r} cannot be rewritten (use stop.signal for SIGTERM)"
                raise ValueError(msg)
            if target.lower() not in ("none", "0"):
                parse_signal(target)

    def rewrite_map(self) -> dict[int, int]:
        """Source signal number → target number; 0 means the signal is dropped."""
        from ._convert import parse_signal

        return {
            int(parse_signal(s)): 0 if t.lower() in ("none", "0") else int(parse_signal(t))
            for s, t in self.rewrite.items()
        }


class OutputConfig(msgspec.Struct, **_STRUCT):
    """``[output]``: how the app's stdout and stderr are carried."""

    mode: Literal["auto", "pipe", "pty", "inherit"] = "auto"
    max_line_bytes: int = 65536
    subscriber_buffer: int = 4096
    drain_timeout: Duration = Duration(2.0)

    def __post_init__(self) -> None:
        if self.max_line_bytes < 64:
            msg = f"max_line_bytes must be >= 64, got {self.max_line_bytes}"
            raise ValueError(msg)
        if self.subscriber_buffer < 1:
            msg = f"subscriber_buffer must be >= 1, got {self.subscriber_buffer}"
            raise ValueError(msg)


class LogConfig(msgspec.Struct, **_STRUCT):
    """``[log]``: the runtime's own logs (never on the app's stdout)."""

    level: Literal["debug", "info", "warning", "error", "critical"] = "warning"
    format: Literal["auto", "json", "console"] = "auto"
    file: str | None = None


class Config(msgspec.Struct, **_STRUCT):
    """The whole runtime configuration."""

    app: AppConfig = AppConfig()
    restart: RestartConfig = RestartConfig()
    stop: StopConfig = StopConfig()
    signals: SignalsConfig = SignalsConfig()
    output: OutputConfig = OutputConfig()
    log: LogConfig = LogConfig()
    subreaper: bool = True
    notify: bool = True
    plugins: dict[str, dict[str, Any]] = {}

    def to_builtins(self) -> dict[str, Any]:
        """Plain data, durations and signals as a person writes them (for ``check``)."""
        data = msgspec.to_builtins(self, enc_hook=enc_hook)
        assert isinstance(data, dict)
        return data


#: The embedded default: output passthrough, the admin listener on 127.0.0.1:9901, /metrics and
#: the health endpoints (readiness = the app is RUNNING until probes are configured).
DEFAULT_CONFIG_TOML = """
[plugins.admin]

[plugins.metrics]

[plugins.health]
"""


def _default_tree() -> dict[str, Any]:
    """:data:`DEFAULT_CONFIG_TOML` as data (a test keeps the two equal)."""
    return {"plugins": {"admin": {}, "metrics": {}, "health": {}}}


def _toml(text: str) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(text)


_ENV_PREFIX = "SIDECAR_"
_ENV_IGNORED = {"SIDECAR_CONFIG"}
_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def _interpolate(value: Any, environ: Mapping[str, str], path: str, source: str) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string; ``$$`` is a literal ``$``."""
    if isinstance(value, str):

        def repl(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if name in environ and (environ[name] or default is None):
                return environ[name]
            if default is not None:
                return default
            msg = f"{source}: {path}: environment variable ${{{name}}} is not set"
            raise ConfigError(msg + " (give a default with ${" + name + ":-value})")

        return _VAR_RE.sub(repl, value)
    if isinstance(value, dict):
        return {
            k: _interpolate(v, environ, f"{path}.{k}" if path else str(k), source)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_interpolate(v, environ, f"{path}[{i}]", source) for i, v in enumerate(value)]
    return value


def _parse_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        msg = f"{path}: config file not found"
        raise ConfigError(msg) from None
    except (OSError, UnicodeDecodeError) as err:
        msg = f"{path}: cannot read config file: {err}"
        raise ConfigError(msg) from None
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            data: Any = _toml(text)
        except ValueError as err:  # tomllib.TOMLDecodeError
            msg = f"{path}: invalid TOML: {err}"
            raise ConfigError(msg) from None
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            msg = f"{path}: invalid YAML: " + " ".join(str(err).split())
            raise ConfigError(msg) from None
        if data is None:
            data = {}
    else:
        msg = f"{path}: unknown config file type {suffix!r}: use .toml, .yaml or .yml"
        raise ConfigError(msg)
    if not isinstance(data, dict):
        msg = f"{path}: the top level must be a table of keys, got {type(data).__name__}"
        raise ConfigError(msg)
    return data


def _env_value(text: str) -> Any:
    """Read an environment value as a TOML value when it is one (``3``, ``true``, ``["a"]``)."""
    try:
        return _toml(f"v = {text}")["v"]
    except ValueError:  # tomllib.TOMLDecodeError
        return text


def _env_overrides(environ: Mapping[str, str]) -> dict[str, tuple[list[str], Any]]:
    """Map ``SIDECAR_RESTART__POLICY=always`` to ``(["restart", "policy"], "always")``."""
    found: dict[str, tuple[list[str], Any]] = {}
    for name, text in environ.items():
        if not name.startswith(_ENV_PREFIX) or name in _ENV_IGNORED:
            continue
        raw = name[len(_ENV_PREFIX) :].split("__")
        parts = [p.lower() for p in raw]
        keep_text = parts[:2] == ["app", "env"]
        if keep_text:  # the app's own variables: names keep their case, values stay text
            parts[2:] = raw[2:]
        if not all(parts):
            msg = (
                f"environment variable {name}: "
                "use SIDECAR_SECTION__KEY, e.g. SIDECAR_RESTART__POLICY"
            )
            raise ConfigError(msg)
        found[name] = (parts, text if keep_text else _env_value(text))
    return found


def _set_path(tree: dict[str, Any], parts: list[str], value: Any, origin: str, where: str) -> None:
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            msg = f"{origin}: {'.'.join(parts)}: {part!r} is not a table in {where}"
            raise ConfigError(msg)
        node = child
    node[parts[-1]] = value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _record_origins(tree: Any, prefix: str, origin: str, origins: dict[str, str]) -> None:
    if isinstance(tree, dict) and tree:
        for key, value in tree.items():
            _record_origins(value, f"{prefix}.{key}" if prefix else str(key), origin, origins)
    else:
        origins[prefix] = origin


def _lookup(tree: Any, path: str) -> tuple[bool, Any]:
    node = tree
    for part in re.findall(r"[^.\[\]]+", path):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _name_table_key(data: Any, type_: type[Any], where: str, text: str) -> str:
    """msgspec writes the key of a table of tables as ``[...]`` (``outputs[...].label``): find
    it by decoding the config with that table cut down to one entry at a time."""
    head, sep, tail = where.partition("[...]")
    if not sep:
        return where
    found, table = _lookup(data, head.lstrip("."))
    if not found or not isinstance(table, dict):
        return where
    for name, value in table.items():
        trial = _replaced(data, head.lstrip("."), {name: value})
        try:
            msgspec.convert(trial, type_, dec_hook=dec_hook, strict=True)
        except msgspec.ValidationError as err:
            if str(err) == text:
                part = f".{name}" if re.fullmatch(r"[A-Za-z0-9_-]+", str(name)) else f"[{name!r}]"
                return head + part + tail
    return where


def _replaced(tree: Any, path: str, value: Any) -> Any:
    """A copy of ``tree`` with the node at ``path`` (dotted, ``[i]`` for lists) replaced."""
    parts = re.findall(r"[^.\[\]]+", path)
    if not parts:
        return value
    first, rest = parts[0], ".".join(parts[1:])
    if isinstance(tree, dict):
        return {**tree, first: _replaced(tree[first], rest, value)}
    index = int(first)
    return [*tree[:index], _replaced(tree[index], rest, value), *tree[index + 1 :]]


def _precedence(origin: str) -> int:
    if origin == "command line":
        return 3
    if origin.startswith("environment variable"):
        return 2
    return 0 if origin == "defaults" else 1


def _origin_of(path: str, origins: Mapping[str, str]) -> str:
    """Where the value at ``path`` (or below it) came from: the highest layer that set it."""
    path = re.sub(r"\[\d+\]", "", path)
    probe = path
    while True:
        found = [o for p, o in origins.items() if p == probe or p.startswith(probe + ".")]
        if probe == "" and not found:
            return "config"
        if found:
            return max(found, key=_precedence)
        probe = probe.rpartition(".")[0]


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def decode_struct(
    data: Any, type_: type[T], *, prefix: str = "", origins: Mapping[str, str] | None = None
) -> T:
    """Decode plain data strictly into ``type_``; errors name the source, key path and value."""
    try:
        return msgspec.convert(data, type_, dec_hook=dec_hook, strict=True)
    except msgspec.ValidationError as err:
        text = str(err)
        detail, _, where = text.rpartition(" - at `$")
        if not _:
            detail, where = text, ""
        where = _name_table_key(data, type_, where.rstrip("`"), text)
        key = (prefix + where).lstrip(".")
        extra = ""
        unknown = re.fullmatch(r"Object contains unknown field `(.*)`", detail, re.DOTALL)
        if unknown:
            key = f"{key}.{unknown.group(1)}".lstrip(".")
            detail = "unknown key"
        else:
            found, value = _lookup(data, where.lstrip("."))
            if found and not isinstance(value, dict | list) and repr(value) not in detail:
                extra = f" (got {value!r})"
        source = _origin_of(key, origins or {})
        key_text = f"{key}: " if key else ""
        msg = f"{source}: {key_text}{detail}{extra}"
        raise ConfigError(_one_line(msg)) from None


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    defaults: str | None = None,
    origins: dict[str, str] | None = None,
) -> Config:
    """Layer defaults < file < ``SIDECAR_*`` environment < ``overrides`` and decode strictly.

    ``overrides`` maps dotted keys to values (``{"restart.policy": "always"}``), as the CLI
    produces them. ``path`` defaults to ``$SIDECAR_CONFIG`` when that is set. ``origins``, if
    given, is filled with where each key came from (for plugin config errors).
    """
    env = os.environ if environ is None else environ
    origins = {} if origins is None else origins
    # The embedded default as data: parsing its TOML text would import tomllib on every start.
    tree: dict[str, Any] = _default_tree() if defaults is None else _toml(defaults)
    _record_origins(tree, "", "defaults", origins)
    if path is None and env.get("SIDECAR_CONFIG"):
        path = env["SIDECAR_CONFIG"]
    if path is not None:
        file_path = Path(path)
        data = _interpolate(_parse_file(file_path), env, "", str(file_path))
        _record_origins(data, "", str(file_path), origins)
        tree = _merge(tree, data)
    for name, (parts, value) in sorted(_env_overrides(env).items()):
        _set_path(tree, parts, value, name, "the config")
        origins[".".join(parts)] = f"environment variable {name}"
    for dotted, value in (overrides or {}).items():
        parts = dotted.split(".")
        _set_path(tree, parts, value, "command line", "the config")
        origins[dotted] = "command line"
    return decode_struct(tree, Config, origins=origins)
