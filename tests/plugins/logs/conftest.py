"""The logs plugin's tests use aiohttp (HTTP outputs and test servers): asyncio only."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp runs on asyncio only."""
    return "asyncio"
