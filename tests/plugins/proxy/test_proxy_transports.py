"""Listeners and upstreams over TLS (mTLS, XFCC, egress, reload), unix sockets, WebSocket."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import anyio
import pytest
import trustme
from aiohttp import web

from tests.plugins.proxy.helpers import aiohttp_upstream, config, running_proxy

pytestmark = pytest.mark.anyio


def text_handler(text: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=text)

    return handler


async def headers_echo(request: web.Request) -> web.Response:
    return web.json_response({k.lower(): v for k, v in request.headers.items()})


def write_pair(tmp: Path, name: str, cert: trustme.LeafCert) -> tuple[str, str]:
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    cert.private_key_pem.write_to_path(str(key_path))
    return str(cert_path), str(key_path)


async def test_mtls_listener_passes_identity_and_rejects_bad_clients(tmp_path: Path) -> None:
    """HTTPS with strict mTLS: a client with a certificate of the CA reaches the app with its
    identity in X-Forwarded-Client-Cert (a forged one is dropped) and X-Forwarded-Proto https;
    a client without one fails the handshake, which is counted."""
    ca = trustme.CA()
    cert, key = write_pair(tmp_path, "server", ca.issue_cert("localhost", "127.0.0.1"))
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    client_cert = ca.issue_cert("client.example")
    async with aiohttp_upstream(headers_echo) as port:
        table = config(port)
        table["listeners"][0]["tls"] = {"cert": cert, "key": key, "client_ca": str(ca_path)}
        async with running_proxy(table) as proxy:
            context = ssl.create_default_context()
            ca.configure_trust(context)
            client_cert.configure_cert(context)
            url = f"https://127.0.0.1:{proxy.port}/"
            async with aiohttp.ClientSession() as session:
                headers = {"X-Forwarded-Client-Cert": "By=forged"}
                async with session.get(url, ssl=context, headers=headers) as r:
                    seen = await r.json()
                anonymous = ssl.create_default_context()
                ca.configure_trust(anonymous)
                with pytest.raises(aiohttp.ClientError):
                    async with session.get(url, ssl=anonymous) as r:
                        await r.read()
            xfcc = seen["x-forwarded-client-cert"]
            assert "DNS=client.example" in xfcc
            assert xfcc.startswith("Hash=")
            assert "forged" not in xfcc
            assert seen["x-forwarded-proto"] == "https"
            with anyio.fail_after(5):
                while not proxy.metric(  # noqa: ASYNC110 - a counter has no event to wait on
                    "sidecar_proxy_tls_handshake_errors_total", {"listener": "listener0"}
                ):
                    await asyncio.sleep(0.02)
            assert proxy.metric(
                "sidecar_proxy_tls_certificate_expiry_timestamp_seconds", {"listener": "listener0"}
            )


async def test_certificate_reloaded_when_the_files_change(tmp_path: Path) -> None:
    """New certificate files are picked up (reload_interval) for new handshakes."""
    ca = trustme.CA()
    first = ca.issue_cert("localhost")
    cert, key = write_pair(tmp_path, "server", first)
    async with aiohttp_upstream(headers_echo) as port:
        table = config(port)
        table["listeners"][0]["tls"] = {"cert": cert, "key": key, "reload_interval": "50ms"}
        async with running_proxy(table) as proxy:

            async def served_cert() -> bytes:
                context = ssl.create_default_context()
                ca.configure_trust(context)
                _, writer = await asyncio.open_connection(
                    "127.0.0.1", proxy.port, ssl=context, server_hostname="localhost"
                )
                der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
                writer.close()
                return bytes(der)

            before = await served_cert()
            write_pair(tmp_path, "server", ca.issue_cert("localhost"))
            with anyio.fail_after(5):
                while (await served_cert()) == before:  # noqa: ASYNC110 - polls the listener
                    await asyncio.sleep(0.05)
            labels = {"listener": "listener0", "outcome": "success"}
            assert proxy.metric("sidecar_proxy_tls_reloads_total", labels) == 1


async def test_tls_origination_to_an_egress_upstream(tmp_path: Path) -> None:
    """An upstream with ``tls`` is reached over HTTPS, verified against its CA; a wrong CA is a
    connect failure (503)."""
    ca, other = trustme.CA(), trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    ca_path, other_path = tmp_path / "ca.pem", tmp_path / "other.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    other.cert_pem.write_to_path(str(other_path))
    app = web.Application()
    app.router.add_get("/", text_handler("secure"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        for ca_file, expected in ((ca_path, (200, "secure")), (other_path, (503, None))):
            table = config(f"localhost:{port}", retry={"attempts": 1})
            table["upstreams"]["app"]["tls"] = {"ca": str(ca_file)}
            async with (
                running_proxy(table) as proxy,
                aiohttp.ClientSession() as session,
                session.get(proxy.url) as r,
            ):
                got = (r.status, await r.text())
            assert got[0] == expected[0]
            if expected[1] is not None:
                assert got[1] == expected[1]
    finally:
        await runner.cleanup()


async def test_unix_socket_listener_and_upstream(tmp_path: Path) -> None:
    """A listener on a unix socket forwarding to an upstream on a unix socket."""
    upstream_path = str(tmp_path / "app.sock")
    app = web.Application()
    app.router.add_get("/", text_handler("over unix"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.UnixSite(runner, upstream_path).start()
    listen_path = str(tmp_path / "proxy.sock")
    table = {
        "listeners": [{"address": f"unix:{listen_path}"}],
        "upstreams": {"app": {"endpoints": [f"unix:{upstream_path}"], "app": False}},
    }
    try:
        async with running_proxy(table):
            connector = aiohttp.UnixConnector(path=listen_path)
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.get("http://localhost/") as r,
            ):
                assert await r.text() == "over unix"
        assert not await anyio.Path(listen_path).exists()
    finally:
        await runner.cleanup()


async def test_websocket_passthrough() -> None:
    """A WebSocket upgrade becomes a tunnel: messages echo both ways through the proxy."""

    async def ws_echo(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str("echo:" + message.data)
        return ws

    async with (
        aiohttp_upstream(ws_echo) as port,
        running_proxy(config(port)) as proxy,
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{proxy.url}/ws") as ws,
    ):
        for text in ("one", "two" * 10000):
            await ws.send_str(text)
            with anyio.fail_after(5):
                reply = await ws.receive()
            assert reply.data == "echo:" + text
