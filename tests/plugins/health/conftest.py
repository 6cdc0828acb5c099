"""The health plugin's tests use aiohttp (probes and test servers): asyncio only."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp runs on asyncio only; the pure prober tests override this with both backends."""
    return "asyncio"
