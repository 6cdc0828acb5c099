"""Merging the app's own Prometheus endpoints into ``/metrics``.

Each scrape of ``/metrics`` fetches every configured endpoint concurrently, each bounded by its
timeout (and by the scraper's own, from ``X-Prometheus-Scrape-Timeout-Seconds``). A body is read
up to ``max_bytes`` (after gzip decoding, so a small compressed body cannot blow up), parsed by
its content type (OpenMetrics, else the text format), and merged under collision-safe names:

1. every family of endpoint ``name`` is renamed ``<prefix><family>`` (``prefix`` defaults to
   ``<name>_``, so the first endpoint's ``http_requests_total`` becomes
   ``app_http_requests_total``); labels, values and timestamps are kept;
2. a family that does not follow its type's sample naming (a ``counter`` without ``_total``, a
   bucket without ``le``) is split into ``unknown`` families, one per sample name, so the output
   stays valid OpenMetrics;
3. a family whose name, or one of its series names, is already exposed (by sidecar-run, another
   plugin, or an earlier endpoint or family) is left out and counted, never merged into the
   other: that is how merged output breaks elsewhere. Malformed names are left out too.

A failure (timeout, connection, HTTP status, oversized body, unparsable text) leaves that
endpoint out of this scrape with ``sidecar_app_metrics_up{source} 0``; the rest of ``/metrics``
is served as usual. Failures are logged when an endpoint starts failing or fails differently,
and when it recovers, not on every scrape.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio

from ._catalog import by_name
from ._config import Source

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["REASONS", "AppMetricsMerger", "ScrapeFailure", "family_names", "parse_body"]

#: What Prometheus itself sends: OpenMetrics first, then the text format.
ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
#: Values of the ``reason`` label of ``sidecar_app_metrics_scrape_failures_total``.
REASONS = ("timeout", "connection", "http_status", "too_large", "parse")
#: Above this size a body is parsed in a worker thread, off the event loop.
_THREAD_PARSE_BYTES = 32 << 10

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: Sample name suffixes each type may use, beside the family name itself ("").
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "unknown": ("",),
    "stateset": ("",),
    "info": ("_info",),
    "summary": ("", "_sum", "_count", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
}


class ScrapeFailure(Exception):
    """Raised by a fetch when an app endpoint gives no usable metrics; ``reason`` is a label."""

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


class SourceResult(NamedTuple):
    """One endpoint in one scrape."""

    source: Source
    families: list[Metric]
    duration: float
    failure: ScrapeFailure | None = None


def family_names(family: Metric) -> set[str]:
    """Every name ``family`` occupies in either exposition format."""
    names = {family.name, *(s.name for s in family.samples)}
    names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def parse_body(body: bytes, content_type: str) -> list[Metric]:
    """Families from an exposition body; OpenMetrics by content type, else the text format."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        msg = f"not UTF-8 at byte {err.start}"
        raise ScrapeFailure(msg, reason="parse") from None
    media = content_type.split(";", 1)[0].strip().lower()
    try:
        if media == "application/openmetrics-text":
            from prometheus_client.openmetrics import parser as om

            parse: Callable[[str], Iterable[Metric]] = om.text_string_to_metric_families
            return list(parse(text))
        from prometheus_client import parser

        return list(parser.text_string_to_metric_families(text))
    except Exception as err:  # the parsers raise ValueError, but also IndexError & co. on junk
        detail = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise ScrapeFailure(detail, reason="parse") from None


def _conforms(family: Metric) -> bool:
    allowed = {family.name + s for s in _SUFFIXES.get(family.type, ())}
    for sample in family.samples:
        if sample.name not in allowed:
            return False
        if sample.name == family.name + "_bucket" and "le" not in sample.labels:
            return False
        if (
            family.type == "summary"
            and sample.name == family.name
            and "quantile" not in sample.labels
        ):
            return False
    return True


def _valid(family: Metric) -> bool:
    if not _NAME.fullmatch(family.name):
        return False
    for sample in family.samples:
        if not _NAME.fullmatch(sample.name):
            return False
        for label in sample.labels:
            if not _LABEL.fullmatch(label) or label.startswith("__"):
                return False
    return True


def _renamed(family: Metric, prefix: str, help_text: str) -> list[Metric]:
    """``family`` under ``prefix``, split into ``unknown`` families if it does not conform;
    ``help_text`` where the app gave none (linters want one)."""
    from prometheus_client.metrics_core import Metric

    if _conforms(family):
        parts = [(family, family.name, family.type, family.unit)]
    else:
        by_name: dict[str, Metric] = {}
        for sample in family.samples:
            if sample.name not in by_name:
                by_name[sample.name] = Metric(sample.name, family.documentation, "unknown")
            by_name[sample.name].samples.append(sample)
        parts = [(f, name, "unknown", "") for name, f in by_name.items()]
    out = []
    for part, name, kind, unit in parts:
        new = Metric(prefix + name, part.documentation or help_text, kind, unit)
        seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        for sample in part.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            if key not in seen:  # a duplicate series would make the scraper drop it anyway
                seen.add(key)
                new.samples.append(sample._replace(name=prefix + sample.name))
        out.append(new)
    return out


class _SourceState:
    """What outlives one scrape: failure counts and the last logged condition."""

    def __init__(self) -> None:
        self.failures = dict.fromkeys(REASONS, 0)
        self.condition: str | None = None  # None: never scraped; "ok"; or a failure reason
        self.dropped: tuple[str, ...] = ()


