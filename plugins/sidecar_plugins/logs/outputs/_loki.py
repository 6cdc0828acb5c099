"""``type = "loki"``: Grafana Loki's push API, JSON flavour.

``POST /loki/api/v1/push`` with ``Content-Type: application/json`` and the body
``{"streams": [{"stream": {labels}, "values": [["<ns>", "<line>"], ...]}, ...]}``: the
timestamp is Unix epoch nanoseconds as a string; an optional third element of a value is its
structured metadata (string to string). Labels are the static ``labels`` plus, per record, the
values of ``label_keys`` (names made Loki-safe); records with the same label set share a
stream, in their order. The line is the record as JSON (``line_format = "json"``) or only its
``message``. ``tenant_id`` is sent as ``X-Scope-OrgID``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import msgspec

from .._model import Record
from ._base import encode_json, record_time
from ._config import LokiConfig
from ._transport import HttpTransport

__all__ = ["LokiOutput", "label_name", "push_url"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def push_url(url: str) -> str:
    """The push endpoint: ``url`` itself when it has a path, else ``/loki/api/v1/push`` on it."""
    if urlsplit(url).path in ("", "/"):
        return url.rstrip("/") + "/loki/api/v1/push"
    return url


def label_name(field: str) -> str:
    """A record field as a Loki label name: ``kubernetes.pod`` → ``kubernetes_pod``."""
    name = _UNSAFE.sub("_", field)
    return name if not name[:1].isdigit() else f"_{name}"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else encode_json(value).decode()


class LokiOutput:
    """Pushes each batch as streams grouped by label set."""

    def __init__(self, name: str, config: LokiConfig, *, log: Any) -> None:
        self.name = name
        self.config = config
        self.log = log
        self.url = push_url(config.url)
        extra = {"X-Scope-OrgID": config.tenant_id} if config.tenant_id else None
        self.transport = HttpTransport(config, extra_headers=extra)
        self._labels = [(key, label_name(key)) for key in config.label_keys]
        self._drop = set(config.label_keys) if config.remove_label_keys else set()
        self._metadata = list(config.structured_metadata_keys)

    @property
    def bytes_sent(self) -> int:
        """Body bytes accepted by Loki (after gzip)."""
        return self.transport.bytes_sent

    async def open(self) -> None:
        await self.transport.open()

    def body(self, records: list[Record]) -> bytes:
        """The push request body for ``records``."""
        static = self.config.labels
        streams: dict[tuple[tuple[str, str], ...], list[list[Any]]] = {}
        by_message = self.config.line_format == "message"
        drop = self._drop
        for record in records:
            key: tuple[tuple[str, str], ...] = ()
            if self._labels:
                key = tuple(
                    (name, _text(record[field]))
                    for field, name in self._labels
                    if record.get(field) is not None
                )
            if by_message:
                message = record.get("message", "")
                line = message if isinstance(message, str) else _text(message)
            elif drop:
                line = encode_json({k: v for k, v in record.items() if k not in drop}).decode()
            else:
                line = encode_json(record).decode()
            # A float holds Unix time to about a microsecond: round there, not to float noise.
            value: list[Any] = [str(round(record_time(record) * 1e6) * 1000), line]
            if self._metadata:
                meta = {
                    label_name(k): _text(record[k])
                    for k in self._metadata
                    if record.get(k) is not None
                }
                if meta:
                    value.append(meta)
            values = streams.get(key)
            if values is None:
                values = streams[key] = []
            values.append(value)
        return msgspec.json.encode(
            {
                "streams": [
                    {"stream": {**static, **dict(key)}, "values": values}
                    for key, values in streams.items()
                ]
            }
        )

    async def send(self, records: list[Record]) -> None:
        await self.transport.post(self.url, self.body(records), content_type="application/json")

    async def close(self) -> None:
        await self.transport.close()
