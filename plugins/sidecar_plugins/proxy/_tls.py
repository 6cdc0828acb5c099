"""TLS for the proxy: listener contexts with mTLS and hot reload, peer identities, upstream TLS.

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

import calendar
import hashlib
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import msgspec

from sidecar_runtime import Duration

__all__ = [
    "MOZILLA_INTERMEDIATE_CIPHERS",
    "CertStore",
    "PeerIdentity",
    "ServerTLSConfig",
    "UpstreamTLSConfig",
    "client_context",
    "peer_identity",
]

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


class UpstreamTLSConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``tls`` of an upstream: how the proxy verifies it and, for mTLS, what it presents."""

    ca: str | None = None
    verify: bool = True
    server_name: str | None = None
    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            given, missing = ("cert", "key") if self.key is None else ("key", "cert")
            msg = f"{missing}: needed with {given} (a client certificate needs both)"
            raise ValueError(msg)
        for name in ("ca", "cert", "key"):
            if getattr(self, name) == "":
                msg = f"{name}: expected a path to a PEM file, got ''"
                raise ValueError(msg)
        sni = self.server_name
        if sni is not None and (not sni or any(c.isspace() or c in "/:" for c in sni)):
            msg = f"server_name: expected a host name like 'api.example.com', got {sni!r}"
            raise ValueError(msg)


# --- certificates on disk -------------------------------------------------------------------


