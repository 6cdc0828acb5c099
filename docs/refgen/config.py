"""``config.md``: every config key with its type, default, environment variable and prose."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

from sidecar_runtime import _plugins
from sidecar_runtime._config import DEFAULT_CONFIG_TOML, Config
from sidecar_runtime._types import Duration, Signal, enc_hook

from .markdown import page, table
from .plugins import builtin_plugins
from .prose import KEY_DOCS, check_prose, plugin_docs

_KEY_HEADER = ["Key", "Type", "Default", "Environment", "Description"]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(f'`"{a}"`' for a in args)
    if origin is typing.Union or isinstance(tp, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        if type(None) in args:
            names.append("unset")
        return " | ".join(names)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        if typing.get_origin(args[1]) is dict:
            return "table of tables"
        return f"table of {_type_name(args[1])}"
    simple: dict[Any, str] = {
        str: "string",
        int: "integer",
        float: "number",
        bool: "boolean",
        Duration: "duration",
        Signal: "signal",
        Any: "any",
    }
    if tp in simple:
        return simple[tp]
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return "table"
    return str(getattr(tp, "__name__", tp))


def literal(value: Any) -> str:
    """A default as it is written in TOML."""
    value = msgspec.to_builtins(value, enc_hook=enc_hook)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{}"
            if not value
            else "{ "
            + ", ".join(f"{k} = {literal(v)}" for k, v in value.items() if v is not None)
            + " }"
        )
    return str(value)


def _env_name(key: str) -> str:
    return "SIDECAR_" + "__".join(key.split(".")).upper()


def _fields(struct: type[msgspec.Struct]) -> Iterator[tuple[str, Any, Any]]:
    """(name, annotation, default) of every field, in declaration order.

    Defaults come from the field definitions, not from ``struct()``: a plugin's config may
    refuse its own defaults (the templates plugin needs at least one template)."""
    hints = typing.get_type_hints(struct)
    for field in msgspec.structs.fields(struct):
        if field.default_factory is not msgspec.NODEFAULT:
            default = field.default_factory()
        else:
            default = None if field.default is msgspec.NODEFAULT else field.default
        yield field.name, hints[field.name], default


def _doc(struct: type) -> str:
    """A struct's first docstring line, without its ``[section]:`` prefix."""
    line = (struct.__doc__ or "").strip().splitlines()[0]
    if line.startswith("``[") and ": " in line:
        line = line.split(": ", 1)[1]
        line = line[:1].upper() + line[1:]
    return line


def _key_rows(
    prefix: str,
    struct: type[msgspec.Struct],
    found: list[str],
    docs: Mapping[str, str] | None = None,
) -> list[list[str]]:
    docs = KEY_DOCS if docs is None else docs
    rows = []
    for name, tp, default in _fields(struct):
        key = f"{prefix}{name}"
        found.append(key)
        env = f"`{_env_name(key)}`" if "<" not in key else "-"
        rows.append([f"`{name}`", _type_name(tp), f"`{literal(default)}`", env, docs.get(key, "")])
    return rows


def _defaults_file(builtin: Mapping[str, type[msgspec.Struct]]) -> str:
    """Every key with its default, as a TOML file (unset keys commented out)."""
    lines: list[str] = []
    top: list[str] = []
    for name, tp, default in _fields(Config):
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            lines.append(f"\n[{name}]")
            for sub, _, value in _fields(tp):
                lines.append(_toml_line(sub, value))
        elif name != "plugins":
            top.append(_toml_line(name, default))
    for plugin, struct in builtin.items():
        lines.append(f"\n[plugins.{plugin}]")
        lines.append("enabled = true")
        lines.append("critical = false")
        for sub, _, value in _fields(struct):
            lines.append(_toml_line(sub, value))
    return "\n".join(top + lines).strip() + "\n"


def _toml_line(name: str, value: Any) -> str:
    text = literal(value)
    return f"# {name} = (unset)" if text == "unset" else f"{name} = {text}"


