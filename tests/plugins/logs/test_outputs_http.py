"""HTTP outputs against real aiohttp servers that check each payload as its target documents it:
generic HTTP (JSON array, NDJSON, gzip, auth, TLS), Loki push, Elasticsearch bulk, Fluentd
in_http; and the shared status policy (2xx, 400, 429 + Retry-After, 503, hanging server)."""

from __future__ import annotations

import base64
import gzip
import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from aiohttp import web
from sidecar_plugins.logs._delivery import Delivery
from sidecar_plugins.logs._model import Batch, Record
from sidecar_plugins.logs.outputs import (
    ElasticsearchConfig,
    FluentdHttpConfig,
    HttpConfig,
    LokiConfig,
    Output,
    OutputConfig,
    Rejected,
    RetryLater,
    make_output,
)
from sidecar_plugins.logs.outputs._transport import parse_retry_after, redact_url

from sidecar_runtime import Duration

pytestmark = pytest.mark.anyio

T0 = 1714563000.25  # 2024-05-01T11:30:00.25Z


class Quiet:
    def bind(self, **_: Any) -> Quiet:
        return self

    def __getattr__(self, _: str) -> Any:
        return lambda *a, **k: None


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    """Records every request; answers from ``replies`` (then ``default``); ``hang`` stalls."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    replies: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    default: tuple[int, dict[str, str], bytes] = (200, {}, b"")
    hang: bool = False
    reply_fn: Callable[[Seen], tuple[int, dict[str, str], bytes]] | None = None

    async def handle(self, request: web.Request) -> web.Response:
        seen = Seen(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            await request.read(),
        )
        self.seen.append(seen)
        if self.hang:
            await anyio.sleep(30)
        if self.replies:
            status, headers, body = self.replies.pop(0)
        elif self.reply_fn is not None:
            status, headers, body = self.reply_fn(seen)
        else:
            status, headers, body = self.default
        return web.Response(status=status, headers=headers, body=body)


async def serve(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        scheme = "https" if ssl_context else "http"
        server.url = f"{scheme}://127.0.0.1:{port}"
        yield server
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async for s in serve():
        yield s


def records(n: int = 3, **extra: Any) -> list[Record]:
    return [{"message": f"line {i}", "time": T0 + i, "stream": "stdout", **extra} for i in range(n)]


def fast(**keys: Any) -> dict[str, Any]:
    """Delivery keys for quick retries and a short timeout."""
    base: dict[str, Any] = {
        "retry_initial": Duration(0.01),
        "retry_max": Duration(0.05),
        "batch_timeout": Duration(0.0),
        "timeout": Duration(2.0),
    }
    base.update(keys)
    return base


async def send(config: OutputConfig, batch: list[Record]) -> None:
    output = make_output("out", config, log=Quiet())
    await output.open()
    try:
        with anyio.fail_after(10):
            await output.send(batch)
    finally:
        await output.close()


async def deliver(
    output: Output, config: OutputConfig, tmp_path: Path, batch: list[Record]
) -> Delivery:
    """Run a Delivery until ``batch`` is accepted, rejected or dropped."""
    done = anyio.Event()
    d = Delivery(
        output,
        config,
        spool_dir=str(tmp_path / "spool"),
        on_delivered=lambda _: done.set(),
        log=Quiet(),
    )
    await output.open()
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(d.run)
            await d.put(Batch(batch, {"f": 1}))
            with anyio.fail_after(10):
                await done.wait()
            tg.cancel_scope.cancel()
    finally:
        await output.close()
    return d


# Generic HTTP.


async def test_http_json_array_with_headers_and_basic_auth(server: Server) -> None:
    """format = json: one JSON array per batch, our headers, Basic auth, no redirects."""
    config = HttpConfig(
        url=f"{server.url}/ingest?src=app",
        headers={"X-Team": "core"},
        username="user",
        password="secret",  # noqa: S106  (test credentials)
        **fast(),
    )
    await send(config, records())
    (seen,) = server.seen
    assert (seen.method, seen.path, seen.query) == ("POST", "/ingest", {"src": "app"})
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["X-Team"] == "core"
    assert seen.headers["Authorization"] == "Basic " + base64.b64encode(b"user:secret").decode()
    assert json.loads(seen.body) == records()


async def test_http_ndjson_gzip_and_bearer(server: Server) -> None:
    """format = ndjson with gzip: one JSON object per line, trailing newline, gzip-encoded."""
    config = HttpConfig(
        url=f"{server.url}/bulk",
        format="ndjson",
        gzip=True,
        bearer_token="tok",  # noqa: S106  (test credentials)
        method="PUT",
        **fast(),
    )
    batch = records(2, extra={"nested": [1, 2]})
    output = make_output("out", config, log=Quiet())
    await output.open()
    try:
        await output.send(batch)
        # aiohttp's server decodes the body; what went over the wire was the gzip of it.
        assert getattr(output, "bytes_sent", 0) == len(gzip.compress(server.seen[0].body))
    finally:
        await output.close()
    (seen,) = server.seen
    assert seen.method == "PUT"
    assert seen.headers["Content-Type"] == "application/x-ndjson"
    assert seen.headers["Content-Encoding"] == "gzip"
    assert seen.headers["Authorization"] == "Bearer tok"
    text = seen.body.decode()
    assert text.endswith("\n")
    assert [json.loads(line) for line in text.splitlines()] == batch


async def test_status_policy(server: Server) -> None:
    """2xx ok; 400 rejected; 408/429/5xx retryable with Retry-After; 3xx not followed."""
    config = HttpConfig(url=f"{server.url}/x", **fast())
    server.replies = [
        (204, {}, b""),
        (400, {}, b'{"error": "bad\\nrecord"}'),
        (429, {"Retry-After": "7"}, b"slow down"),
        (503, {}, b""),
        (408, {}, b""),
        (302, {"Location": "/elsewhere"}, b""),
    ]
    await send(config, records(1))
    with pytest.raises(Rejected) as rejected:
        await send(config, records(1))
    assert rejected.value.kind == "http_400"
    assert str(rejected.value) == f'HTTP 400 from {server.url}/x: {{"error": "bad\\nrecord"}}'
    with pytest.raises(RetryLater) as slow:
        await send(config, records(1))
    assert (slow.value.kind, slow.value.retry_after) == ("http_429", 7.0)
    for kind in ("http_503", "http_408"):
        with pytest.raises(RetryLater) as busy:
            await send(config, records(1))
        assert busy.value.kind == kind
    with pytest.raises(Rejected, match="HTTP 302"):
        await send(config, records(1))
    assert len(server.seen) == 6
    assert [s.path for s in server.seen] == ["/x"] * 6


async def test_400_is_sent_once_and_counted_as_rejected(server: Server, tmp_path: Path) -> None:
    """Through a Delivery a 400 is not retried: the server sees it once, records are rejected."""
    server.default = (400, {}, b"schema mismatch")
    config = HttpConfig(url=f"{server.url}/x", **fast())
    d = await deliver(make_output("out", config, log=Quiet()), config, tmp_path, records(3))
    assert len(server.seen) == 1
    assert d.stats.rejected_records == 3
    assert d.stats.errors == {"http_400": 1}


async def test_429_and_503_are_retried_then_delivered(server: Server, tmp_path: Path) -> None:
    """429 (Retry-After: 0) and 503 are retried; the same body is delivered afterwards."""
    server.replies = [(429, {"Retry-After": "0"}, b""), (503, {}, b"")]
    config = HttpConfig(url=f"{server.url}/x", **fast())
    d = await deliver(make_output("out", config, log=Quiet()), config, tmp_path, records(2))
    assert len(server.seen) == 3
    assert server.seen[0].body == server.seen[2].body
    assert d.stats.errors == {"http_429": 1, "http_503": 1}
    assert d.stats.records_out == 2


async def test_hanging_server_times_out_and_is_retried(server: Server, tmp_path: Path) -> None:
    """A server that never answers is bounded by timeout; the batch is retried and delivered."""
    server.hang = True
    config = HttpConfig(url=f"{server.url}/x", **fast(timeout=Duration(0.2)))
    output = make_output("out", config, log=Quiet())
    with pytest.raises(RetryLater) as stalled:
        await send(config, records(1))
    assert stalled.value.kind == "timeout"
    server.hang = False
    d = await deliver(output, config, tmp_path, records(1))
    assert d.stats.records_out == 1


async def test_connection_refused_is_retryable() -> None:
    """Nothing listening: a retryable connect error naming the URL without its credentials."""
    config = HttpConfig(url="http://user:pw@127.0.0.1:9/x?token=s", **fast())
    with pytest.raises(RetryLater) as refused:
        await send(config, records(1))
    assert refused.value.kind == "connect"
    assert "http://127.0.0.1:9/x" in str(refused.value)
    assert "pw" not in str(refused.value)
    assert "token" not in str(refused.value)


async def test_tls_with_ca_file_and_verification_failure(tmp_path: Path) -> None:
    """https with ca_file verifies the server; without it verification fails (retryable)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async for srv in serve(server_ctx):
        await send(HttpConfig(url=f"{srv.url}/x", ca_file=str(ca_file), **fast()), records(1))
        assert len(srv.seen) == 1
        with pytest.raises(RetryLater) as untrusted:
            await send(HttpConfig(url=f"{srv.url}/x", **fast()), records(1))
        assert untrusted.value.kind == "tls"
        assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.value)
        await send(HttpConfig(url=f"{srv.url}/x", tls_verify=False, **fast()), records(1))
        assert len(srv.seen) == 2
        with pytest.raises(RetryLater) as missing:
            await send(HttpConfig(url=f"{srv.url}/x", ca_file="/nonexistent.pem", **fast()), [])
        assert missing.value.kind == "tls_files"


