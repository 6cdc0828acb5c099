"""One aiohttp client per HTTP output, and the status policy every HTTP output shares.

2xx is accepted. 408, 429 and 5xx raise :class:`RetryLater` (with ``Retry-After`` in seconds
or as an HTTP date); any other status (3xx, 4xx) raises :class:`Rejected`: the batch is counted
as rejected and never retried, so a checkpoint cannot stall on it. Connection errors and a
response slower than ``timeout`` are retryable. No proxy from the environment (``proxy`` sets
one); redirects are not followed (a POST cannot be redirected safely).
"""

from __future__ import annotations

import base64
import email.utils
import gzip
import ssl
import time
from collections.abc import Mapping
from datetime import UTC
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import anyio

from ._base import Rejected, RetryLater
from ._config import HttpFields

if TYPE_CHECKING:
    import aiohttp

__all__ = ["HttpTransport", "client_ssl_context", "parse_retry_after", "redact_url"]

#: Responses are read up to this many bytes (bulk replies are filtered to stay small).
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: Bodies larger than this are gzipped in a worker thread.
_THREAD_GZIP_BYTES = 128 * 1024


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: ``"120"`` or an HTTP date; ``None`` if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def redact_url(url: str) -> str:
    """``url`` without credentials, query or fragment, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def client_ssl_context(
    *, ca_file: str | None, cert_file: str | None, key_file: str | None, verify: bool
) -> ssl.SSLContext:
    """A client TLS context; unreadable files raise :class:`RetryLater` (kind ``tls_files``)."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
        if cert_file:
            context.load_cert_chain(cert_file, key_file)
    except (OSError, ValueError) as err:
        msg = f"cannot load the TLS files (ca_file/cert_file/key_file): {err}"
        raise RetryLater(msg, kind="tls_files") from None
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _snippet(body: bytes) -> str:
    text = " ".join(body[:300].decode("utf-8", "replace").split())
    return text[:200] or "(empty body)"


class HttpTransport:
    """POSTs bodies for one output; raises :class:`RetryLater` / :class:`Rejected` by status."""

    def __init__(self, config: HttpFields, *, extra_headers: Mapping[str, str] | None = None):
        self.config = config
        self.bytes_sent = 0
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | bool | None = None
        headers = {"User-Agent": "sidecar-run", **(extra_headers or {}), **config.headers}
        if config.username is not None:
            pair = f"{config.username}:{config.password or ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        elif config.bearer_token is not None:
            headers["Authorization"] = f"Bearer {config.bearer_token}"
        if config.gzip:
            headers["Content-Encoding"] = "gzip"
        self._headers = headers

    async def open(self) -> None:
        """Create the client session (idempotent); TLS files are loaded on the first send."""
        if self._session is not None:
            return
        import aiohttp

        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None),
            trust_env=False,
            connector=aiohttp.TCPConnector(limit=4),
        )

    async def close(self) -> None:
        """Close the session and its connections (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            with anyio.CancelScope(shield=True):
                await session.close()

    def _ssl_context(self) -> ssl.SSLContext | bool:
        if self._ssl is None:
            config = self.config
            if config.ca_file or config.cert_file or not config.tls_verify:
                self._ssl = client_ssl_context(
                    ca_file=config.ca_file,
                    cert_file=config.cert_file,
                    key_file=config.key_file,
                    verify=config.tls_verify,
                )
            else:
                self._ssl = True
        return self._ssl

    async def post(
        self,
        url: str,
        body: bytes,
        *,
        content_type: str,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        method: str = "POST",
    ) -> bytes:
        """Send ``body``; the response body of a 2xx, else :class:`RetryLater`/:class:`Rejected`."""
        import aiohttp

        await self.open()
        assert self._session is not None
        ssl_context = self._ssl_context()
        if self.config.gzip:
            if len(body) > _THREAD_GZIP_BYTES:
                body = await anyio.to_thread.run_sync(gzip.compress, body)
            else:
                body = gzip.compress(body)
        all_headers = {**self._headers, "Content-Type": content_type, **(headers or {})}
        where = redact_url(url)
        timeout = self.config.timeout
        try:
            with anyio.fail_after(timeout):
                async with self._session.request(
                    method,
                    url,
                    data=body,
                    headers=all_headers,
                    params=params,
                    allow_redirects=False,
                    ssl=ssl_context,
                    proxy=self.config.proxy,
                ) as response:
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
                    payload = await _read(response)
        except TimeoutError:
            msg = f"no response from {where} within {timeout:g}s"
            raise RetryLater(msg, kind="timeout") from None
        except aiohttp.ClientConnectorCertificateError as err:
            msg = f"TLS verification failed for {where}: {err.certificate_error}"
            raise RetryLater(msg, kind="tls") from None
        except (aiohttp.ClientError, OSError) as err:
            detail = str(err) or type(err).__name__
            msg = f"cannot reach {where}: {detail}"
            raise RetryLater(msg, kind="connect") from None
        if 200 <= status < 300:
            self.bytes_sent += len(body)
            return payload
        msg = f"HTTP {status} from {where}: {_snippet(payload)}"
        if status in (408, 429) or status >= 500:
            raise RetryLater(msg, kind=f"http_{status}", retry_after=parse_retry_after(retry_after))
        raise Rejected(msg, kind=f"http_{status}")


async def _read(response: Any) -> bytes:
    """The response body, at most :data:`MAX_RESPONSE_BYTES`."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        chunks.append(chunk)
        size += len(chunk)
        if size >= MAX_RESPONSE_BYTES:
            break
    return b"".join(chunks)
