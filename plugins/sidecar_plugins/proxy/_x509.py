"""Facts read from certificates: PEM files, a leaf's serial and expiry, a verified peer's identity.

A minimal DER walk gives the serial number and ``notAfter`` of a certificate (for logs, the
expiry warning and metrics) without a crypto library. :class:`PeerIdentity` is who a verified
mTLS client is: its subject (RFC 4514), SAN URIs (SPIFFE IDs) and DNS names and the SHA-256 of
its certificate, as the access log's principal and Envoy's ``x-forwarded-client-cert`` element.
"""

from __future__ import annotations

import calendar
import hashlib
import ssl
import time
from dataclasses import dataclass

__all__ = ["PeerIdentity", "peer_identity"]


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


def _refuse_password() -> bytes:
    msg = "the private key is encrypted"
    raise ValueError(msg)


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
