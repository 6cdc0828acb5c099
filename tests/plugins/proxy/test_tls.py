"""Listener TLS (mTLS modes, hot reload), peer identities and upstream TLS, over real handshakes."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import os
import socket
import ssl
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sidecar_plugins.proxy._tls import CertStore, ServerTLSConfig
from sidecar_plugins.proxy._upstream_tls import UpstreamTLSConfig, client_context, server_hostname
from sidecar_plugins.proxy._x509 import PeerIdentity, peer_identity

from sidecar_runtime import Duration
from sidecar_runtime._types import dec_hook

pytestmark = pytest.mark.anyio
SPIFFE = "spiffe://cluster.local/ns/default/sa/web"
WAIT = 10.0


class RecordingLog:
    """Keeps the events a CertStore logs."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.reloaded = asyncio.Event()

    def _record(self, level: str, event: str, fields: dict[str, Any]) -> None:
        self.events.append((level, event, fields))
        if event == "tls_reloaded":
            self.reloaded.set()

    def info(self, event: str, **fields: Any) -> None:
        self._record("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._record("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._record("error", event, fields)

    def names(self) -> list[str]:
        return [event for _, event, _ in self.events]


def issue(
    ca: trustme.CA,
    *,
    cn: str,
    uris: tuple[str, ...] = (),
    dns: tuple[str, ...] = (),
    org: str | None = None,
) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) of a client certificate with SAN URIs, signed by ``ca``."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org is not None:
        names.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    now = datetime.datetime.now(datetime.UTC)
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    sans += [x509.DNSName(d) for d in dns]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(names))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_leaf(directory: Path, leaf: trustme.LeafCert) -> None:
    """Replace cert.pem and key.pem atomically (new inodes, like a config-management tool)."""
    for name, blob in (("cert.pem", leaf.cert_chain_pems[0]), ("key.pem", leaf.private_key_pem)):
        blob.write_to_path(str(directory / f".{name}.tmp"))
        os.replace(directory / f".{name}.tmp", directory / name)


def fingerprint(writer: asyncio.StreamWriter) -> str:
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest()


def leaf_fingerprint(leaf: trustme.LeafCert) -> str:
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    return hashlib.sha256(der).hexdigest()


@dataclass
class EchoServer:
    """A line echo server on 127.0.0.1; records each connection's peer identity."""

    port: int
    peers: list[PeerIdentity | None] = field(default_factory=list)


@asynccontextmanager
async def echo_server(context: ssl.SSLContext) -> AsyncIterator[EchoServer]:
    tasks: set[asyncio.Task[None]] = set()
    state = EchoServer(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        state.peers.append(peer_identity(writer.get_extra_info("ssl_object")))
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()
            tasks.discard(task)

    server = await asyncio.start_server(
        handle, "127.0.0.1", 0, ssl=context, ssl_handshake_timeout=WAIT
    )
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=WAIT)


@asynccontextmanager
async def connect(
    port: int, context: ssl.SSLContext, server_name: str | None = "localhost"
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname=server_name or None
        ),
        WAIT,
    )
    try:
        yield reader, writer
    finally:
        writer.close()
        with suppress(ConnectionError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), WAIT)


async def ping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(b"ping\n")
    await writer.drain()
    return await asyncio.wait_for(reader.readline(), WAIT)


async def exchange(port: int, context: ssl.SSLContext) -> bytes | BaseException:
    """One round trip; the exception instead when the handshake or the read fails."""
    try:
        async with connect(port, context) as (reader, writer):
            return await ping(reader, writer)
    except (ssl.SSLError, ConnectionError) as err:
        return err


