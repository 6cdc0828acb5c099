"""Listener TLS: the server certificate store, with mTLS and hot reload.

A listener's :class:`CertStore` builds one ``ssl.SSLContext`` that is handed to
``loop.create_server`` once and never replaced. Reloading builds a complete new context from the
files (certificate chain, key, client CA) and the listener context's ``sni_callback``, which
OpenSSL calls on every ClientHello (with ``server_name=None`` when the client sent no SNI),
switches each new handshake to it. Connections already established keep the context they were
made with, so a reload never drops one; a reload that fails keeps the old certificates.

Client authentication follows Istio's PeerAuthentication modes: ``strict`` requires a client
certificate signed by ``client_ca``; ``permissive`` verifies one when it is presented (an invalid
one fails the handshake) and accepts clients without one; ``none`` asks for none. With client
authentication, TLS session resumption is off, so that a replaced ``client_ca`` is enforced on
every new connection (resumption would skip verification). Only TLS 1.2+ is offered, with ALPN
``http/1.1``, without compression or renegotiation.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import msgspec

from sidecar_runtime import Duration

from ._x509 import _cert_facts, _first_cert_der, _read, _refuse_password

__all__ = ["MOZILLA_INTERMEDIATE_CIPHERS", "CertStore", "ServerTLSConfig"]

#: Mozilla's "intermediate" TLS 1.2 cipher list (TLS 1.3 suites are always on and not listed).
MOZILLA_INTERMEDIATE_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)
_ALPN = ["http/1.1"]
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
_VERIFY = {"none": ssl.CERT_NONE, "permissive": ssl.CERT_OPTIONAL, "strict": ssl.CERT_REQUIRED}
_OPTIONS = (
    ssl.OP_NO_COMPRESSION
    | ssl.OP_NO_RENEGOTIATION
    | ssl.OP_CIPHER_SERVER_PREFERENCE
    | ssl.OP_SINGLE_DH_USE
    | ssl.OP_SINGLE_ECDH_USE
)


def _check_ciphers(ciphers: str) -> None:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
    except ssl.SSLError:
        msg = f"ciphers: no cipher matches {ciphers!r} (use OpenSSL cipher list syntax)"
        raise ValueError(msg) from None


class ServerTLSConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``tls`` of a listener: its certificate and key, and optionally client certificates."""

    cert: str
    key: str
    client_ca: str | None = None
    client_auth: Literal["none", "permissive", "strict"] | None = None
    min_version: Literal["1.2", "1.3"] = "1.2"
    ciphers: str = MOZILLA_INTERMEDIATE_CIPHERS
    reload_interval: Duration = Duration(5.0)

    def __post_init__(self) -> None:
        for name in ("cert", "key", "client_ca"):
            value = getattr(self, name)
            if value is not None and not value:
                msg = f"{name}: expected a path to a PEM file, got ''"
                raise ValueError(msg)
        if self.client_auth is None:
            mode = "strict" if self.client_ca is not None else "none"
            msgspec.structs.force_setattr(self, "client_auth", mode)
        elif self.client_auth != "none" and self.client_ca is None:
            msg = f"client_auth: {self.client_auth!r} needs client_ca (the CA that signs clients)"
            raise ValueError(msg)
        if self.min_version not in _VERSIONS:
            msg = f"min_version: expected '1.2' or '1.3', got {self.min_version!r}"
            raise ValueError(msg)
        _check_ciphers(self.ciphers)
        if not self.reload_interval >= 0:
            msg = f"reload_interval: must be 0 (off) or more, got {self.reload_interval!r}"
            raise ValueError(msg)


@dataclass(frozen=True)
class _Built:
    context: ssl.SSLContext
    serial: int
    not_after: float
    sha256: str


