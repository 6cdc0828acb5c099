"""The templates plugin is backend-neutral anyio; its tests run on asyncio (the runtime's
backend), and the ConfigMap swap test is parametrized to run on trio too."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar_runtime._logging import configure_logging

LogEvents = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def anyio_backend() -> str:
    """asyncio, as the runtime runs; see ``test_templates_plugin.py`` for the trio leg."""
    return "asyncio"


@pytest.fixture
def log_events(tmp_path: Path) -> Iterator[LogEvents]:
    """The runtime's log at debug level as JSON lines in a file; call it to read the events."""
    path = tmp_path / "sidecar.log"
    stream = configure_logging("debug", "json", str(path))
    try:
        yield lambda: [json.loads(line) for line in path.read_text().splitlines() if line]
    finally:
        configure_logging()  # the defaults again: warning level, on stderr
        stream.close()
