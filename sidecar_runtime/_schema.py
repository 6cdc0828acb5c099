"""The JSON Schema (draft 2020-12) of the whole config: the core and every installed plugin.

Built from the same msgspec structs the loader decodes into (through ``msgspec.inspect``), so
it cannot drift from them: unknown keys are rejected wherever the structs reject them, defaults
are shown as a person writes them, and durations and signals accept their text forms
(``"10s"``, ``"TERM"``) and ``${VAR}`` references. Checks that only code can make (a probe needs
exactly one target, ``pre_stop_delay`` within ``timeout``) remain ``sidecar-run check``'s.
"""

from __future__ import annotations

import inspect
import signal
from collections.abc import Mapping
from typing import Any

import msgspec
import msgspec.inspect as mi

from ._config import Config
from ._types import Duration, Signal, enc_hook

__all__ = [
    "DIALECT",
    "config_schema",
    "duration_schema",
    "installed_plugin_configs",
    "signal_schema",
]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
#: What :func:`parse_duration` reads: a number (``1.5``, ``1e3``) or ``1m30s``-style parts.
DURATION_PATTERN = rf"^\s*(?:\+?{_NUMBER}(?:[eE][+-]?[0-9]+)?|(?:{_NUMBER}(?:ms|us|s|m|h))+)\s*$"
#: A string that still holds a ``${VAR}`` reference: its value is known only at load time.
INTERPOLATED = {
    "type": "string",
    "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-[^}]*)?\}",
    "description": "An environment reference, checked when the config is loaded.",
}
_SKIP = object()


def duration_schema() -> dict[str, Any]:
    """A duration: seconds as a number, or text like ``10s``, ``500ms``, ``1m30s``."""
    return {
        "description": "A duration: '10s', '500ms', '1m30s', '2h' or a number of seconds.",
        "anyOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": DURATION_PATTERN, "examples": ["10s", "500ms", "1m30s"]},
            INTERPOLATED,
        ],
    }


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


def signal_schema() -> dict[str, Any]:
    """A signal: a name in any case, with or without ``SIG``, or its number."""
    names = sorted({n.removeprefix("SIG") for n in signal.Signals.__members__}, key=len)
    numbers = sorted({int(s) for s in signal.Signals})
    alternatives = "|".join(_any_case(n) for n in reversed(names))
    sig = _any_case("SIG")
    digits = "|".join(str(n) for n in sorted(numbers, reverse=True))
    return {
        "description": "A signal: a name like 'TERM' or 'SIGTERM' (any case) or its number.",
        "anyOf": [
            {"type": "integer", "enum": numbers},
            {"type": "string", "enum": sorted(names) + sorted(f"SIG{n}" for n in names)},
            {
                "type": "string",
                "pattern": rf"^\s*(?:(?:{sig})?(?:{alternatives})|{digits})\s*$",
            },
            INTERPOLATED,
        ],
    }


def _first_paragraph(doc: str | None) -> str | None:
    text = inspect.cleandoc(doc or "").split("\n\n")[0]
    return " ".join(text.split()) or None


class _Builder:
    """Turns ``msgspec.inspect`` types into schemas; structs go to ``$defs`` once each."""

    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}
        self.prefix = ""  # of the $defs names: the plugin being described
        self._names: dict[tuple[type, str], str] = {}

    def struct(self, t: mi.StructType, *, docs: Mapping[str, str] | None = None) -> dict[str, Any]:
        """An inline object schema for one struct."""
        properties: dict[str, Any] = {}
        required = []
        if t.tag_field is not None:
            properties[t.tag_field] = {"const": t.tag}
            required.append(t.tag_field)
        for field in t.fields:
            schema = self.type(field.type)
            if docs and field.name in docs:
                schema = {**schema, "description": docs[field.name]}
            default = self._default(field)
            if default is not _SKIP:
                schema = {**schema, "default": default}
            properties[field.encode_name] = schema
            if field.required:
                required.append(field.encode_name)
        out: dict[str, Any] = {"type": "object"}
        description = _first_paragraph(t.cls.__doc__)
        if description:
            out["description"] = description
        out["properties"] = properties
        if required:
            out["required"] = required
        if t.forbid_unknown_fields:
            out["additionalProperties"] = False
        return out

    def ref(self, t: mi.StructType, prefix: str) -> dict[str, Any]:
        key = (t.cls, prefix)
        if key not in self._names:
            name = f"{prefix}{t.cls.__name__}"
            while name in self.defs:
                name += "_"
            self._names[key] = name
            self.defs[name] = {}  # reserved: a struct may refer to itself
            self.defs[name] = self.struct(t)
        return {"$ref": f"#/$defs/{self._names[key]}"}

    @staticmethod
    def _default(field: mi.Field) -> Any:
        if isinstance(field.type, mi.StructType):
            return _SKIP  # each key of the table shows its own default
        if field.default is not msgspec.NODEFAULT:
            value = field.default
        elif field.default_factory is not msgspec.NODEFAULT:
            value = field.default_factory()
        else:
            return _SKIP
        try:
            return msgspec.to_builtins(value, enc_hook=enc_hook, str_keys=True)
        except (TypeError, NotImplementedError):
            return _SKIP

    def type(self, t: mi.Type) -> dict[str, Any]:
        """The schema of one msgspec type."""
        if isinstance(t, mi.Metadata):
            return {**self.type(t.type), **(t.extra_json_schema or {})}
        if isinstance(t, mi.StructType):
            return self.ref(t, self.prefix)
        if isinstance(t, mi.CustomType):
            if issubclass(t.cls, Duration):
                return duration_schema()
            if issubclass(t.cls, Signal):
                return signal_schema()
            return {}
        if isinstance(t, mi.UnionType):
            return {"anyOf": [self.type(x) for x in t.types]}
        if isinstance(t, mi.LiteralType):
            return {"enum": list(t.values)}
        if isinstance(t, mi.EnumType):
            return {"enum": [m.value for m in t.cls]}
        if isinstance(t, mi.ListType | mi.VarTupleType | mi.SetType | mi.FrozenSetType):
            out: dict[str, Any] = {"type": "array", "items": self.type(t.item_type)}
            if isinstance(t, mi.SetType | mi.FrozenSetType):
                out["uniqueItems"] = True
            return _bounds(out, t, "minItems", "maxItems")
        if isinstance(t, mi.TupleType):
            items = [self.type(x) for x in t.item_types]
            n = len(items)
            return {"type": "array", "prefixItems": items, "minItems": n, "maxItems": n}
        if isinstance(t, mi.DictType):
            out = {"type": "object", "additionalProperties": self.type(t.value_type)}
            keys = self.type(t.key_type)
            if keys.get("type") == "string" and len(keys) > 1:
                out["propertyNames"] = keys
            return _bounds(out, t, "minProperties", "maxProperties")
        return _scalar(t)


