"""``type = "http"``: each batch POSTed (or PUT) as one JSON array or as JSON lines."""

from __future__ import annotations

from typing import Any

from .._model import Record
from ._base import encode_array, encode_lines
from ._config import HttpConfig
from ._transport import HttpTransport

__all__ = ["HttpOutput"]


class HttpOutput:
    """A generic HTTP endpoint: ``application/json`` arrays or ``application/x-ndjson``."""

    def __init__(self, name: str, config: HttpConfig, *, log: Any) -> None:
        self.name = name
        self.config = config
        self.log = log
        self.transport = HttpTransport(config)
        if config.format == "json":
            self._encode, self._type = encode_array, "application/json"
        else:
            self._encode, self._type = encode_lines, "application/x-ndjson"

    @property
    def bytes_sent(self) -> int:
        """Body bytes accepted by the endpoint (after gzip)."""
        return self.transport.bytes_sent

    async def open(self) -> None:
        await self.transport.open()

    async def send(self, records: list[Record]) -> None:
        body = self._encode(records)
        await self.transport.post(
            self.config.url, body, content_type=self._type, method=self.config.method
        )

    async def close(self) -> None:
        await self.transport.close()
