"""``[plugins.logs.outputs.<name>]``: one table per output, a union tagged by ``type``.

Every table has the delivery keys (batching, retries, buffer, spool, timeout) of
:class:`DeliveryFields`; HTTP outputs add :class:`HttpFields` (URL, headers, auth, gzip, TLS,
proxy); each kind adds its own. Checks are pure: a bad table is a one-line error naming its key.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from sidecar_runtime import Duration

__all__ = [
    "DeliveryFields",
    "ElasticsearchConfig",
    "FileConfig",
    "FluentdForwardConfig",
    "FluentdHttpConfig",
    "HttpConfig",
    "HttpFields",
    "LokiConfig",
    "OutputConfig",
    "StderrConfig",
    "StdoutConfig",
]

MiB = 1024 * 1024
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_LABEL_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ES_BAD = set('\\/*?"<>|, #:')


def check_url(key: str, url: str, example: str) -> None:
    """``url`` is an absolute http(s) URL with a host; ValueError naming ``key`` otherwise."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as err:
        msg = f"{key}: invalid URL {url!r}: {err}"
        raise ValueError(msg) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        msg = f"{key}: expected a URL like {example!r}, got {url!r}"
        raise ValueError(msg)


def check_tag(tag: str) -> None:
    """A Fluentd tag: letters, digits, ``_``, ``.`` and ``-``."""
    if not _TAG_RE.fullmatch(tag):
        msg = f"tag: use letters, digits, '_', '.' and '-' (like 'app.logs'), got {tag!r}"
        raise ValueError(msg)


def _check_tls(ca_file: str | None, cert_file: str | None, key_file: str | None) -> None:
    for key, value in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)):
        if value is not None and not value:
            msg = f"{key}: expected a file path, got ''"
            raise ValueError(msg)
    if key_file is not None and cert_file is None:
        msg = "key_file: needs cert_file (the client certificate it belongs to)"
        raise ValueError(msg)


def _check_auth(username: str | None, password: str | None, token: str | None) -> None:
    if username is not None and (not username or ":" in username):
        msg = f"username: must be non-empty and without ':', got {username!r}"
        raise ValueError(msg)
    if password is not None and username is None:
        msg = "password: needs username"
        raise ValueError(msg)
    if username is not None and token is not None:
        msg = "bearer_token: use either username/password or bearer_token, not both"
        raise ValueError(msg)


class DeliveryFields(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag_field="type"
):
    """The keys every output has: batching, retries, buffer and spool, and the send timeout."""

    batch_max_records: Positive = 1000
    batch_max_bytes: Positive = MiB
    batch_timeout: Duration = Duration(1.0)
    retry_initial: Duration = Duration(0.5)
    retry_max: Duration = Duration(30.0)
    max_retries: NonNegative | None = None
    buffer_max_bytes: NonNegative = 8 * MiB
    spool_max_bytes: NonNegative = 256 * MiB
    timeout: Duration = Duration(10.0)

    @property
    def type(self) -> str:
        """The table's ``type``: ``stdout``, ``file``, ``loki``, ..."""
        return str(self.__struct_config__.tag)

    def __post_init__(self) -> None:
        if self.batch_timeout < 0:
            msg = f"batch_timeout: must be >= 0, got {self.batch_timeout}"
            raise ValueError(msg)
        if self.retry_initial <= 0:
            msg = f"retry_initial: must be more than 0, got {self.retry_initial}"
            raise ValueError(msg)
        if self.retry_max < self.retry_initial:
            msg = (
                f"retry_max: must be >= retry_initial ({self.retry_initial}s), "
                f"got {self.retry_max}s"
            )
            raise ValueError(msg)
        if self.timeout <= 0:
            msg = f"timeout: must be more than 0, got {self.timeout}"
            raise ValueError(msg)


