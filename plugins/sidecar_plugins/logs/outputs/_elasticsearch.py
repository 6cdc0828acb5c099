"""``type = "elasticsearch"``: the Elasticsearch/OpenSearch bulk API.

``POST <url>/_bulk`` with ``Content-Type: application/x-ndjson``: per record an action line
``{"create":{"_index":"logs-2024.05.01"}}`` (``create`` works for data streams; ``index`` too)
and the document line, each ending in ``\\n`` (the body ends with one). The index name takes
strftime codes of the record's time in UTC. ``@timestamp`` (``timestamp_field``) is added as
RFC 3339 when the record lacks it. The reply is read per item: with ``errors: true``, items
with 429/5xx are resent (only those), other failed items are rejected and counted.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .._model import Record
from ._base import Rejected, RetryLater, encode_json, record_time
from ._config import ElasticsearchConfig
from ._transport import HttpTransport

__all__ = ["ElasticsearchOutput", "bulk_failures"]

_CACHE_MAX = 4096


def _describe(status: int, result: Any) -> str:
    error = result.get("error") if isinstance(result, dict) else None
    if isinstance(error, dict):
        kind = error.get("type", "error")
        reason = " ".join(str(error.get("reason", "")).split())[:200]
        return f"{status} {kind}: {reason}" if reason else f"{status} {kind}"
    return f"{status} {error}" if error else str(status)


def bulk_failures(records: list[Record], payload: bytes) -> RetryLater | Rejected | None:
    """The outcome of a bulk reply: ``None`` (all accepted) or the error to raise."""
    try:
        reply = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return RetryLater("Elasticsearch replied with invalid JSON", kind="bad_response")
    if not isinstance(reply, dict):
        return RetryLater("Elasticsearch replied without a bulk result", kind="bad_response")
    if not reply.get("errors"):
        return None
    items = reply.get("items")
    if not isinstance(items, list) or len(items) != len(records):
        return RetryLater(
            f"Elasticsearch reported errors for {len(items) if isinstance(items, list) else 0} "
            f"items of {len(records)}",
            kind="bad_response",
        )
    retry: list[Record] = []
    rejected = 0
    retry_first = reject_first = ""
    retry_status = reject_status = 0
    for record, item in zip(records, items, strict=True):
        result = next(iter(item.values()), None) if isinstance(item, dict) and item else None
        status = result.get("status", 0) if isinstance(result, dict) else 0
        if not isinstance(status, int):
            status = 0
        if 200 <= status < 300:
            continue
        if status in (0, 408, 429) or status >= 500:
            retry.append(record)
            if not retry_first:
                retry_first, retry_status = _describe(status, result), status
        else:
            rejected += 1
            if not reject_first:
                reject_first, reject_status = _describe(status, result), status
    parts = []
    if rejected:
        parts.append(f"{rejected} rejected (first: {reject_first})")
    if retry:
        parts.append(f"{len(retry)} to retry (first: {retry_first})")
    msg = f"Elasticsearch bulk: {len(records)} items, " + ", ".join(parts)
    if retry:
        return RetryLater(msg, kind=f"es_item_{retry_status}", records=retry, rejected=rejected)
    if rejected:
        return Rejected(msg, kind=f"es_item_{reject_status}", count=rejected)
    return None


class ElasticsearchOutput:
    """Bulk-indexes each batch and resends only the items Elasticsearch asks to retry."""

    def __init__(self, name: str, config: ElasticsearchConfig, *, log: Any) -> None:
        self.name = name
        self.config = config
        self.log = log
        self.url = config.url.rstrip("/") + "/_bulk"
        self.params = {"filter_path": "errors,items.*.status,items.*.error"}
        if config.pipeline:
            self.params["pipeline"] = config.pipeline
        extra = {"Authorization": f"ApiKey {config.api_key}"} if config.api_key else None
        self.transport = HttpTransport(config, extra_headers=extra)
        self._static = config.index if "%" not in config.index else None
        self._indices: dict[int, bytes] = {}
        self._actions: dict[str, bytes] = {}
        self._stamps: dict[int, str] = {}
        field = config.timestamp_field
        self._ts_open = b"{" + encode_json(field) + b':"' if field else b""

    @property
    def bytes_sent(self) -> int:
        """Body bytes accepted by Elasticsearch (after gzip)."""
        return self.transport.bytes_sent

    async def open(self) -> None:
        await self.transport.open()

    def _action(self, index: str) -> bytes:
        line = self._actions.get(index)
        if line is None:
            if len(self._actions) > _CACHE_MAX:
                self._actions.clear()
            line = encode_json({self.config.action: {"_index": index}}) + b"\n"
            self._actions[index] = line
        return line

    def _action_at(self, t: float) -> bytes:
        second = int(t)
        line = self._indices.get(second)
        if line is None:
            if len(self._indices) > _CACHE_MAX:
                self._indices.clear()
            line = self._action(time.strftime(self.config.index, time.gmtime(second)))
            self._indices[second] = line
        return line

    def _stamp(self, t: float) -> str:
        second = int(t // 1)
        prefix = self._stamps.get(second)
        if prefix is None:
            if len(self._stamps) > _CACHE_MAX:
                self._stamps.clear()
            prefix = self._stamps[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        micros = min(999999, int((t - second) * 1e6))
        return f"{prefix}.{micros:06d}Z"

    def body(self, records: list[Record]) -> bytes:
        """The bulk request body: action and document lines, ending in a newline."""
        parts: list[bytes] = []
        static = self._action(self._static) if self._static is not None else None
        field = self.config.timestamp_field
        for record in records:
            t = record_time(record)
            parts.append(static if static is not None else self._action_at(t))
            doc = encode_json(record)
            if field and field not in record:
                stamp = self._ts_open + self._stamp(t).encode() + b'"'
                doc = stamp + (b"," + doc[1:] if len(doc) > 2 else b"}")
            parts.append(doc)
            parts.append(b"\n")
        return b"".join(parts)

    async def send(self, records: list[Record]) -> None:
        payload = await self.transport.post(
            self.url, self.body(records), content_type="application/x-ndjson", params=self.params
        )
        failure = bulk_failures(records, payload)
        if failure is not None:
            raise failure

    async def close(self) -> None:
        await self.transport.close()