def _build(config: ServerTLSConfig, where: str) -> _Built:
    """A complete server context from the files; ValueError naming the key on any problem."""
    cert_pem = _read(config.cert, "cert", where)
    try:
        der = _first_cert_der(cert_pem)
        serial, not_after = _cert_facts(der)
    except (ValueError, IndexError) as err:
        msg = f"{where}.cert: cannot load {config.cert!r}: {err}"
        raise ValueError(msg) from None
    key_pem = _read(config.key, "key", where)
    if b"PRIVATE KEY-----" not in key_pem:
        msg = f"{where}.key: cannot load {config.key!r}: no PEM private key found"
        raise ValueError(msg)
    if b"ENCRYPTED" in key_pem:
        msg = f"{where}.key: cannot load {config.key!r}: encrypted keys are not supported"
        raise ValueError(msg)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[config.min_version]
    context.options |= _OPTIONS
    context.set_ciphers(config.ciphers)
    context.set_alpn_protocols(_ALPN)
    try:
        context.load_cert_chain(config.cert, config.key, password=_refuse_password)
    except ssl.SSLError as err:
        if "KEY_VALUES_MISMATCH" in str(err) or err.reason == "KEY_VALUES_MISMATCH":
            msg = f"{where}.key: {config.key!r} does not match the certificate in {config.cert!r}"
        else:
            msg = f"{where}.cert: cannot load {config.cert!r} with key {config.key!r}: {err}"
        raise ValueError(msg) from None
    except (OSError, ValueError) as err:
        msg = f"{where}.key: cannot load {config.key!r}: {err}"
        raise ValueError(msg) from None
    if config.client_ca is not None:
        ca_pem = _read(config.client_ca, "client_ca", where)
        try:
            context.load_verify_locations(cadata=ca_pem.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as err:
            msg = f"{where}.client_ca: cannot load {config.client_ca!r}: {err}"
            raise ValueError(msg) from None
    context.verify_mode = _VERIFY[config.client_auth or "none"]
    if context.verify_mode != ssl.CERT_NONE:
        # A resumed session skips certificate verification, and its tickets outlive a reload:
        # without resumption a replaced client_ca applies to every new connection.
        context.options |= ssl.OP_NO_TICKET
        context.num_tickets = 0
    return _Built(context, serial, not_after, hashlib.sha256(der).hexdigest())


def _file_signature(path: str) -> tuple[int, int, int, int] | str:
    try:
        st = os.stat(path)  # follows symlinks: a Kubernetes ..data swap changes the inode
    except OSError as err:
        return err.strerror or "unreadable"
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class CertStore:
    """The live certificates of one TLS listener; :attr:`context` goes to ``create_server``."""

    #: Attempts to read a consistent set of files while they are being replaced.
    READ_ATTEMPTS = 3

    def __init__(self, config: ServerTLSConfig, *, log: Any, where: str = "tls") -> None:
        self.config = config
        self.log = log
        self.where = where
        self._paths = [p for p in (config.cert, config.key, config.client_ca) if p is not None]
        self._seen = self._signature()
        built = _build(config, where)
        self.context: ssl.SSLContext = built.context
        self.context.sni_callback = self._select
        self._active = built.context
        self.reloads = 0
        self.reload_errors = 0
        self.not_after = built.not_after
        self.serial = built.serial
        self.sha256 = built.sha256
        if built.not_after < time.time():
            log.warning("tls_certificate_expired", cert=config.cert, not_after=built.not_after)

    def _signature(self) -> tuple[object, ...]:
        return tuple(_file_signature(path) for path in self._paths)

    def _select(
        self, ssl_object: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: Any
    ) -> None:
        """OpenSSL's ClientHello hook: move the handshake to the newest context."""
        active = self._active
        if ssl_object.context is not active:
            ssl_object.context = active

    def reload(self) -> bool:
        """Re-read the files now; on error keep the old certificates and return False."""
        error = "the files kept changing while being read"
        for _ in range(self.READ_ATTEMPTS):
            before = self._signature()
            try:
                built = _build(self.config, self.where)
            except ValueError as err:
                if self._signature() != before:
                    continue
                self._seen = before
                error = str(err)
                break
            if self._signature() != before:
                continue
            self._seen = before
            self._active = built.context
            self.not_after = built.not_after
            self.serial = built.serial
            self.sha256 = built.sha256
            self.reloads += 1
            self.log.info(
                "tls_reloaded",
                cert=self.config.cert,
                serial=f"{built.serial:x}",
                sha256=built.sha256,
                not_after=built.not_after,
            )
            return True
        self.reload_errors += 1
        self.log.error("tls_reload_failed", cert=self.config.cert, error=error)
        return False

    def check(self) -> bool:
        """Reload when a file's (device, inode, mtime, size) changed; True when reloaded."""
        if self._signature() == self._seen:
            return False
        return self.reload()

    async def watch(self) -> None:
        """Call :meth:`check` every ``reload_interval`` until cancelled (0: never)."""
        interval = self.config.reload_interval
        if interval <= 0:
            await anyio.sleep_forever()
        while True:
            await anyio.sleep(interval)
            self.check()
