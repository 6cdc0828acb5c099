"""``[plugins.metrics]``: where ``/metrics`` is served, what it collects, what it merges.

Decoded strictly by the plugin loader. Everything is checked here, before anything starts: a bad
label name, a bad URL or two app endpoints with the same name are config errors (exit 2) that
name the key, never a scrape-time surprise.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import msgspec

from sidecar_runtime import Duration, parse_address

__all__ = [
    "AppMetricsEndpoint",
    "CollectorsConfig",
    "MetricsConfig",
    "Source",
]

_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PREFIX = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
#: Label names a constant label must not take: they carry meaning in every series that has them.
_RESERVED_LABELS = frozenset({"le", "quantile"})


class AppMetricsEndpoint(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One of the app's own Prometheus endpoints, merged into ``/metrics``."""

    url: str
    name: str | None = None
    prefix: str | None = None
    timeout: Duration = Duration(3.0)
    max_bytes: int = 4 << 20

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            msg = f"url: expected an http:// or https:// URL with a host, got {self.url!r}"
            raise ValueError(msg)
        if self.name is not None and not _LABEL.fullmatch(self.name):
            msg = f"name: expected letters, digits and '_' (not first a digit), got {self.name!r}"
            raise ValueError(msg)
        if self.prefix and not _PREFIX.fullmatch(self.prefix):
            msg = f"prefix: expected a metric name prefix such as 'app_', got {self.prefix!r}"
            raise ValueError(msg)
        if not 0 < self.timeout <= 600:
            msg = f"timeout must be within 0..10m, got {self.timeout:g}s"
            raise ValueError(msg)
        if self.max_bytes < 1:
            msg = f"max_bytes must be >= 1, got {self.max_bytes}"
            raise ValueError(msg)


class CollectorsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Collector groups, each on or off (see the metrics reference for their series)."""

    app: bool = True
    app_tree: bool = True
    app_pss_uss: bool = False
    runtime: bool = True
    process: bool = True
    python: bool = True


class Source(msgspec.Struct, frozen=True):
    """An app endpoint with its name and prefix resolved."""

    name: str
    prefix: str
    url: str
    timeout: float
    max_bytes: int


class MetricsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[plugins.metrics]``."""

    listen: str | None = None
    path: str = "/metrics"
    const_labels: dict[str, str] = {}
    collectors: CollectorsConfig = CollectorsConfig()
    app_metrics: list[AppMetricsEndpoint] = []

    def __post_init__(self) -> None:
        if self.listen is not None:
            parse_address(self.listen)
        if not self.path.startswith("/"):
            msg = f"path must start with '/', got {self.path!r}"
            raise ValueError(msg)
        for label in self.const_labels:
            if not _LABEL.fullmatch(label) or label.startswith("__"):
                msg = (
                    f"const_labels: {label!r} is not a label name (letters, digits, '_'; "
                    "not starting with a digit or '__')"
                )
                raise ValueError(msg)
            if label in _RESERVED_LABELS:
                msg = f"const_labels: {label!r} is reserved for histograms and summaries"
                raise ValueError(msg)
        names = [s.name for s in self.sources()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            msg = f"app_metrics: two endpoints are named {duplicates[0]!r}; give each a `name`"
            raise ValueError(msg)

    def warnings(self) -> list[str]:
        """Valid but risky settings, for ``sidecar-run check``."""
        found = []
        urls: dict[str, str] = {}
        for source in self.sources():
            where = f"app_metrics {source.name!r}"
            if source.url in urls:
                found.append(f"{where}: same url as {urls[source.url]!r}; it is fetched twice")
            urls.setdefault(source.url, source.name)
            if source.prefix == "" and self.collectors.process:
                found.append(
                    f"{where}: prefix is empty, so the app's own process_* series (most client "
                    "libraries have them) collide with sidecar-run's and are left out; set a "
                    "prefix or collectors.process = false"
                )
            if source.timeout >= 10:
                found.append(
                    f"{where}: timeout {source.timeout:g}s is not below Prometheus's default "
                    "scrape_timeout (10s); the scraper's own timeout caps it"
                )
        return found

    def sources(self) -> list[Source]:
        """The app endpoints with defaults filled in: the first is named ``app``, the next
        ``app2``, ``app3``...; the prefix defaults to the name and ``_``."""
        found = []
        for index, entry in enumerate(self.app_metrics):
            name = entry.name or ("app" if index == 0 else f"app{index + 1}")
            prefix = f"{name}_" if entry.prefix is None else entry.prefix
            found.append(Source(name, prefix, entry.url, float(entry.timeout), entry.max_bytes))
        return found
