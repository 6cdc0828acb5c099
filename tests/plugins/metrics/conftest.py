"""The metrics plugin's tests use aiohttp (the app scrape and fake endpoints): asyncio only."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp runs on asyncio only."""
    return "asyncio"