def _read(path: str, field: str, where: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as err:
        msg = f"{where}.{field}: cannot read {path!r}: {err.strerror or err}"
        raise ValueError(msg) from None


def _der_item(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER item at ``pos``."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        msg = "truncated DER"
        raise ValueError(msg)
    return tag, pos, pos + length


def _cert_facts(der: bytes) -> tuple[int, float]:
    """(serial number, notAfter as a POSIX timestamp) of a DER X.509 certificate."""
    _, start, _ = _der_item(der, 0)  # Certificate
    _, pos, _ = _der_item(der, start)  # TBSCertificate
    tag, start, end = _der_item(der, pos)
    if tag == 0xA0:  # [0] EXPLICIT version
        tag, start, end = _der_item(der, end)
    if tag != 0x02:
        msg = "not an X.509 certificate"
        raise ValueError(msg)
    serial = int.from_bytes(der[start:end], "big", signed=True)
    _, _, end = _der_item(der, end)  # signature algorithm
    _, _, end = _der_item(der, end)  # issuer
    _, start, _ = _der_item(der, end)  # validity
    _, _, end = _der_item(der, start)  # notBefore
    tag, start, end = _der_item(der, end)  # notAfter
    text = der[start:end].decode("ascii").rstrip("Z")
    if tag == 0x17:  # UTCTime, two-digit year (RFC 5280: 50..99 means 19xx)
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime
        msg = "not an X.509 certificate"
        raise ValueError(msg)
    moment = time.strptime(text[:14], "%Y%m%d%H%M%S")
    return serial, float(calendar.timegm(moment))


def _first_cert_der(pem: bytes) -> bytes:
    """The DER bytes of the first certificate (the leaf) in a PEM file."""
    text = pem.decode("ascii", "replace")
    begin = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----", begin)
    if begin < 0 or end < 0:
        msg = "no PEM certificate found"
        raise ValueError(msg)
    return ssl.PEM_cert_to_DER_cert(text[begin : end + len("-----END CERTIFICATE-----")])


@dataclass(frozen=True)
class _Built:
    context: ssl.SSLContext
    serial: int
    not_after: float
    sha256: str


def _refuse_password() -> bytes:
    msg = "the private key is encrypted"
    raise ValueError(msg)


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


# --- peer identities ------------------------------------------------------------------------

_SHORT_NAMES = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def _rdn_escape(value: str) -> str:
    """RFC 4514 escaping; bytes outside printable ASCII as ``\\XX`` (header-safe)."""
    out = []
    for index, char in enumerate(value):
        if char in ',+"\\<>;=' or (
            (char in " #" and index == 0) or (char == " " and index == len(value) - 1)
        ):
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        else:
            out.extend(f"\\{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def _ascii(value: str) -> str:
    """Percent-encode what is not visible ASCII (SAN values are ASCII in practice)."""
    return "".join(
        char if "!" <= char <= "~" else "".join(f"%{b:02X}" for b in char.encode("utf-8"))
        for char in value
    )


def _xfcc_value(value: str, *, quote: bool = False) -> str:
    if quote or any(c in value for c in ',;="'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


@dataclass(frozen=True)
class PeerIdentity:
    """Who is on the other end of a verified mTLS connection."""

    subject: str
    uris: tuple[str, ...]
    dns: tuple[str, ...]
    sha256: str
    common_name: str = ""

    def principal(self) -> str:
        """The first SAN URI (a SPIFFE ID), else the first DNS name, else the CN."""
        if self.uris:
            return self.uris[0]
        if self.dns:
            return self.dns[0]
        return self.common_name or self.subject

    def xfcc(self, by: str | None = None) -> str:
        """One element of Envoy's ``x-forwarded-client-cert`` header."""
        parts = [] if by is None else [f"By={_xfcc_value(_ascii(by))}"]
        parts.append(f"Hash={self.sha256}")
        parts.append(f"Subject={_xfcc_value(self.subject, quote=True)}")
        parts.extend(f"URI={_xfcc_value(_ascii(uri))}" for uri in self.uris)
        parts.extend(f"DNS={_xfcc_value(_ascii(name))}" for name in self.dns)
        return ";".join(parts)


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> PeerIdentity | None:
    """The verified client certificate's identity, or None (no TLS, no cert, not verified)."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    info = ssl_object.getpeercert()
    if not der or not info:
        return None
    rdns = []
    common_name = ""
    for rdn in reversed(info.get("subject", ())):
        names = []
        for key, value in rdn:
            if key == "commonName" and not common_name:
                common_name = value
            names.append(f"{_SHORT_NAMES.get(key, key)}={_rdn_escape(value)}")
        rdns.append("+".join(names))
    uris: list[str] = []
    dns: list[str] = []
    for item in info.get("subjectAltName", ()):
        if isinstance(item, tuple) and item[0] in ("URI", "DNS"):
            (uris if item[0] == "URI" else dns).append(str(item[1]))
    return PeerIdentity(
        subject=",".join(rdns),
        uris=tuple(uris),
        dns=tuple(dns),
        sha256=hashlib.sha256(der).hexdigest(),
        common_name=common_name,
    )


# --- upstream (client) side -----------------------------------------------------------------


def client_context(config: UpstreamTLSConfig, *, where: str = "tls") -> ssl.SSLContext:
    """An ``ssl.SSLContext`` for connecting to a TLS upstream (TLS 1.2+, ALPN ``http/1.1``)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(_ALPN)
    if config.verify:
        if config.ca is not None:
            ca_pem = _read(config.ca, "ca", where)
            try:
                context.load_verify_locations(cadata=ca_pem.decode("ascii"))
            except (ssl.SSLError, UnicodeDecodeError, ValueError) as err:
                msg = f"{where}.ca: cannot load {config.ca!r}: {err}"
                raise ValueError(msg) from None
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if config.cert is not None and config.key is not None:
        _read(config.cert, "cert", where)
        _read(config.key, "key", where)
        try:
            context.load_cert_chain(config.cert, config.key, password=_refuse_password)
        except (ssl.SSLError, ValueError) as err:
            msg = f"{where}.cert: cannot load {config.cert!r} with key {config.key!r}: {err}"
            raise ValueError(msg) from None
    return context


def server_hostname(config: UpstreamTLSConfig, host: str) -> str:
    """The name to send as SNI and to check the certificate against."""
    return config.server_name or host
