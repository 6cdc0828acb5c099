"""The proxy plugin's tests use asyncio protocols: asyncio only."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """The proxy engine runs on asyncio."""
    return "asyncio"
