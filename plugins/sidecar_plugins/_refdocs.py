"""Reference tables for the built-in plugins' docs pages, generated from their config structs.

Not a plugin (plugins never import each other): each plugin's ``_docs`` module renders its
``docs/reference/<name>.md`` with these helpers, so every page names types and defaults the same
way and a key without prose is an error when the page is generated, never a silent gap.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Mapping
from typing import Any

import msgspec

from sidecar_runtime import format_duration

__all__ = ["default_text", "key_table", "metric_table", "type_name"]


def type_name(tp: Any) -> str:
    """A config field's type in words: ``list of string``, ``duration``, ``"a" | "b"``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f'`"{a}"`' for a in args)
    if isinstance(tp, types.UnionType) or origin is typing.Union:
        names = [type_name(a) for a in args if a is not type(None)]
        return " \\| ".join([*names, "unset"] if type(None) in args else names)
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"table of {type_name(args[1])}" if args else "table"
    simple: dict[Any, str] = {
        str: "string",
        int: "integer",
        bool: "boolean",
        float: "number",
        Any: "any",
    }
    if tp in simple:
        return simple[tp]
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return "table"
    name = getattr(tp, "__name__", str(tp))
    return {"Duration": "duration", "Signal": "signal"}.get(name, name)


def default_text(field: msgspec.structs.FieldInfo) -> str:
    """A field's default as the config would write it (``required`` when it has none)."""
    if field.required:
        return "required"
    value = (
        field.default_factory() if field.default_factory is not msgspec.NODEFAULT else field.default
    )
    if value is None:
        return "unset"
    if isinstance(value, msgspec.Struct):
        return "(table)"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float) and type(value).__name__ == "Duration":
        return f'`"{format_duration(value)}"`'
    if isinstance(value, str):
        return f'`"{value}"`' if len(value) <= 40 else "(see text)"
    return f"`{json.dumps(msgspec.to_builtins(value))}`"


def key_table(
    struct: type[Any],
    docs: Mapping[str, str] | None = None,
    *,
    where: str = "",
    skip: tuple[str, ...] = (),
) -> str:
    """Every key of ``struct`` (but ``skip``) with its type and default, and its prose from
    ``docs`` (then a key without prose, or prose for no key, is a ``ValueError`` naming
    ``where``)."""
    fields = [f for f in msgspec.structs.fields(struct) if f.name not in skip]
    if docs is not None:
        names = [f.name for f in fields]
        missing = [n for n in names if n not in docs]
        stale = [k for k in docs if k not in names]
        if missing or stale:
            msg = f"{where or struct.__name__}: prose missing for {missing}, stale for {stale}"
            raise ValueError(msg)
    hints = typing.get_type_hints(struct, include_extras=True)
    rows = ["| Key | Type | Default |" + (" Description |" if docs is not None else "")]
    rows.append("|---|---|---|" + ("---|" if docs is not None else ""))
    for field in fields:
        row = f"| `{field.encode_name}` | {type_name(hints[field.name])} | {default_text(field)} |"
        if docs is not None:
            prose = docs[field.name].replace("|", "\\|")
            row += f" {prose} |"
        rows.append(row)
    return "\n".join(rows)


def metric_table(metric_docs: Mapping[str, tuple[str, str, str]]) -> str:
    """``name → (type, labels, help)`` as a Markdown table."""
    rows = ["| Metric | Type | Labels | Meaning |", "|---|---|---|---|"]
    for name, (kind, labels, text) in metric_docs.items():
        label_text = ", ".join(f"`{x}`" for x in labels.split(", ")) if labels != "-" else "-"
        rows.append(f"| `{name}` | {kind} | {label_text} | {text} |")
    return "\n".join(rows)
