"""The built-in plugins: the reference documents their config, routes, events and pages."""

from __future__ import annotations

from typing import Any

from sidecar_runtime import _plugins


def builtin_plugins() -> dict[str, type[Any]]:
    """The plugins this distribution registers (third-party ones installed beside are ignored)."""
    found = {}
    for name, ep in _plugins.discover().items():
        if ep.dist is not None and ep.dist.name == "sidecar-run":
            found[name] = ep.load()
    return dict(sorted(found.items()))