class StdoutConfig(
    DeliveryFields, tag="stdout", frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """JSON lines on sidecar-run's own stdout."""


class StderrConfig(
    DeliveryFields, tag="stderr", frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """JSON lines on sidecar-run's own stderr."""


class FileConfig(DeliveryFields, tag="file", frozen=True, forbid_unknown_fields=True, kw_only=True):
    """JSON lines appended to ``path``, rotated by size like ``RotatingFileHandler``."""

    path: str
    max_bytes: NonNegative = 100 * MiB
    max_files: NonNegative = 5
    fsync: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.path or self.path.endswith("/") or "\0" in self.path:
            msg = f"path: expected a file path like '/var/log/app.jsonl', got {self.path!r}"
            raise ValueError(msg)


class HttpFields(DeliveryFields, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The keys of every HTTP output: where, extra headers, auth, compression, TLS, proxy."""

    url: str
    headers: dict[str, str] = {}
    username: str | None = None
    password: str | None = None
    bearer_token: str | None = None
    gzip: bool = False
    tls_verify: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    proxy: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_url("url", self.url, "https://logs.example.com/ingest")
        for name, value in self.headers.items():
            if not name or any(c in name for c in ":\r\n \t") or "\n" in value or "\r" in value:
                msg = f"headers: invalid header {name!r}: {value!r}"
                raise ValueError(msg)
        _check_auth(self.username, self.password, self.bearer_token)
        _check_tls(self.ca_file, self.cert_file, self.key_file)
        if self.proxy is not None:
            check_url("proxy", self.proxy, "http://proxy.example.com:3128")


class HttpConfig(HttpFields, tag="http", frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Any HTTP endpoint: a JSON array (``json``) or JSON lines (``ndjson``) per batch."""

    format: Literal["json", "ndjson"] = "json"
    method: Literal["POST", "PUT"] = "POST"


class LokiConfig(HttpFields, tag="loki", frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Grafana Loki's push API (``/loki/api/v1/push`` when ``url`` has no path)."""

    labels: dict[str, str] = msgspec.field(default_factory=lambda: {"job": "sidecar-run"})
    label_keys: list[str] = []
    remove_label_keys: bool = False
    structured_metadata_keys: list[str] = []
    line_format: Literal["json", "message"] = "json"
    tenant_id: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in self.labels:
            if not _LABEL_RE.fullmatch(name):
                msg = f"labels: invalid Loki label name {name!r} (use [A-Za-z_][A-Za-z0-9_]*)"
                raise ValueError(msg)
        for key in (*self.label_keys, *self.structured_metadata_keys):
            if not key:
                msg = "label_keys: record field names must not be empty"
                raise ValueError(msg)
        if not self.labels and not self.label_keys:
            msg = "labels: Loki needs at least one label (e.g. {job = 'app'}) or label_keys"
            raise ValueError(msg)
        if self.tenant_id is not None and (not self.tenant_id or "\n" in self.tenant_id):
            msg = f"tenant_id: expected a tenant name, got {self.tenant_id!r}"
            raise ValueError(msg)


class ElasticsearchConfig(
    HttpFields, tag="elasticsearch", frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """The Elasticsearch/OpenSearch bulk API; ``index`` takes strftime codes of the record time."""

    index: str = "logs-%Y.%m.%d"
    action: Literal["create", "index"] = "create"
    pipeline: str | None = None
    timestamp_field: str | None = "@timestamp"
    api_key: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        literal = re.sub(r"%.", "", self.index)
        bad = sorted(_ES_BAD & set(literal))
        if (
            not self.index
            or bad
            or literal != literal.lower()
            or self.index[0] in "-_+"
            or self.index in (".", "..")
        ):
            msg = (
                f"index: Elasticsearch index names are lowercase, without spaces or "
                f"{''.join(sorted(_ES_BAD - {' '}))}, and do not start with -, _ or +; "
                f"got {self.index!r}"
            )
            raise ValueError(msg)
        if self.api_key is not None and (self.username or self.bearer_token):
            msg = "api_key: use either api_key, username/password or bearer_token"
            raise ValueError(msg)
        if self.timestamp_field == "":
            msg = "timestamp_field: expected a field name (or leave it out), got ''"
            raise ValueError(msg)


class FluentdHttpConfig(
    HttpFields, tag="fluentd_http", frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """Fluentd's ``in_http``: a JSON array per batch, POSTed to ``<url>/<tag>``."""

    tag: str = "sidecar"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_tag(self.tag)


class FluentdForwardConfig(
    DeliveryFields, tag="fluentd_forward", frozen=True, forbid_unknown_fields=True, kw_only=True
):
    """Fluentd's forward protocol over TCP (or TLS), with acks and shared-key auth."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 24224
    tag: str = "sidecar"
    mode: Literal["packed", "forward", "compressed"] = "packed"
    require_ack: bool = True
    time_format: Literal["event_time", "integer"] = "event_time"
    shared_key: str | None = None
    self_hostname: str | None = None
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_verify: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.host or any(c in self.host for c in "/ \t\r\n"):
            msg = f"host: expected a host name or IP address, got {self.host!r}"
            raise ValueError(msg)
        check_tag(self.tag)
        _check_auth(self.username, self.password, None)
        if self.username is not None and self.shared_key is None:
            msg = "username: user authentication needs shared_key too (forward protocol)"
            raise ValueError(msg)
        if self.shared_key == "":
            msg = "shared_key: must not be empty"
            raise ValueError(msg)
        _check_tls(self.ca_file, self.cert_file, self.key_file)
        if not self.tls and (self.ca_file or self.cert_file or not self.tls_verify):
            msg = "tls: ca_file, cert_file and tls_verify need tls = true"
            raise ValueError(msg)


OutputConfig = (
    StdoutConfig
    | StderrConfig
    | FileConfig
    | HttpConfig
    | LokiConfig
    | ElasticsearchConfig
    | FluentdHttpConfig
    | FluentdForwardConfig
)
