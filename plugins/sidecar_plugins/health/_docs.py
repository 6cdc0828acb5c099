"""The health plugin's reference prose, kept beside the code it describes.

``docs/gen_reference.py`` reads :data:`CONFIG_DOCS` and :data:`EVENT_DOCS` through the plugin
class and writes :func:`reference_page` to ``docs/reference/health.md``. Every probe key and
metric must have prose here, or generating the page fails, so the reference cannot drift.
"""

from __future__ import annotations

from .._refdocs import key_table, metric_table
from ._config import MIN_PERIOD, ProbeConfig, format_seconds
from ._metrics import METRIC_DOCS

__all__ = ["CONFIG_DOCS", "EVENT_DOCS", "PROBE_KEY_DOCS", "reference_page"]

CONFIG_DOCS: dict[str, str] = {
    "probes": (
        "The probes, a list of tables (`[[plugins.health.probes]]`); the keys are in the "
        "[health reference](health.md#probe-keys). Empty: the app is ready while it is "
        "`RUNNING`. `--probe KIND=TARGET` replaces the list."
    ),
    "watchdog": (
        "Send `WATCHDOG=1` to systemd at half of `$WATCHDOG_USEC` while the app is live "
        "(`WatchdogSec=` in the unit)."
    ),
    "max_response_bytes": (
        "At most this much of an HTTP probe's body, or of an exec probe's output, is read and "
        "kept (Kubernetes reads 10 KiB); the rest is never read, or is drained and dropped."
    ),
}

EVENT_DOCS: dict[str, str] = {
    "probe_passed": (
        "A readiness probe reached `success_threshold` successes in a row, or a startup probe "
        "passed (liveness and readiness probes start now)."
    ),
    "probe_failed": "A probe reached `failure_threshold` failures in a row; `detail` says why.",
    "liveness_restart_requested": (
        "A failed liveness probe asked the core to restart the app (graceful stop, backoff)."
    ),
    "startup_restart_requested": (
        "A startup probe failed `failure_threshold` times: the app is restarted, as Kubernetes "
        "restarts a container that never started."
    ),
    "liveness_as_strict_as_readiness": (
        "At plugin start: a liveness probe checks the same target as a readiness probe and "
        "fails no later than it, a known cause of cascading restarts."
    ),
    "health_reloaded": (
        "A reloaded `[plugins.health]` table was applied in place: the probes by what happened "
        "to them (`kept`, `retimed`, `replaced`, `added`, `removed`), and `watchdog` or "
        "`max_response_bytes` when they changed."
    ),
    "health_metrics_not_registered": (
        "The shared registry refused the health metrics (a name is taken); probing goes on "
        "without them."
    ),
    "watchdog_enabled": "`WATCHDOG_USEC` is set: `WATCHDOG=1` every `interval` seconds.",
    "watchdog_disabled": "`WATCHDOG_USEC` is set but cannot be used; `reason` says why.",
    "watchdog_pings_stopped": (
        "The app is not live; systemd's watchdog acts unless it recovers. `reason` lists the "
        "failed checks."
    ),
    "watchdog_pings_resumed": "The app is live again; pings go on.",
}

PROBE_KEY_DOCS: dict[str, str] = {
    "kind": (
        "`startup`: passes once, gates the others; `failure_threshold` failures restart the app. "
        "`liveness`: `failure_threshold` failures restart the app. `readiness`: holds "
        "readiness back until it passes; failures only make the app unready."
    ),
    "name": (
        "Shown in `/livez`, `/readyz`, logs and metric labels. Default `<kind>-<target>`, e.g. "
        "`readiness-http` (`-2`, `-3` for repeats)."
    ),
    "http": "Target: GET this `http://` or `https://` URL.",
    "tcp": "Target: open a TCP connection to `HOST:PORT` (`tcp://` optional) and close it.",
    "exec": (
        "Target: run this argv (no shell) in its own process group; it passes on exit 0. At "
        "the timeout, and when it ends, its whole group gets SIGKILL."
    ),
    "process": "Target (`true`): the app's process exists and is not a zombie or stopped.",
    "method": "HTTP method (http only).",
    "headers": 'Extra request headers, e.g. `{ Host = "app.local" }` (http only).',
    "expect_status": (
        "Statuses that pass: `200-399` (Kubernetes' rule), `200`, or a list like "
        "`200,204,300-399` (http only). Redirects are not followed."
    ),
    "body_contains": (
        "Also require this text in the first `max_response_bytes` of the body (http only)."
    ),
    "tls_verify": "Verify the server's certificate for `https://` (http only).",
    "initial_delay": (
        "Wait this long after the app's process started before the first check "
        "(`initialDelaySeconds`)."
    ),
    "period": (f"Time between checks (`periodSeconds`); at least {format_seconds(MIN_PERIOD)}."),
    "timeout": ("A check that takes longer fails (`timeoutSeconds`); must be less than `period`."),
    "success_threshold": (
        "Successes in a row to pass after failing (`successThreshold`); must be 1 except for "
        "readiness."
    ),
    "failure_threshold": "Failures in a row to fail (`failureThreshold`).",
}


_ENDPOINT_TABLE = """\
| Path | `200` when | Else |
|---|---|---|
| `GET /livez` | the app is `RUNNING` (or the runtime is shutting down) and no liveness or \
startup probe has failed | `503` |
| `GET /readyz` | the readiness board is ready: the app is `RUNNING`, every readiness and \
startup probe passes (and any other plugin's check), no shutdown | `503` |
| `GET /healthz` | as `/livez` (the legacy name) | `503` |"""


