"""``endpoints.md``: the admin routes and the ``/status`` fields, probed from running plugins."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import anyio

from sidecar_runtime.testing import plugin_harness, python_app

from .markdown import page, table
from .plugins import builtin_plugins
from .prose import STATUS_DOCS, check_prose

#: Built-in plugins are run once (in the test harness) to collect their routes.
_PLUGIN_DOC_CONFIG: dict[str, dict[str, Any]] = {"admin": {"listen": "127.0.0.1:0"}}


def _scratch_config(name: str, scratch: str) -> dict[str, Any]:
    """Config for plugins that need some: the templates plugin renders an empty template, the
    logs plugin writes to a file, the proxy listens on a free port."""
    if name == "logs":
        return {"log_output": [f"file:{scratch}/logs.jsonl"], "state_dir": scratch}
    if name == "proxy":
        return {
            "listeners": [{"address": "127.0.0.1:0"}],
            "upstreams": {"app": {"endpoints": ["127.0.0.1:9"]}},
        }
    if name != "templates":
        return {}
    source = os.path.join(scratch, "empty.tmpl")
    with open(source, "w", encoding="utf-8"):
        pass
    return {"templates": [{"source": source, "target": os.path.join(scratch, "empty.out")}]}


def _json_keys(data: Any, prefix: str, plugin_names: set[str]) -> list[str]:
    keys: list[str] = []
    if not isinstance(data, dict):
        return keys
    for key, value in data.items():
        if prefix == "plugins." and key in plugin_names:
            key = "<name>"
        path = f"{prefix}{key}"
        if path not in keys:
            keys.append(path)
        if isinstance(value, dict) and not path.endswith(".info"):
            keys += [k for k in _json_keys(value, path + ".", plugin_names) if k not in keys]
    return keys


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if (doc or "").strip() else ""


async def _probe_routes() -> tuple[list[list[str]], list[str]]:
    """Run each built-in plugin beside a real app; collect the routes and the /status keys."""
    import json

    from sidecar_runtime._logging import configure_logging

    configure_logging("critical")

    rows: list[list[str]] = []
    status_keys: list[str] = []
    app = python_app("import sys, time\ntime.sleep(0.3)\nsys.exit(3)")
    scratch = tempfile.TemporaryDirectory(prefix="sidecar-docs-")
    for name, cls in builtin_plugins().items():
        config = _PLUGIN_DOC_CONFIG.get(name) or _scratch_config(name, scratch.name)
        async with plugin_harness(cls, config, name=name, app=app) as harness:
            await harness.start_app()
            with anyio.fail_after(20):
                await harness.runtime.supervisor.finished.wait()
            for route in harness.runtime.routes.routes():
                row = [
                    f"`{route.method}`",
                    f"`{route.path}`",
                    route.owner,
                    "yes" if route.mutating else "no",
                    _first_line(route.handler.__doc__).removeprefix(
                        f"{route.method} {route.path}: "
                    ),
                ]
                if row not in rows:
                    rows.append(row)
            reply = await harness.request("GET", "/status")
            assert isinstance(reply.body, bytes)
            for key in _json_keys(json.loads(reply.body), "", {name}):
                if key not in status_keys:
                    status_keys.append(key)
    scratch.cleanup()
    return rows, status_keys


def render_endpoints() -> str:
    rows, status_keys = anyio.run(_probe_routes, backend="asyncio")
    check_prose("/status fields", "STATUS_DOCS", STATUS_DOCS, status_keys)
    fields = [[f"`{k}`", STATUS_DOCS[k][0], STATUS_DOCS[k][1]] for k in STATUS_DOCS]
    return page(
        "Endpoints",
        (
            "The admin listener (the `admin` plugin, on by default at `127.0.0.1:9901`; see "
            "`plugins.admin.listen` and `--admin`) serves every route that the core and the "
            "plugins mount. `/livez`, `/readyz` and `/healthz` are the health plugin's: see "
            "[health](health.md#endpoints) for their replies."
        ),
        "## Routes",
        table(["Method", "Path", "Mounted by", "Mutating", "What it does"], rows),
        (
            "- A `GET` route also answers `HEAD`.\n"
            "- An unknown path is `404`; a known path with another method is `405` with `Allow`.\n"
            "- Mutating routes are `POST` only and answer `403` to clients that are not on "
            "loopback or the unix socket, unless they send `Authorization: Bearer <token>` "
            "matching `plugins.admin.token`.\n"
            "- A handler that raises is `500` and is logged as `route_failed`."
        ),
        "## `GET /status`",
        (
            "The app's state as JSON (`Content-Type: application/json`, keys sorted). "
            "`sidecar-run status` prints it for a person; `sidecar-run status --json` prints it "
            "as is."
        ),
        table(["Field", "Type", "Meaning"], fields),
    )
