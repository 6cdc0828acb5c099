"""One scrape of ``/metrics``, from the request to the reply.

1. Fetch the app's endpoints (concurrently, each within its timeout and the scraper's).
2. Collect the shared registry: this plugin's collectors (the process tree is walked here, once)
   and whatever other plugins registered.
3. Merge the app's families under collision-safe names; add the constant labels.
4. Encode in the negotiated format; gzip if asked.

Nothing runs between scrapes. The collectors are created and registered on the first scrape,
not at start-up: prometheus_client costs 30-130 ms to import, which would delay every start of
the app, and a runtime nobody scrapes should not pay it.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import TYPE_CHECKING, Any

import anyio

from sidecar_runtime import AppState, PluginContext, Request, Response

from ._app_scrape import AppMetricsMerger, family_names
from ._config import MetricsConfig
from ._exposition import collect_registry, encode, negotiate, wants_gzip, with_const_labels
from ._selfstats import SelfStats

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["Scraper"]

#: Above this many samples, encoding runs in a worker thread, off the event loop.
_THREAD_ENCODE_SAMPLES = 5000


def scrape_budget(headers: dict[str, str] | Any) -> float | None:
    """Time the scraper gives us (``X-Prometheus-Scrape-Timeout-Seconds``), minus a margin."""
    raw = headers.get("x-prometheus-scrape-timeout-seconds")
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        return None
    if not value > 0:
        return None
    return value - min(0.5, value * 0.2)


#: Modules a scrape needs, imported on the first one; the second group only to merge.
_HEAVY = ("prometheus_client", "prometheus_client.openmetrics.exposition")
_MERGING = ("aiohttp", "prometheus_client.parser", "prometheus_client.openmetrics.parser")


def _import_heavy(merging: bool) -> None:
    for name in (*_HEAVY, *(_MERGING if merging else ())):
        importlib.import_module(name)


class _Discard:
    """A registry that keeps nothing: prometheus_client's default collectors register
    themselves on construction, and this plugin registers them on the shared one itself."""

    def register(self, collector: object) -> None:
        pass


_DISCARD = _Discard()


class Scraper:
    """Serves ``/metrics`` for one run of the plugin; :meth:`close` undoes everything."""

    def __init__(self, config: MetricsConfig, ctx: PluginContext) -> None:
        self.config = config
        self.ctx = ctx
        self.stats = SelfStats(ctx.log)
        sources = config.sources()
        self.merger = (
            AppMetricsMerger(sources, ctx.log, lambda: ctx.app.state is AppState.RUNNING)
            if sources
            else None
        )
        self._registered: list[Any] = []
        self._set_up = False
        self._session: Any = None

    def _setup(self) -> None:
        """Create this plugin's collectors and register them on the shared registry."""
        from prometheus_client import GCCollector, PlatformCollector

        from ._own_process import OwnProcessCollector
        from ._process_tree import AppProcessCollector
        from ._runtime_collector import RuntimeCollector

        c = self.config.collectors
        wanted: list[tuple[str, Any]] = [("metrics", self.stats)]
        if c.runtime:
            wanted.append(("runtime", RuntimeCollector(self.ctx)))
        if c.app or c.app_tree:
            app = self.ctx.app
            collector = AppProcessCollector(
                lambda: app.pid, self.stats, main=c.app, tree=c.app_tree, pss_uss=c.app_pss_uss
            )
            wanted.append(("app_tree" if c.app_tree else "app", collector))
        if c.process:
            wanted.append(("process", OwnProcessCollector()))
        if c.python:
            wanted.append(("python", PlatformCollector(registry=_DISCARD)))  # type: ignore[arg-type]
            wanted.append(("python", GCCollector(registry=_DISCARD)))  # type: ignore[arg-type]
        registry = self.ctx.metrics
        for name, collector in wanted:
            try:
                registry.register(collector)
            except ValueError as err:  # another plugin registered one of its names first
                self.stats.failed(name, str(err), hint="turn this collector off, or the other")
            else:
                self._registered.append(collector)
        self._set_up = True

    async def _client(self) -> Any:
        if self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None), raise_for_status=False
            )
        return self._session

    async def handle(self, request: Request) -> Response:
        """GET /metrics: Prometheus metrics of the app, its process tree and the runtime."""
        if not self._set_up:
            # ~30-130 ms of imports, once: in a worker thread, so the event loop (the app's
            # output, signals, other plugins) does not wait for them
            await anyio.to_thread.run_sync(_import_heavy, self.merger is not None)
            if not self._set_up:  # another first scrape may have finished it meanwhile
                self._setup()
        results = []
        if self.merger is not None:
            budget = scrape_budget(request.headers)
            results = await self.merger.scrape(await self._client(), budget)
        families = collect_registry(self.ctx.metrics, self.stats)
        if self.merger is not None:
            taken: set[str] = set()
            for family in families:
                taken |= family_names(family)
            families += self.merger.merge(results, taken)
        families = with_const_labels(families, self.config.const_labels)
        content_type = negotiate(request.headers.get("accept"))
        compress = wants_gzip(request.headers.get("accept-encoding"))
        if sum(len(f.samples) for f in families) > _THREAD_ENCODE_SAMPLES:
            body = await anyio.to_thread.run_sync(self._encode, families, content_type, compress)
        else:
            body = self._encode(families, content_type, compress)
        headers = {"Content-Type": content_type, "Vary": "Accept, Accept-Encoding"}
        if compress:
            headers["Content-Encoding"] = "gzip"
        return Response(200, headers, body)

    def _encode(self, families: list[Metric], content_type: str, compress: bool) -> bytes:
        try:
            return encode(families, content_type, compress=compress)
        except Exception:  # a malformed family of some collector: find it, leave it out
            good = []
            for family in families:
                try:
                    encode([family], content_type, compress=False)
                except Exception as err:
                    error = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                    self.stats.failed("exposition", error, family=family.name)
                else:
                    good.append(family)
            return encode(good, content_type, compress=compress)

    async def close(self) -> None:
        """Unregister the collectors and close the HTTP client (the plugin may run again)."""
        for collector in self._registered:
            with contextlib.suppress(KeyError):
                self.ctx.metrics.unregister(collector)
            if hasattr(collector, "close"):
                collector.close()
        self._registered.clear()
        if self._session is not None:
            with anyio.CancelScope(shield=True):
                await self._session.close()
            self._session = None