@dataclass
class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost, and the files of a listener."""

    ca: trustme.CA
    leaf: trustme.LeafCert
    dir: Path

    def config(self, **kwargs: Any) -> ServerTLSConfig:
        return ServerTLSConfig(
            cert=str(self.dir / "cert.pem"), key=str(self.dir / "key.pem"), **kwargs
        )

    def client(self, cert: tuple[bytes, bytes] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if cert is not None:
            cert_path, key_path = self.dir / "client-cert.pem", self.dir / "client-key.pem"
            cert_path.write_bytes(cert[0])
            key_path.write_bytes(cert[1])
            context.load_cert_chain(cert_path, key_path)
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    write_leaf(tmp_path, leaf)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return Pki(ca=ca, leaf=leaf, dir=tmp_path)


# --- config ---------------------------------------------------------------------------------


def test_client_auth_defaults_follow_client_ca() -> None:
    """client_auth is strict when client_ca is set and none otherwise; a mode needs a CA."""
    assert ServerTLSConfig(cert="c", key="k").client_auth == "none"
    assert ServerTLSConfig(cert="c", key="k", client_ca="ca").client_auth == "strict"
    assert (
        ServerTLSConfig(cert="c", key="k", client_ca="ca", client_auth="permissive").client_auth
        == "permissive"
    )
    with pytest.raises(ValueError, match=r"client_auth: 'permissive' needs client_ca"):
        ServerTLSConfig(cert="c", key="k", client_auth="permissive")


def test_config_decodes_strictly() -> None:
    """Durations decode from text; unknown keys, bad versions and bad ciphers are errors."""
    config = msgspec.convert(
        {"cert": "c", "key": "k", "reload_interval": "250ms", "min_version": "1.3"},
        ServerTLSConfig,
        dec_hook=dec_hook,
    )
    assert config.reload_interval == Duration(0.25)
    assert config.min_version == "1.3"
    with pytest.raises(msgspec.ValidationError, match="unknown field `certs`"):
        msgspec.convert({"cert": "c", "key": "k", "certs": "x"}, ServerTLSConfig)
    with pytest.raises(msgspec.ValidationError, match="min_version"):
        msgspec.convert({"cert": "c", "key": "k", "min_version": "1.1"}, ServerTLSConfig)
    with pytest.raises(ValueError, match=r"ciphers: no cipher matches 'NOPE-CIPHER'"):
        ServerTLSConfig(cert="c", key="k", ciphers="NOPE-CIPHER")
    with pytest.raises(ValueError, match=r"reload_interval: must be 0 \(off\) or more"):
        ServerTLSConfig(cert="c", key="k", reload_interval=Duration(-1))


def test_upstream_config_needs_cert_and_key_together() -> None:
    """A client certificate needs both files; server_name must be a host name."""
    with pytest.raises(ValueError, match="key: needed with cert"):
        UpstreamTLSConfig(cert="c")
    with pytest.raises(ValueError, match="cert: needed with key"):
        UpstreamTLSConfig(key="k")
    with pytest.raises(ValueError, match="server_name: expected a host name"):
        UpstreamTLSConfig(server_name="https://api")
    config = UpstreamTLSConfig(server_name="api.internal")
    assert server_hostname(config, "10.0.0.1") == "api.internal"
    assert server_hostname(UpstreamTLSConfig(), "10.0.0.1") == "10.0.0.1"


# --- bad files at start ----------------------------------------------------------------------


def test_missing_cert_names_key_path_and_file(pki: Pki) -> None:
    """A missing certificate is a one-line ValueError with the key path and the file."""
    config = ServerTLSConfig(cert=str(pki.dir / "nope.pem"), key=str(pki.dir / "key.pem"))
    with pytest.raises(ValueError, match=r"^plugins\.proxy\.listeners\[0\]\.tls\.cert: ") as info:
        CertStore(config, log=RecordingLog(), where="plugins.proxy.listeners[0].tls")
    assert str(pki.dir / "nope.pem") in str(info.value)
    assert "No such file or directory" in str(info.value)
    assert "\n" not in str(info.value)


def test_garbage_files_are_rejected(pki: Pki) -> None:
    """Files that are not PEM, a key for another cert, an encrypted key, a bad CA: each named."""
    (pki.dir / "junk.pem").write_text("hello\n")
    log = RecordingLog()
    with pytest.raises(ValueError, match=r"^tls\.cert: cannot load .*junk\.pem'.*no PEM cert"):
        CertStore(ServerTLSConfig(cert=str(pki.dir / "junk.pem"), key="k"), log=log)
    with pytest.raises(ValueError, match=r"^tls\.key: cannot load .*junk\.pem'.*no PEM private"):
        CertStore(msgspec.structs.replace(pki.config(), key=str(pki.dir / "junk.pem")), log=log)
    other = pki.ca.issue_cert("localhost")
    other.private_key_pem.write_to_path(str(pki.dir / "other-key.pem"))
    with pytest.raises(ValueError, match=r"^tls\.key: .*other-key\.pem' does not match"):
        CertStore(
            msgspec.structs.replace(pki.config(), key=str(pki.dir / "other-key.pem")), log=log
        )
    key = ec.generate_private_key(ec.SECP256R1())
    (pki.dir / "enc-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ValueError, match=r"^tls\.key: .*enc-key\.pem'.*encrypted"):
        CertStore(msgspec.structs.replace(pki.config(), key=str(pki.dir / "enc-key.pem")), log=log)
    with pytest.raises(ValueError, match=r"^tls\.client_ca: cannot load .*junk\.pem'"):
        CertStore(pki.config(client_ca=str(pki.dir / "junk.pem")), log=log)
    with pytest.raises(ValueError, match=r"^tls\.client_ca: cannot read .*absent\.pem'"):
        CertStore(pki.config(client_ca=str(pki.dir / "absent.pem")), log=log)
    assert log.events == []


@pytest.mark.parametrize("year", [2037, 2061])
def test_expiry_and_serial_of_the_served_certificate(tmp_path: Path, year: int) -> None:
    """not_after (UTCTime before 2050, GeneralizedTime after) and the serial for metrics."""
    ca = trustme.CA()
    not_after = datetime.datetime(year, 5, 17, 12, 30, 15, tzinfo=datetime.UTC)
    leaf = ca.issue_cert("localhost", not_after=not_after)
    write_leaf(tmp_path, leaf)
    store = CertStore(
        ServerTLSConfig(cert=str(tmp_path / "cert.pem"), key=str(tmp_path / "key.pem")),
        log=RecordingLog(),
    )
    assert store.not_after == not_after.timestamp()
    parsed = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    assert store.serial == parsed.serial_number
    assert store.sha256 == leaf_fingerprint(leaf)


def test_expired_certificate_is_served_with_a_warning(tmp_path: Path) -> None:
    """An expired certificate still loads (as in Envoy) but is logged."""
    ca = trustme.CA()
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    write_leaf(tmp_path, ca.issue_cert("localhost", not_before=past, not_after=past))
    log = RecordingLog()
    CertStore(
        ServerTLSConfig(cert=str(tmp_path / "cert.pem"), key=str(tmp_path / "key.pem")), log=log
    )
    assert log.names() == ["tls_certificate_expired"]


# --- handshakes -----------------------------------------------------------------------------


async def test_alpn_and_tls13(pki: Pki) -> None:
    """The listener negotiates ALPN http/1.1 and TLS 1.3 with a modern client."""
    store = CertStore(pki.config(), log=RecordingLog())
    client = pki.client()
    client.set_alpn_protocols(["h2", "http/1.1"])
    async with echo_server(store.context) as server, connect(server.port, client) as (r, w):
        assert await ping(r, w) == b"ping\n"
        ssl_object = w.get_extra_info("ssl_object")
        assert ssl_object.selected_alpn_protocol() == "http/1.1"
        assert ssl_object.version() == "TLSv1.3"
        assert fingerprint(w) == leaf_fingerprint(pki.leaf)
    assert server.peers == [None]


def old_client(ca: trustme.CA) -> ssl.SSLContext:
    """A client that speaks TLS 1.0-1.1 only (OpenSSL's security level lowered to allow it)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    ca.configure_trust(context)
    return context


def failed(result: bytes | BaseException) -> bool:
    """The handshake or the first read failed (TLS 1.3 reports a refused client cert late)."""
    return isinstance(result, BaseException) or result == b""


def refused_by_server(result: bytes | BaseException) -> bool:
    """The server aborted the handshake (an alert or a reset), not the client refusing itself."""
    if isinstance(result, ssl.SSLError):
        return result.reason == "TLSV1_ALERT_PROTOCOL_VERSION"
    return isinstance(result, ConnectionError)


async def test_tls11_is_refused_by_the_server(pki: Pki) -> None:
    """A TLS 1.1 client that a permissive server accepts is refused; min_version 1.3 refuses
    a TLS 1.2 client."""
    legacy = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki.leaf.configure_cert(legacy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy.minimum_version = ssl.TLSVersion.TLSv1
    legacy.set_ciphers("DEFAULT:@SECLEVEL=0")
    async with echo_server(legacy) as server:
        assert await exchange(server.port, old_client(pki.ca)) == b"ping\n"
    store = CertStore(pki.config(), log=RecordingLog())
    tls12 = pki.client()
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    async with echo_server(store.context) as server:
        assert refused_by_server(await exchange(server.port, old_client(pki.ca)))
        assert await exchange(server.port, tls12) == b"ping\n"
    strict13 = CertStore(pki.config(min_version="1.3"), log=RecordingLog())
    async with echo_server(strict13.context) as server:
        assert refused_by_server(await exchange(server.port, tls12))
        assert await exchange(server.port, pki.client()) == b"ping\n"
    assert server.peers == [None]


async def test_strict_requires_a_client_certificate(pki: Pki) -> None:
    """strict: no certificate or one from an unknown CA fails; a valid one gives the identity."""
    store = CertStore(pki.config(client_ca=str(pki.dir / "ca.pem")), log=RecordingLog())
    good = issue(pki.ca, cn="web", uris=(SPIFFE,), dns=("web.default.svc",), org="Acme")
    stranger = issue(trustme.CA(), cn="web", uris=(SPIFFE,))
    async with echo_server(store.context) as server:
        assert failed(await exchange(server.port, pki.client()))
        assert failed(await exchange(server.port, pki.client(stranger)))
        assert server.peers == []
        assert await exchange(server.port, pki.client(good)) == b"ping\n"
    [identity] = server.peers
    assert identity is not None
    assert identity.uris == (SPIFFE,)
    assert identity.dns == ("web.default.svc",)
    assert identity.subject == "CN=web,O=Acme"
    assert identity.principal() == SPIFFE
    assert (
        identity.sha256
        == hashlib.sha256(
            x509.load_pem_x509_certificate(good[0]).public_bytes(serialization.Encoding.DER)
        ).hexdigest()
    )


async def test_permissive_accepts_both_but_rejects_invalid_certificates(pki: Pki) -> None:
    """permissive: no certificate passes without identity, a valid one with; unknown CA fails."""
    store = CertStore(
        pki.config(client_ca=str(pki.dir / "ca.pem"), client_auth="permissive"),
        log=RecordingLog(),
    )
    good = issue(pki.ca, cn="batch")
    stranger = issue(trustme.CA(), cn="batch")
    async with echo_server(store.context) as server:
        assert await exchange(server.port, pki.client()) == b"ping\n"
        assert failed(await exchange(server.port, pki.client(stranger)))
        assert await exchange(server.port, pki.client(good)) == b"ping\n"
    assert len(server.peers) == 2
    assert server.peers[0] is None
    identity = server.peers[1]
    assert identity is not None
    assert (identity.subject, identity.uris, identity.principal()) == ("CN=batch", (), "batch")


async def test_none_mode_reports_no_identity(pki: Pki) -> None:
    """Without client_ca a client certificate is not asked for, so there is no identity."""
    store = CertStore(pki.config(), log=RecordingLog())
    async with echo_server(store.context) as server:
        assert await exchange(server.port, pki.client(issue(pki.ca, cn="x"))) == b"ping\n"
    assert server.peers == [None]


# --- reload ---------------------------------------------------------------------------------


async def test_reload_serves_new_cert_and_keeps_old_connections(pki: Pki) -> None:
    """check() picks up replaced files; an open connection keeps working on the old cert and
    new ones (with and without SNI) see the new cert."""
    log = RecordingLog()
    store = CertStore(pki.config(), log=log)
    old_fp = leaf_fingerprint(pki.leaf)
    assert store.check() is False
    async with echo_server(store.context) as server, connect(server.port, pki.client()) as (r, w):
        assert fingerprint(w) == old_fp
        new = pki.ca.issue_cert("127.0.0.1", "localhost")
        write_leaf(pki.dir, new)
        assert store.check() is True
        assert store.check() is False
        assert (store.reloads, store.reload_errors, store.sha256) == (1, 0, leaf_fingerprint(new))
        assert await ping(r, w) == b"ping\n"
        assert fingerprint(w) == old_fp
        for name in ("localhost", None):
            client = pki.client()
            client.check_hostname = name is not None
            async with connect(server.port, client, server_name=name) as (r2, w2):
                assert await ping(r2, w2) == b"ping\n"
                assert fingerprint(w2) == leaf_fingerprint(new)
        assert await ping(r, w) == b"ping\n"
    assert log.names() == ["tls_reloaded"]
    assert log.events[0][2]["sha256"] == leaf_fingerprint(new)


async def test_reload_follows_a_kubernetes_secret_symlink_swap(tmp_path: Path) -> None:
    """A Secret volume swaps the ..data symlink; check() notices and new handshakes see it."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.crt"))

    def publish(leaf: trustme.LeafCert, version: str) -> None:
        data = tmp_path / f"..{version}"
        data.mkdir()
        leaf.cert_chain_pems[0].write_to_path(str(data / "tls.crt"))
        leaf.private_key_pem.write_to_path(str(data / "tls.key"))
        os.symlink(data.name, tmp_path / "..data_tmp")
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")

    first, second = ca.issue_cert("localhost"), ca.issue_cert("localhost")
    publish(first, "2024_01_01")
    for name in ("tls.crt", "tls.key"):
        os.symlink(f"..data/{name}", tmp_path / name)
    config = ServerTLSConfig(cert=str(tmp_path / "tls.crt"), key=str(tmp_path / "tls.key"))
    store = CertStore(config, log=RecordingLog())
    client = ssl.create_default_context()
    ca.configure_trust(client)
    async with echo_server(store.context) as server:
        async with connect(server.port, client) as (_, w):
            assert fingerprint(w) == leaf_fingerprint(first)
        publish(second, "2024_02_02")
        for old in (tmp_path / "..2024_01_01").iterdir():
            old.unlink()
        (tmp_path / "..2024_01_01").rmdir()
        assert store.check() is True
        async with connect(server.port, client) as (_, w):
            assert fingerprint(w) == leaf_fingerprint(second)


async def test_broken_key_keeps_the_old_certificate(pki: Pki) -> None:
    """A new cert with a key that does not match: reload fails once, the old cert stays; a fix
    is picked up by the next check."""
    log = RecordingLog()
    store = CertStore(pki.config(), log=log)
    new = pki.ca.issue_cert("localhost")
    new.cert_chain_pems[0].write_to_path(str(pki.dir / "cert.pem"))
    assert store.check() is False
    assert store.check() is False  # the same broken files are not retried or logged again
    assert (store.reloads, store.reload_errors) == (0, 1)
    assert log.events[0][:2] == ("error", "tls_reload_failed")
    assert "does not match" in log.events[0][2]["error"]
    assert store.sha256 == leaf_fingerprint(pki.leaf)
    async with echo_server(store.context) as server:
        async with connect(server.port, pki.client()) as (_, w):
            assert fingerprint(w) == leaf_fingerprint(pki.leaf)
        new.private_key_pem.write_to_path(str(pki.dir / "key.pem"))
        assert store.check() is True
        async with connect(server.port, pki.client()) as (_, w):
            assert fingerprint(w) == leaf_fingerprint(new)
    assert store.reload() is True  # an explicit reload (SIGHUP) re-reads unchanged files
    assert (store.reloads, store.reload_errors) == (2, 1)


async def test_deleted_files_keep_serving(pki: Pki) -> None:
    """Files that vanish fail the reload; the listener keeps its certificates."""
    store = CertStore(pki.config(), log=RecordingLog())
    (pki.dir / "key.pem").unlink()
    assert store.check() is False
    assert store.reload_errors == 1
    async with echo_server(store.context) as server:
        assert await exchange(server.port, pki.client()) == b"ping\n"


async def test_client_ca_rotation_applies_to_new_handshakes(pki: Pki) -> None:
    """Replacing client_ca: clients of the old CA are refused, clients of the new one accepted."""
    store = CertStore(pki.config(client_ca=str(pki.dir / "ca.pem")), log=RecordingLog())
    new_ca = trustme.CA()
    old_client, new_client = issue(pki.ca, cn="old"), issue(new_ca, cn="new")
    async with echo_server(store.context) as server:
        assert await exchange(server.port, pki.client(old_client)) == b"ping\n"
        assert failed(await exchange(server.port, pki.client(new_client)))
        new_ca.cert_pem.write_to_path(str(pki.dir / "ca.tmp"))
        os.replace(pki.dir / "ca.tmp", pki.dir / "ca.pem")
        assert store.check() is True
        assert failed(await exchange(server.port, pki.client(old_client)))
        assert await exchange(server.port, pki.client(new_client)) == b"ping\n"
    assert [p.common_name if p else None for p in server.peers] == ["old", "new"]


async def test_watch_checks_every_reload_interval(pki: Pki) -> None:
    """watch() reloads changed files by itself within a few intervals."""
    log = RecordingLog()
    store = CertStore(pki.config(reload_interval=Duration(0.01)), log=log)
    task = asyncio.ensure_future(store.watch())
    try:
        write_leaf(pki.dir, pki.ca.issue_cert("localhost"))
        await asyncio.wait_for(log.reloaded.wait(), WAIT)
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
    assert store.reloads == 1


# --- identities -----------------------------------------------------------------------------


def test_xfcc_element_quotes_like_envoy() -> None:
    """Hash, quoted Subject, every URI and DNS; values with , ; = or quotes are quoted."""
    identity = PeerIdentity(
        subject='CN=a\\,b,O=say \\"hi\\"',
        uris=(SPIFFE, "urn:x;y"),
        dns=("a.example", "b.example"),
        sha256="ab" * 32,
        common_name="a,b",
    )
    assert identity.xfcc(by="spiffe://cluster.local/ns/default/sa/app") == (
        "By=spiffe://cluster.local/ns/default/sa/app;"
        f"Hash={'ab' * 32};"
        'Subject="CN=a\\\\,b,O=say \\\\\\"hi\\\\\\"";'
        f'URI={SPIFFE};URI="urn:x;y";DNS=a.example;DNS=b.example'
    )
    assert identity.xfcc().startswith("Hash=")
    assert PeerIdentity("CN=x", (), ("d",), "00", "x").principal() == "d"
    assert PeerIdentity("O=only", (), (), "00").principal() == "O=only"


async def test_subject_escaping_is_header_safe(pki: Pki) -> None:
    """RFC 4514 escapes in the subject; non-ASCII and control characters never reach a header."""
    store = CertStore(pki.config(client_ca=str(pki.dir / "ca.pem")), log=RecordingLog())
    tricky = issue(pki.ca, cn='José, "Q"+1\r\nX', uris=("spiffe://td/a b\x7f",))
    async with echo_server(store.context) as server:
        assert await exchange(server.port, pki.client(tricky)) == b"ping\n"
    [identity] = server.peers
    assert identity is not None
    assert identity.subject == 'CN=Jos\\C3\\A9\\, \\"Q\\"\\+1\\0D\\0AX'
    header = identity.xfcc()
    assert header.isascii()
    assert "\r" not in header
    assert "\n" not in header
    assert "URI=spiffe://td/a%20b%7F" in header


def test_peer_identity_of_nothing() -> None:
    """No TLS object means no identity."""
    assert peer_identity(None) is None


# --- upstream TLS ---------------------------------------------------------------------------


async def test_client_context_verifies_the_upstream(pki: Pki) -> None:
    """With the upstream's CA: verified; with system CAs: refused; verify=false: accepted."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    pki.leaf.configure_cert(server_ctx)
    async with echo_server(server_ctx) as server:
        trusted = client_context(UpstreamTLSConfig(ca=str(pki.dir / "ca.pem")))
        assert await exchange(server.port, trusted) == b"ping\n"
        system = client_context(UpstreamTLSConfig())
        result = await exchange(server.port, system)
        assert isinstance(result, ssl.SSLCertVerificationError)
        insecure = client_context(UpstreamTLSConfig(verify=False))
        assert await exchange(server.port, insecure) == b"ping\n"


async def test_client_context_server_name_and_client_certificate(pki: Pki) -> None:
    """server_name overrides the name checked; cert/key present a client certificate (mTLS)."""
    leaf = pki.ca.issue_cert("api.internal")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(server_ctx)
    pki.ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    cert, key = issue(pki.ca, cn="proxy", uris=(SPIFFE,))
    (pki.dir / "up-cert.pem").write_bytes(cert)
    (pki.dir / "up-key.pem").write_bytes(key)
    config = UpstreamTLSConfig(
        ca=str(pki.dir / "ca.pem"),
        server_name="api.internal",
        cert=str(pki.dir / "up-cert.pem"),
        key=str(pki.dir / "up-key.pem"),
    )
    context = client_context(config)
    async with echo_server(server_ctx) as server:
        async with connect(server.port, context, server_hostname(config, "127.0.0.1")) as (r, w):
            assert await ping(r, w) == b"ping\n"
        wrong = UpstreamTLSConfig(ca=str(pki.dir / "ca.pem"))
        with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
            async with connect(server.port, context, server_hostname(wrong, "127.0.0.1")):
                pass
    [peer] = server.peers
    assert peer is not None
    assert peer.principal() == SPIFFE


def test_client_context_bad_files(pki: Pki) -> None:
    """Unreadable or invalid upstream files are one-line errors naming the key."""
    with pytest.raises(ValueError, match=r"^clusters\.api\.tls\.ca: cannot read"):
        client_context(UpstreamTLSConfig(ca=str(pki.dir / "x.pem")), where="clusters.api.tls")
    (pki.dir / "junk.pem").write_text("junk")
    with pytest.raises(ValueError, match=r"^tls\.ca: cannot load .*junk\.pem'"):
        client_context(UpstreamTLSConfig(ca=str(pki.dir / "junk.pem")))
    with pytest.raises(ValueError, match=r"^tls\.cert: cannot load"):
        client_context(
            UpstreamTLSConfig(cert=str(pki.dir / "junk.pem"), key=str(pki.dir / "junk.pem"))
        )


async def test_context_options_and_cipher_list(pki: Pki) -> None:
    """No compression or renegotiation; TLS 1.2 clients get only the configured ciphers."""
    store = CertStore(pki.config(), log=RecordingLog())
    for flag in (ssl.OP_NO_COMPRESSION, ssl.OP_NO_RENEGOTIATION):
        assert store.context.options & flag
    cbc = pki.client()
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA")
    async with echo_server(store.context) as server:
        assert failed(await exchange(server.port, cbc))
    legacy = CertStore(pki.config(ciphers="ECDHE-ECDSA-AES128-SHA"), log=RecordingLog())
    async with echo_server(legacy.context) as server, connect(server.port, cbc) as (r, w):
        assert await ping(r, w) == b"ping\n"
        assert w.get_extra_info("ssl_object").cipher()[0] == "ECDHE-ECDSA-AES128-SHA"


def resumed(port: int, context: ssl.SSLContext) -> bool:
    """Connect twice with a blocking client, offering the first session the second time."""
    session, reused = None, False
    for _ in range(2):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw,
            context.wrap_socket(raw, server_hostname="localhost", session=session) as tls,
        ):
            tls.sendall(b"ping\n")
            assert tls.recv(16) == b"ping\n"  # TLS 1.3 tickets arrive with the first data
            reused, session = bool(tls.session_reused), tls.session
    return reused


async def test_no_session_resumption_with_client_certificates(pki: Pki) -> None:
    """Plain listeners resume sessions; mTLS listeners do not, so a rotated CA is enforced on
    every new connection."""
    plain = CertStore(pki.config(), log=RecordingLog())
    async with echo_server(plain.context) as server:
        assert await asyncio.to_thread(resumed, server.port, pki.client()) is True
    mtls = CertStore(
        pki.config(client_ca=str(pki.dir / "ca.pem"), client_auth="permissive"),
        log=RecordingLog(),
    )
    client = pki.client(issue(pki.ca, cn="web"))
    async with echo_server(mtls.context) as server:
        assert await asyncio.to_thread(resumed, server.port, client) is False
