"""``events.md``: every log event of the runtime and the built-in plugins, found in their source."""

from __future__ import annotations

import ast

from .markdown import ROOT, page, table
from .prose import EVENT_DOCS, check_prose, plugin_docs

PACKAGES = (ROOT / "sidecar_runtime", ROOT / "plugins" / "sidecar_plugins")
_LEVELS = ("debug", "info", "warning", "error", "critical")


def _receiver_is_logger(node: ast.expr) -> bool:
    name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")
    return "log" in name


def _events() -> dict[str, tuple[str, list[str], str]]:
    """event name -> (level, fields, module) for every runtime and built-in plugin log call."""
    found: dict[str, tuple[str, list[str], str]] = {}
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                first = node.args[0]
                if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                    continue
                func = node.func
                if isinstance(func, ast.Attribute) and func.attr in _LEVELS:
                    if not _receiver_is_logger(func.value):
                        continue
                    level = func.attr
                elif (
                    isinstance(func, ast.Call)
                    and isinstance(func.func, ast.Name)
                    and func.func.id == "getattr"
                    and func.args
                    and _receiver_is_logger(func.args[0])
                ):
                    level = "varies"
                else:
                    continue
                fields = []
                for kw in node.keywords:
                    if kw.arg is None:
                        fields.append("...")
                    elif kw.arg == "exc_info":
                        fields.append("exception")
                    else:
                        fields.append(kw.arg)
                module = str(path.relative_to(ROOT))
                event = first.value
                if event in found and found[event][0] != level:
                    level = "varies"
                found[event] = (level, fields, module)
    return dict(sorted(found.items()))


def render_events() -> str:
    events = _events()
    event_docs = {**EVENT_DOCS, **plugin_docs("EVENT_DOCS")}
    check_prose("log events", "EVENT_DOCS (or a plugin's EVENT_DOCS)", event_docs, list(events))
    rows = [
        [
            f"`{name}`",
            level,
            ", ".join(f"`{f}`" for f in fields) or "-",
            event_docs[name],
            f"`{module}`",
        ]
        for name, (level, fields, module) in events.items()
    ]
    return page(
        "Log events",
        (
            "sidecar-run's own logs go to stderr (or `log.file`), never to stdout, which belongs "
            "to the app. Each line is one event: JSON when the stream is not a terminal, a "
            "console line when it is (`log.format`). Every event has `event`, `level` and "
            "`timestamp` (ISO 8601, UTC); events of a plugin also carry `plugin`. The default "
            "level is `warning`, so a healthy run logs nothing; `--log-level info` shows the "
            "lifecycle."
        ),
        table(["Event", "Level", "Fields", "Meaning", "Source"], rows),
        (
            "`exception` is the traceback, as a structured list in JSON. `...` marks fields that "
            "vary: `app_exited` has `code` or `signal`."
        ),
    )