def test_retry_after_parsing() -> None:
    """Retry-After in seconds or as an HTTP date; garbage is ignored."""
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 01 May 2024 11:30:30 GMT", now=T0) == pytest.approx(29.75)
    assert parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", now=T0) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert redact_url("https://u:p@[::1]:8443/a?b=c#d") == "https://[::1]:8443/a"


# Loki.


async def test_loki_push_body_labels_and_tenant(server: Server) -> None:
    """POST /loki/api/v1/push: streams by label set, nanosecond strings, JSON lines, tenant."""
    server.default = (204, {}, b"")
    config = LokiConfig(
        url=server.url,
        labels={"job": "web"},
        label_keys=["stream", "kubernetes.pod"],
        tenant_id="team-a",
        **fast(),
    )
    batch = [
        {"message": "a", "time": T0, "stream": "stdout", "kubernetes.pod": "p1"},
        {"message": "b", "time": T0 + 0.5, "stream": "stderr"},
        {"message": "c", "time": T0 + 1, "stream": "stdout", "kubernetes.pod": "p1"},
    ]
    await send(config, batch)
    (seen,) = server.seen
    assert (seen.method, seen.path) == ("POST", "/loki/api/v1/push")
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["X-Scope-OrgID"] == "team-a"
    body = json.loads(seen.body)
    assert body == {
        "streams": [
            {
                "stream": {"job": "web", "stream": "stdout", "kubernetes_pod": "p1"},
                "values": [
                    ["1714563000250000000", json.dumps(batch[0], separators=(",", ":"))],
                    ["1714563001250000000", json.dumps(batch[2], separators=(",", ":"))],
                ],
            },
            {
                "stream": {"job": "web", "stream": "stderr"},
                "values": [["1714563000750000000", json.dumps(batch[1], separators=(",", ":"))]],
            },
        ]
    }
    assert batch[0]["kubernetes.pod"] == "p1"  # records are never mutated