_RELOAD_TABLE = """\
| The new table has the probe | What happens to it |
|---|---|
| with the same keys | It keeps running: status, counts and period go on. |
| with the same kind and check, but new `initial_delay`, `period`, `timeout` or thresholds \
| It keeps its status and counts (what it checks did not change, so its verdict still holds); \
the new thresholds apply from its next result, which is due one new `period` after its last \
check. |
| with a new kind or check (`http`, `tcp`, `exec`, `process`, `method`, `headers`, \
`expect_status`, `body_contains`, `tls_verify`) | It starts over as a new probe: a readiness \
probe is failing (the app unready) until it passes, a liveness probe starts passing. |
| under a new name | A new probe of the app's current process (its `initial_delay` counts from \
the process start). A new readiness probe makes a ready app unready until it passes, as a new \
readiness probe does in Kubernetes. A new startup probe joins the startup probes if they are \
still running; once they have passed, it counts as passed for this process and runs from the \
app's next start (startup probes gate a start; the process has started). |
| not at all | It stops, and its check leaves `/readyz` at once (which can make the app ready). |"""


def reference_page() -> str:
    """``docs/reference/health.md``: probe keys, endpoints and their replies, metrics."""
    return f"""# Health

The `health` plugin (on by default) probes the app the way the kubelet does and publishes one
readiness truth: `/readyz`, `READY=1` to systemd and the proxy all follow the readiness board.
With no probes, the app is ready while it is `RUNNING`. How to set probes up:
[health probes](../how-to/health-probes.md).

## Probe keys

Each entry of `plugins.health.probes` is a table with a `kind` and exactly one target (`http`,
`tcp`, `exec` or `process`). The timing keys have Kubernetes' names and defaults.
`--probe readiness=http://127.0.0.1:8080/health`, `--probe liveness=tcp://127.0.0.1:8080` and
`--probe 'startup=exec:pg_isready -q'` add one with the defaults.

{key_table(ProbeConfig, PROBE_KEY_DOCS, where="PROBE_KEY_DOCS (health/_docs.py)")}

A config error names the probe, e.g.
`plugins.health.probes[1]: timeout: must be more than 0 and less than period (1s), got 2s`.

## Semantics

- Every new process of the app starts from scratch: startup probes run first; liveness and
  readiness probes start when every startup probe has passed, each after its
  `initial_delay` counted from the process start.
- A readiness probe starts failing (not ready) and passes after `success_threshold`
  successes in a row; `failure_threshold` failures in a row make the app unready again.
- A liveness probe starts passing. `failure_threshold` failures in a row restart the app
  through the core (`stop.signal`, then SIGKILL at `stop.timeout`; the restart backoff
  applies). A startup probe that fails `failure_threshold` times does the same.
- A check that outlives `timeout` is cancelled and counts as a failure. An exec probe's whole
  process group is then killed; it is also killed when the command ends, so nothing it forked
  survives (a process that starts its own session escapes, as it would from a shell).
- When the shutdown begins, probing stops and readiness is false at once.

## Reloading

When sidecar-run reloads its config (`SIGHUP` with `--config`, or `POST /reload`), a changed
`[plugins.health]` table is applied in place: the plugin is not restarted, and a probe that did
not change never makes `/readyz` flap. Probes are matched by name (their `name`, or the default
`<kind>-<target>`):

{_RELOAD_TABLE}

New checks are on the board before removed ones leave it, so a reload never passes through a
readier state than both the old and the new table. `watchdog` starts or stops the pings;
`max_response_bytes` applies from each probe's next check. Metric series follow the probes: a
probe kept under its name and kind keeps its counts, a removed one loses its series. While the
app is not running, the new probes wait for it as at start. The log event `health_reloaded`
lists the probes by what happened to them.

## Endpoints

Served by the admin listener, in kube-apiserver's format, for Kubernetes probes
(`httpGet: {{path: /readyz, port: 9901}}`) and people (`?verbose`). `HEAD` works too.

{_ENDPOINT_TABLE}

A passing reply is `ok`. A failing reply, and any reply to `?verbose`, lists every check, one
line each, and a verdict. `Content-Type: text/plain; charset=utf-8`:

```text
$ curl -s localhost:9901/readyz?verbose
[+]app ok: RUNNING
[+]health/readiness-http ok: HTTP 200 in 1.3ms
readyz check passed
$ curl -si localhost:9901/livez
HTTP/1.1 503 Service Unavailable
...
[+]ping ok
[+]app ok: RUNNING
[-]health/liveness-exec failed: exit 1: no heartbeat in 30s in 12ms
livez check failed
```

During the shutdown `/readyz` answers `503` with `[-]shutdown failed: the runtime is shutting
down`, while `/livez` stays `200`.

## Metrics

On the runtime's shared registry, served at `/metrics` by the `metrics` plugin. They appear once
the app first reaches `RUNNING` or the first probe has run.

{metric_table(METRIC_DOCS)}

## systemd watchdog

Under a unit with `WatchdogSec=`, systemd sets `WATCHDOG_USEC`. The plugin then sends
`WATCHDOG=1` every `WATCHDOG_USEC / 2` while `/livez` would answer `200`, and stops while it
would not, so systemd's watchdog acts if the restart through the core does not help
(`health.watchdog = false` turns this off).
"""
