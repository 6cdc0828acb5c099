"""Upstream TLS (origination): how the proxy verifies a TLS upstream and what it presents.

Only TLS 1.2+ is offered, with ALPN ``http/1.1``, without compression or renegotiation. The
upstream's certificate is checked against ``ca`` (else the system's trust store) and the SNI
name (``server_name``, else the endpoint's host); ``cert`` and ``key`` give a client certificate
for upstreams that require mTLS.
"""

from __future__ import annotations

import ssl

import msgspec

from ._tls import _ALPN
from ._x509 import _read, _refuse_password

__all__ = ["UpstreamTLSConfig", "client_context", "server_hostname"]


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