async def test_loki_message_lines_metadata_and_explicit_path(server: Server) -> None:
    """line_format = message sends only the message; structured metadata is a third element."""
    server.default = (204, {}, b"")
    config = LokiConfig(
        url=f"{server.url}/custom/push",
        line_format="message",
        structured_metadata_keys=["trace_id"],
        **fast(),
    )
    await send(
        config, [{"message": "hi", "time": T0, "trace_id": "abc"}, {"message": "x", "time": T0}]
    )
    (seen,) = server.seen
    assert seen.path == "/custom/push"
    assert json.loads(seen.body) == {
        "streams": [
            {
                "stream": {"job": "sidecar-run"},
                "values": [
                    ["1714563000250000000", "hi", {"trace_id": "abc"}],
                    ["1714563000250000000", "x"],
                ],
            }
        ]
    }


async def test_loki_remove_label_keys_and_rejection(server: Server) -> None:
    """remove_label_keys drops label fields from the line; a 400 from Loki is rejected."""
    server.replies = [(204, {}, b""), (400, {}, b"entry too far behind")]
    config = LokiConfig(url=server.url, label_keys=["level"], remove_label_keys=True, **fast())
    await send(config, [{"message": "m", "time": T0, "level": "info"}])
    values = json.loads(server.seen[0].body)["streams"][0]
    assert values["stream"] == {"job": "sidecar-run", "level": "info"}
    assert json.loads(values["values"][0][1]) == {"message": "m", "time": T0}
    with pytest.raises(Rejected, match="entry too far behind"):
        await send(config, records(1))


# Elasticsearch.


def bulk_reply(*statuses: int) -> bytes:
    items = []
    for status in statuses:
        result: dict[str, Any] = {"status": status}
        if status >= 300:
            kind = (
                "mapper_parsing_exception" if status == 400 else "es_rejected_execution_exception"
            )
            result["error"] = {"type": kind, "reason": f"reason {status}"}
        items.append({"create": result})
    return json.dumps({"errors": any(s >= 300 for s in statuses), "items": items}).encode()