class AppMetricsMerger:
    """Fetches, parses and merges the app's endpoints; exposes per-endpoint health series."""

    def __init__(self, sources: list[Source], log: Any, app_running: Callable[[], bool]) -> None:
        self.sources = sources
        self._log = log
        self._app_running = app_running
        self._state = {s.name: _SourceState() for s in sources}

    async def scrape(self, session: Any, budget: float | None = None) -> list[SourceResult]:
        """Fetch every endpoint concurrently; never raises for an endpoint's failure."""
        results: list[SourceResult | None] = [None] * len(self.sources)

        async def one(index: int, source: Source) -> None:
            results[index] = await self._scrape_one(session, source, budget)

        async with anyio.create_task_group() as tg:
            for index, source in enumerate(self.sources):
                tg.start_soon(one, index, source)
        return [r for r in results if r is not None]

    async def _scrape_one(self, session: Any, source: Source, budget: float | None) -> SourceResult:
        import aiohttp

        timeout = source.timeout if budget is None else max(0.001, min(source.timeout, budget))
        began = time.monotonic()
        failure: ScrapeFailure | None = None
        families: list[Metric] = []
        try:
            with anyio.fail_after(timeout):
                body, content_type = await _fetch(session, source, timeout)
                if len(body) > _THREAD_PARSE_BYTES:
                    families = await anyio.to_thread.run_sync(
                        parse_body, body, content_type, abandon_on_cancel=True
                    )
                else:
                    families = parse_body(body, content_type)
        except ScrapeFailure as err:
            failure = err
        except TimeoutError:
            failure = ScrapeFailure(f"no complete reply within {timeout:g}s", reason="timeout")
        except (aiohttp.ClientError, OSError) as err:
            failure = ScrapeFailure(str(err) or type(err).__name__, reason="connection")
        except Exception as err:  # anything else of the HTTP client: still not /metrics' problem
            failure = ScrapeFailure(f"{type(err).__name__}: {err}", reason="connection")
        duration = time.monotonic() - began
        self._record(source, failure)
        return SourceResult(source, families, duration, failure)

    def _record(self, source: Source, failure: ScrapeFailure | None) -> None:
        state = self._state[source.name]
        if failure is None:
            if state.condition not in (None, "ok"):
                self._log.info("app_metrics_scrape_recovered", source=source.name, url=source.url)
            state.condition = "ok"
            return
        state.failures[failure.reason] += 1
        if state.condition != failure.reason:
            state.condition = failure.reason
            level = "warning" if self._app_running() else "info"
            getattr(self._log, level)(
                "app_metrics_scrape_failed",
                source=source.name,
                url=source.url,
                reason=failure.reason,
                error=str(failure),
            )

    def merge(self, results: Iterable[SourceResult], taken: set[str]) -> list[Metric]:
        """The merged families that collide with nothing in ``taken`` (which grows), followed
        by the per-endpoint health families."""
        merged: list[Metric] = []
        up = by_name("sidecar_app_metrics_up").family()
        duration = by_name("sidecar_app_metrics_scrape_duration_seconds").family()
        samples = by_name("sidecar_app_metrics_samples").family()
        dropped = by_name("sidecar_app_metrics_dropped_families").family()
        failures = by_name("sidecar_app_metrics_scrape_failures_total").family()
        for result in results:
            name = result.source.name
            kept, left_out = self._merge_one(result, taken)
            merged += kept
            up.add_metric([name], int(result.failure is None))
            duration.add_metric([name], result.duration)
            samples.add_metric([name], sum(len(f.samples) for f in kept))
            dropped.add_metric([name], len(left_out))
            for reason, count in self._state[name].failures.items():
                failures.add_metric([name, reason], count)
            self._report_dropped(result.source, left_out)
        return [*merged, up, duration, samples, dropped, failures]

    def _merge_one(self, result: SourceResult, taken: set[str]) -> tuple[list[Metric], list[str]]:
        kept: list[Metric] = []
        left_out: list[str] = []
        for family in result.families:
            if not _valid(family):
                left_out.append(result.source.prefix + family.name)
                continue
            help_text = f"Merged from the app endpoint {result.source.name!r}, which gave no HELP."
            for part in _renamed(family, result.source.prefix, help_text):
                names = family_names(part)
                if names & taken:
                    left_out.append(part.name)
                    continue
                taken |= names
                kept.append(part)
        return kept, left_out

    def _report_dropped(self, source: Source, left_out: list[str]) -> None:
        state = self._state[source.name]
        current = tuple(sorted(set(left_out)))
        if current != state.dropped:
            state.dropped = current
            if current:
                self._log.warning(
                    "app_metrics_families_dropped",
                    source=source.name,
                    count=len(current),
                    families=list(current[:10]),
                    hint="a name collides with another series or is malformed; set a prefix",
                )


async def _fetch(session: Any, source: Source, allowed: float) -> tuple[bytes, str]:
    headers = {
        "Accept": ACCEPT,
        "Accept-Encoding": "gzip",
        "X-Prometheus-Scrape-Timeout-Seconds": f"{allowed:g}",
        "User-Agent": "sidecar-run",
    }
    async with session.get(source.url, headers=headers) as reply:
        if reply.status != 200:
            msg = f"HTTP {reply.status}"
            raise ScrapeFailure(msg, reason="http_status")
        length = reply.content_length
        if length is not None and length > source.max_bytes:
            msg = f"Content-Length {length} exceeds max_bytes {source.max_bytes}"
            raise ScrapeFailure(msg, reason="too_large")
        chunks = []
        size = 0
        async for chunk in reply.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > source.max_bytes:
                msg = f"body exceeds max_bytes {source.max_bytes}"
                raise ScrapeFailure(msg, reason="too_large")
            chunks.append(chunk)
        return b"".join(chunks), reply.headers.get("Content-Type", "")
