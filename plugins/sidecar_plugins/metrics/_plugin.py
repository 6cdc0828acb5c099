"""The ``metrics`` plugin: Prometheus metrics of the app, its process tree, the runtime, and the
app's own endpoint, at ``GET /metrics``."""

from __future__ import annotations

from typing import ClassVar

import anyio
from anyio.abc import TaskStatus

from sidecar_runtime import PluginContext, parse_address

from ._config import MetricsConfig

__all__ = ["MetricsPlugin"]


class MetricsPlugin:
    """Serves Prometheus metrics of the app, its process tree and the runtime at `/metrics`."""

    Config = MetricsConfig

    CONFIG_DOCS: ClassVar[dict[str, str]] = {
        "listen": (
            "Serve `/metrics` on a listener of its own: `HOST:PORT`, `[IPv6]:PORT`, `:PORT` or "
            "`unix:/path` (a busy address is a start-up error). Unset: on the admin listener "
            "(`plugins.admin.listen`), beside `/status`."
        ),
        "path": "The path `/metrics` is served at.",
        "const_labels": (
            'Labels added to every series, e.g. `{ pod = "${POD_NAME}", namespace = '
            '"${POD_NAMESPACE}" }`. A series that has a label of the same name keeps its value '
            "as `exported_<name>`. `le` and `quantile` are refused."
        ),
        "collectors": (
            "Collector groups, each `true` or `false`: `app` (the app's main process), "
            "`app_tree` (its whole process tree), `app_pss_uss` (PSS, USS and swap; off by "
            "default), `runtime` (lifecycle, output, plugins), `process` and `python` "
            "(sidecar-run's own `process_*` and `python_*`). E.g. `collectors.python = false`. "
            "See [metrics](metrics.md)."
        ),
        "app_metrics": (
            "The app's own Prometheus endpoints, merged into `/metrics` (`--app-metrics URL`). "
            "Each is a table: `url` (required, http or https), `name` (default `app`, then "
            '`app2`, ...), `prefix` (default `"<name>_"`; `""` keeps names as they are), '
            '`timeout` (default `"3s"`) and `max_bytes` (default 4 MiB, after gzip decoding). '
            "See [merging](metrics.md#the-apps-own-metrics)."
        ),
    }

    EVENT_DOCS: ClassVar[dict[str, str]] = {
        "metrics_listening": "The metrics plugin's own listener is bound at `address`.",
        "metrics_collector_failed": (
            "A collector failed during a scrape (e.g. `/proc` not readable); the scrape went on "
            "without it. Logged when it starts failing or fails differently, not per scrape."
        ),
        "metrics_collector_recovered": "A collector that failed works again.",
        "app_process_vanished": (
            "A process of the app's tree exited while a scrape read it; left out of that scrape."
        ),
        "app_metrics_scrape_failed": (
            "An app endpoint gave no usable metrics (`reason`: `timeout`, `connection`, "
            "`http_status`, `too_large`, `parse`); `/metrics` was served without it. Logged on "
            "change; warning while the app is `RUNNING`, info before."
        ),
        "app_metrics_scrape_recovered": "An app endpoint that failed is merged again.",
        "app_metrics_families_dropped": (
            "Families of an app endpoint were left out: their name collides with another "
            "series, or is malformed. Logged when the set changes."
        ),
    }

    def __init__(self, config: MetricsConfig, /) -> None:
        self.config = config

    @classmethod
    def check_warnings(cls, config: MetricsConfig) -> list[str]:
        """Warnings for ``sidecar-run check``: a config that is valid but risky."""
        return config.warnings()

    @classmethod
    def reference_pages(cls) -> dict[str, str]:
        """``docs/reference/metrics.md``, rendered from the catalog of series."""
        from ._reference import render

        return {"metrics.md": render()}

    async def run(
        self, ctx: PluginContext, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        from ._scrape import Scraper

        config = self.config
        listen = config.listen
        scraper = Scraper(config, ctx)
        try:
            if listen is None:
                ctx.add_route("GET", config.path, scraper.handle)
                ctx.set_info(path=config.path)
                task_status.started()
                await anyio.sleep_forever()
            else:
                from ._listener import serve

                async with serve(parse_address(listen), config.path, scraper.handle) as bound:
                    ctx.set_info(listen=bound, path=config.path)
                    ctx.log.info("metrics_listening", address=bound, path=config.path)
                    task_status.started()
                    await anyio.sleep_forever()
        finally:
            await scraper.close()