def _bounds(out: dict[str, Any], t: Any, low: str, high: str) -> dict[str, Any]:
    if t.min_length is not None:
        out[low] = t.min_length
    if t.max_length is not None:
        out[high] = t.max_length
    return out


def _scalar(t: mi.Type) -> dict[str, Any]:
    if isinstance(t, mi.BoolType):
        return {"type": "boolean"}
    if isinstance(t, mi.NoneType):
        return {"type": "null"}
    if isinstance(t, mi.IntType | mi.FloatType):
        out: dict[str, Any] = {"type": "integer" if isinstance(t, mi.IntType) else "number"}
        for attr, key in (
            ("ge", "minimum"),
            ("gt", "exclusiveMinimum"),
            ("le", "maximum"),
            ("lt", "exclusiveMaximum"),
            ("multiple_of", "multipleOf"),
        ):
            if getattr(t, attr) is not None:
                out[key] = getattr(t, attr)
        return out
    if isinstance(t, mi.StrType):
        out = {"type": "string"}
        if t.pattern is not None:
            out["pattern"] = t.pattern
        return _bounds(out, t, "minLength", "maxLength")
    return {}  # any other value: the loader decides


def installed_plugin_configs() -> tuple[dict[str, tuple[type[Any], Any]], list[str]]:
    """Installed plugins as ``name → (Config type, the plugin class)``, and load errors."""
    from ._plugins import describe_error, discover

    found: dict[str, tuple[type[Any], Any]] = {}
    errors = []
    for name, ep in sorted(discover().items()):
        try:
            cls = ep.load()
        except Exception as err:  # a broken plugin costs its schema, never the command
            errors.append(f"plugin {name!r} ({ep.value}) cannot be loaded: {describe_error(err)}")
            continue
        config_type = getattr(cls, "Config", None)
        if not isinstance(config_type, type) or not issubclass(config_type, msgspec.Struct):
            errors.append(f"plugin {name!r} ({ep.value}) has no msgspec Config struct")
            continue
        found[name] = (config_type, cls)
    return found, errors


_RESERVED = {
    "enabled": {
        "type": "boolean",
        "default": True,
        "description": "Run this plugin (a table enables an installed plugin).",
    },
    "critical": {
        "type": "boolean",
        "default": False,
        "description": "A failure of this plugin stops the runtime (exit 70).",
    },
}


def config_schema(plugins: Mapping[str, tuple[type[Any], Any]] | None = None) -> dict[str, Any]:
    """The schema of a config file, with a ``plugins.<name>`` table for each of ``plugins``."""
    if plugins is None:
        plugins = installed_plugin_configs()[0]
    builder = _Builder()
    info = mi.type_info(Config)
    assert isinstance(info, mi.StructType)
    core = builder.struct(info)
    tables: dict[str, Any] = {}
    for name, (config_type, cls) in sorted(plugins.items()):
        builder.prefix = f"{name}."
        info = mi.type_info(config_type)
        assert isinstance(info, mi.StructType)
        table = builder.struct(info, docs=getattr(cls, "CONFIG_DOCS", None))
        table["description"] = _first_paragraph(cls.__doc__) or f"The {name} plugin."
        table["properties"] = {**_RESERVED, **table["properties"]}
        tables[name] = table
    core["properties"]["plugins"] = {
        "type": "object",
        "description": "Plugin tables: [plugins.<name>] enables an installed plugin.",
        "properties": tables,
        "additionalProperties": {
            "description": "A plugin that is not installed can only be disabled here.",
            "type": "object",
            "properties": {"enabled": {"const": False}},
            "required": ["enabled"],
        },
    }
    return {
        "$schema": DIALECT,
        "title": "sidecar-run configuration",
        **core,
        "$defs": dict(sorted(builder.defs.items())),
    }
