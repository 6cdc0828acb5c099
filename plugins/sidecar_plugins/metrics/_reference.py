"""``docs/reference/metrics.md``, rendered from the catalog and the config defaults, so every
series the plugin exports is documented and nothing documented is missing."""

from __future__ import annotations

from ._app_scrape import ACCEPT, REASONS
from ._catalog import COLLECTORS, SPECS
from ._config import AppMetricsEndpoint, CollectorsConfig, MetricsConfig
from ._exposition import OPENMETRICS, TEXT

__all__ = ["render"]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _series(collector: str) -> str:
    rows = [
        [
            f"`{spec.name}`",
            spec.type,
            ", ".join(f"`{label}`" for label in spec.labels) or "-",
            spec.help,
        ]
        for spec in SPECS
        if spec.collector == collector
    ]
    return _table(["Series", "Type", "Labels", "Meaning"], rows)


def render() -> str:
    defaults = CollectorsConfig()
    endpoint = AppMetricsEndpoint(url="http://127.0.0.1/")
    config = MetricsConfig()
    collector_rows = [
        [
            f"`{name}`",
            "always" if name == "metrics" else ("on" if getattr(defaults, name) else "off"),
            text,
        ]
        for name, text in COLLECTORS.items()
    ]
    parts = [
        "# Metrics",
        (
            "The `metrics` plugin serves Prometheus metrics at `GET "
            f"{config.path}` on the admin listener (`http://127.0.0.1:9901{config.path}` by "
            "default), or on a listener of its own with `plugins.metrics.listen`. It is on in "
            "the embedded default config, so `sidecar-run -- CMD` serves it with no file; "
            "`[plugins.metrics] enabled = false` turns it off. Keys: "
            "[`[plugins.metrics]`](config.md#pluginsmetrics)."
        ),
        "## Scraping",
        (
            f"- **Formats.** OpenMetrics 1.0 (`{OPENMETRICS}`) when the `Accept` header prefers "
            "`application/openmetrics-text` (as Prometheus does), else the text format 0.0.4 "
            f"(`{TEXT}`), also for clients that send no `Accept`. `q` values are honoured.\n"
            "- **Compression.** gzip when `Accept-Encoding` allows it.\n"
            "- **Cost.** Nothing runs between scrapes: each scrape reads the app's process "
            "tree once from `/proc` (with `/proc/<pid>/task/<tid>/children` where the kernel "
            "has it, else one pass over `/proc/*/stat`), and fetches the app's endpoints "
            "concurrently. prometheus_client is imported on the first scrape, not at start-up.\n"
            "- **Failures** never break the reply: an app endpoint that fails, a process "
            "that exits mid-scrape, an unreadable `/proc` file or a collector that raises "
            "costs only its own series, and is counted (`sidecar_app_metrics_up`, "
            "`sidecar_metrics_vanished_processes_total`, `sidecar_metrics_errors_total`) and "
            "logged once when it starts and once when it ends."
        ),
        (
            "```yaml\n"
            "# prometheus.yml\n"
            "scrape_configs:\n"
            "  - job_name: my-app\n"
            "    static_configs:\n"
            '      - targets: ["127.0.0.1:9901"]\n'
            "```"
        ),
        "## Collectors",
        (
            "Each group is turned on or off with `plugins.metrics.collectors.<name>` "
            "(`SIDECAR_PLUGINS__METRICS__COLLECTORS__PYTHON=false`)."
        ),
        _table(["Collector", "Default", "Covers"], collector_rows),
        "## The app's process",
        (
            "The main process is the one sidecar-run spawned (a shell, if the command is "
            "`sh -c ...`). Its series are absent while no process of the app runs, and its "
            "counters start again from its own figures when the app is restarted, like any "
            "process's `process_cpu_seconds_total`. Its CPU time and page faults are its own; "
            "its I/O counters include the I/O of the children it waited for, as the kernel "
            "reports it in `/proc/<pid>/io`."
        ),
        _series("app"),
        "## The app's process tree",
        (
            "The tree is the main process, all its descendants, and the orphans sidecar-run "
            "adopted as subreaper that are still in the app's session (a daemon that "
            "double-forked). Helpers that plugins start are not part of it. Gauges sum the "
            "live processes: `0` while no process of the app runs.\n\n"
            "The counters never go down while sidecar-run runs, across exits of descendants "
            "and restarts of the app, so `rate()` works on them. Each process counts what it "
            "used plus what its waited-for children used (the kernel adds a reaped child's CPU "
            "time, page faults and I/O to its parent). A scrape adds the growth since the "
            "previous scrape; a process that vanished into a parent still in the tree is "
            "taken off once, as the parent's figures now hold it. That is exact when parents "
            "wait for their children. Work of a child that nobody waited for (`SIGCHLD` "
            "ignored) is lost, and so is what a process did between its last scrape and its "
            "exit when sidecar-run itself reaped it. Context switches are counted for each "
            "process's main thread and kept for exited processes."
        ),
        _series("app_tree"),
        "## PSS, USS and swap",
        "Off by default (`collectors.app_pss_uss = true` to turn on).",
        _series("app_pss_uss"),
        "## Runtime",
        _series("runtime"),
        "## The app's own metrics",
        (
            "`plugins.metrics.app_metrics` (or `--app-metrics URL`, repeatable) names the "
            "app's own Prometheus endpoints. Each scrape of `/metrics` fetches them "
            "concurrently and merges what they serve:"
        ),
        (
            f"- **Fetch.** `Accept: {ACCEPT}`, `Accept-Encoding: gzip`, redirects followed. "
            "The time allowed is the endpoint's `timeout` "
            f"(default `{endpoint.timeout:g}s`), and never more than the scraper allows "
            "(`X-Prometheus-Scrape-Timeout-Seconds`, minus 20 % up to 0.5 s). The body is "
            f"read up to `max_bytes` (default {endpoint.max_bytes >> 20} MiB) after gzip "
            "decoding. Any HTTP status but 200 is a failure.\n"
            "- **Parse.** By the reply's `Content-Type`: `application/openmetrics-text` with "
            "the OpenMetrics parser, anything else with the text-format parser.\n"
            "- **Names.** Each family is renamed `<prefix><name>`; `prefix` defaults to the "
            "endpoint's `name` and `_`, and `name` to `app` (then `app2`, `app3`, ...). So the "
            "app's `http_requests_total` is served as `app_http_requests_total`, and its own "
            "`process_cpu_seconds_total` as `app_process_cpu_seconds_total`, beside "
            "sidecar-run's `process_*`. Labels, values and timestamps are kept.\n"
            "- **Collisions.** A family whose name, or one of its series names, is already "
            "served (by sidecar-run, another plugin, another endpoint, or an earlier family "
            "of the same endpoint) is left out, not merged into the other one, so the reply "
            "never holds two families of one name. So are families with malformed names or "
            "labels (`__*`). `sidecar_app_metrics_dropped_families` counts them and "
            '`app_metrics_families_dropped` names them. With `prefix = ""` the app\'s names '
            "are kept as they are, and a collision is likelier.\n"
            "- **Malformed types.** A family whose series do not follow its type (a `counter` "
            "without `_total`, a bucket without `le`) is split into `unknown` families, one "
            "per series name, so both formats stay valid.\n"
            "- **Failures.** A timeout, a refused connection, a bad status, a body over "
            "`max_bytes`, or text that does not parse leaves the endpoint out of that scrape "
            f"with `sidecar_app_metrics_up 0` and a `reason` ({', '.join(REASONS)}) counted in "
            "`sidecar_app_metrics_scrape_failures_total`. The rest of `/metrics` is served "
            "as usual."
        ),
        (
            "These series, and the plugin's own counters of trouble, are always served (the "
            "`sidecar_app_metrics_*` ones when `app_metrics` is set):"
        ),
        _series("metrics"),
        "## Constant labels",
        (
            "`plugins.metrics.const_labels` adds labels to every series, the merged ones "
            "included, when the reply is encoded. In Kubernetes, pass the pod's identity "
            "through the downward API and the config file's `${VAR}` interpolation:"
        ),
        (
            "```toml\n"
            "[plugins.metrics]\n"
            'const_labels = { app = "shop", pod = "${POD_NAME}", namespace = '
            '"${POD_NAMESPACE:-default}" }\n'
            "```"
        ),
        (
            "A series that already has a label of that name keeps its value as "
            "`exported_<name>`, as Prometheus does with target labels. Prometheus adds "
            "`instance` and `job` itself; there is no need to set them."
        ),
        "## sidecar-run's own process",
        (
            "The `process` and `python` collectors are prometheus_client's own, for the "
            "sidecar-run process: `process_cpu_seconds_total`, `process_resident_memory_bytes`, "
            "`process_open_fds`, `process_max_fds`, `process_start_time_seconds`, "
            "`process_virtual_memory_bytes`, `python_info`, `python_gc_objects_collected_total`, "
            "`python_gc_objects_uncollectable_total`, `python_gc_collections_total`. Series "
            "that other plugins register on the shared registry are served as well."
        ),
    ]
    return "\n\n".join(p.strip("\n") for p in parts) + "\n"