def render_config() -> str:
    found: list[str] = []
    sections = []
    top_rows = []
    for name, tp, default in _fields(Config):
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            rows = _key_rows(f"{name}.", tp, found)
            sections.append(f"## `[{name}]`\n\n{_doc(tp)}\n\n" + table(_KEY_HEADER, rows))
        else:
            found.append(name)
            env = f"`{_env_name(name)}`" if name != "plugins" else "-"
            top_rows.append(
                [f"`{name}`", _type_name(tp), f"`{literal(default)}`", env, KEY_DOCS.get(name, "")]
            )
    assert _plugins._RESERVED == ("enabled", "critical"), "update plugins.<name> rows"
    reserved = []
    for key in _plugins._RESERVED:
        found.append(f"plugins.<name>.{key}")
        default = "true" if key == "enabled" else "false"
        reserved.append(
            [f"`{key}`", "boolean", f"`{default}`", "-", KEY_DOCS.get(f"plugins.<name>.{key}", "")]
        )
    plugin_parts = [
        "## `[plugins.<name>]`\n\n"
        f"Every plugin table has these reserved keys; the rest of the table is decoded strictly "
        f"into the plugin's own `Config` struct. Plugins are found through the entry-point group "
        f"`{_plugins.ENTRY_POINT_GROUP}`; installing one never enables it.\n\n"
        + table(_KEY_HEADER, reserved)
    ]
    builtin = builtin_plugins()
    configs = {name: cls.Config for name, cls in builtin.items()}
    key_docs = {**KEY_DOCS, **plugin_docs("CONFIG_DOCS", "plugins.{name}.")}
    for name, struct in configs.items():
        rows = _key_rows(f"plugins.{name}.", struct, found, key_docs)
        doc = (builtin[name].__doc__ or "").strip().splitlines()[0]
        plugin_parts.append(f"## `[plugins.{name}]`\n\n{doc}\n\n" + table(_KEY_HEADER, rows))
    check_prose("config keys", "KEY_DOCS (or a plugin's CONFIG_DOCS)", key_docs, found)
    return page(
        "Configuration",
        (
            "One file, TOML (`.toml`) or YAML (`.yaml`, `.yml`), given with `--config FILE` or "
            "`$SIDECAR_CONFIG`. Layers, lowest first: the embedded defaults < the file < "
            "`SIDECAR_*` environment variables < command-line flags. The merged result is decoded "
            "strictly: an unknown key, a wrong type or a bad value is one line on stderr naming "
            "the source and the key, and exit 2 before anything starts. "
            "`sidecar-run check --config FILE` prints the resolved config as JSON."
        ),
        "## Values",
        (
            '- **duration**: `"500ms"`, `"10s"`, `"1m30s"`, `"2h"`, or a number of '
            "seconds.\n"
            '- **signal**: `"TERM"`, `"SIGTERM"`, `"term"` or a number.\n'
            "- **`${VAR}`** in any string of the file is replaced by the environment variable "
            "`VAR` (an error if it is unset); `${VAR:-default}` gives a default; `$$` is a "
            "literal `$`.\n"
            "- **Environment**: `SIDECAR_<SECTION>__<KEY>` sets a key, e.g. "
            "`SIDECAR_RESTART__POLICY=always`, `SIDECAR_PLUGINS__ADMIN__LISTEN=0.0.0.0:9901`. "
            "The value is read as a TOML value when it is one (`5`, `true`, `[0, 3]`), else as "
            "a string. Every variable that starts with `SIDECAR_` (except `SIDECAR_CONFIG`) "
            "must name a key."
        ),
        "## Top level",
        table(_KEY_HEADER, top_rows),
        *sections,
        *plugin_parts,
        "## The embedded default",
        (
            "Merged under every file; it enables the built-in plugins:\n\n"
            f"```toml\n{DEFAULT_CONFIG_TOML.strip()}\n```"
        ),
        "## Every key with its default",
        # Not a config to run: some plugins (proxy, logs) need keys that have no default.
        "<!-- snippet: skip (every default at once; proxy and logs need keys without one) -->\n"
        f"```toml\n{_defaults_file(configs)}```",
    )