def parse_bulk(body: bytes) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    assert body.endswith(b"\n")
    lines = [json.loads(line) for line in body.decode().splitlines()]
    return list(zip(lines[::2], lines[1::2], strict=True))


async def test_elasticsearch_bulk_body(server: Server) -> None:
    """POST /_bulk: NDJSON create/doc pairs, dated index from the record time, @timestamp."""
    server.default = (200, {}, bulk_reply(201, 201))
    config = ElasticsearchConfig(url=server.url, pipeline="logs", **fast())
    batch = [
        {"message": "a", "time": T0},
        {"message": "b", "time": T0 + 86400, "@timestamp": "given"},
    ]
    await send(config, batch)
    (seen,) = server.seen
    assert (seen.method, seen.path) == ("POST", "/_bulk")
    assert seen.query["pipeline"] == "logs"
    assert "errors" in seen.query["filter_path"]
    assert seen.headers["Content-Type"] == "application/x-ndjson"
    assert parse_bulk(seen.body) == [
        (
            {"create": {"_index": "logs-2024.05.01"}},
            {"@timestamp": "2024-05-01T11:30:00.250000Z", "message": "a", "time": T0},
        ),
        ({"create": {"_index": "logs-2024.05.02"}}, batch[1]),
    ]


async def test_elasticsearch_index_action_static_index_and_api_key(server: Server) -> None:
    """action = index, a static index name, no @timestamp, ApiKey auth."""
    server.default = (200, {}, b'{"errors":false}')
    config = ElasticsearchConfig(
        url=f"{server.url}/prefix/",
        index="app",
        action="index",
        timestamp_field=None,
        api_key="k3y",
        **fast(),
    )
    await send(config, [{"message": "a", "time": T0}, {}])
    (seen,) = server.seen
    assert seen.path == "/prefix/_bulk"
    assert seen.headers["Authorization"] == "ApiKey k3y"
    pairs = parse_bulk(seen.body)
    assert [a for a, _ in pairs] == [{"index": {"_index": "app"}}] * 2
    assert [d for _, d in pairs] == [{"message": "a", "time": T0}, {}]


async def test_elasticsearch_mixed_items_retry_only_429_and_5xx(
    server: Server, tmp_path: Path
) -> None:
    """errors: true: 429/5xx items are resent alone, 4xx items are rejected, never retried."""
    server.replies = [(200, {}, bulk_reply(201, 429, 400, 503, 201))]
    server.reply_fn = lambda seen: (200, {}, bulk_reply(*[201] * (seen.body.count(b"\n") // 2)))
    config = ElasticsearchConfig(url=server.url, **fast())
    batch = [{"message": f"m{i}", "time": T0} for i in range(5)]
    d = await deliver(make_output("es", config, log=Quiet()), config, tmp_path, batch)
    assert len(server.seen) == 2
    resent = [doc["message"] for _, doc in parse_bulk(server.seen[1].body)]
    assert resent == ["m1", "m3"]
    assert (d.stats.records_out, d.stats.rejected_records) == (4, 1)
    assert d.stats.errors == {"es_item_429": 1}
    assert "mapper_parsing_exception" in (d.stats.last_error or "")


async def test_elasticsearch_only_rejected_items_and_bad_replies(server: Server) -> None:
    """Only 4xx items: the batch is done with them counted; an unreadable reply is retryable."""
    server.replies = [(200, {}, bulk_reply(201, 400)), (200, {}, b"<html>proxy</html>")]
    config = ElasticsearchConfig(url=server.url, **fast())
    with pytest.raises(Rejected) as rejected:
        await send(config, records(2))
    assert (rejected.value.kind, rejected.value.count) == ("es_item_400", 1)
    with pytest.raises(RetryLater) as bad:
        await send(config, records(2))
    assert bad.value.kind == "bad_response"


# Fluentd in_http.


async def test_fluentd_in_http_array_with_time_fields(server: Server) -> None:
    """POST /<tag>: a JSON array (in_http batch mode), each record with its time in seconds."""
    config = FluentdHttpConfig(url=server.url, tag="app.logs", **fast())
    batch = records(3)
    await send(config, batch)
    (seen,) = server.seen
    assert (seen.method, seen.path) == ("POST", "/app.logs")
    assert seen.headers["Content-Type"] == "application/json"
    body = json.loads(seen.body)
    assert body == batch
    assert [r["time"] for r in body] == [T0, T0 + 1, T0 + 2]
