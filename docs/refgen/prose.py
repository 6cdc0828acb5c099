"""The prose of the reference: one line per fact, in tables the generator checks against the code.

A fact without prose, or prose for a fact that no longer exists, stops the generator with a
message that says which table to edit. Built-in plugins keep their own prose beside their code
(``CONFIG_DOCS`` and ``EVENT_DOCS`` class attributes), collected by ``plugin_docs()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .plugins import builtin_plugins


class DocsError(Exception):
    """Raised when the code has a fact the generator has no prose for, or the other way round."""


KEY_DOCS: dict[str, str] = {
    "app.command": (
        "The app's argv. A program without `/` is looked up in `PATH`; a relative path is "
        "relative to `app.working_dir`. `CMD ARGS...` after `--` replaces it. Required to run "
        "(exit 2 without one)."
    ),
    "app.working_dir": (
        "Directory the app runs in; it must exist (exit 2). Unset: the runtime's own working "
        "directory."
    ),
    "app.user": (
        "Run the app as this user (name or uid), with that user's primary and supplementary "
        "groups. Needs root. An unknown name is exit 2."
    ),
    "app.group": ("Run the app with this group (name or gid) as its only group. Needs root."),
    "app.env": (
        "Variables added to the runtime's own environment for the app (same name: this value "
        "wins). Values are strings."
    ),
    "restart.policy": (
        "`never`: the app runs once. `on-failure`: started again unless it exits with a code in "
        "`exit_codes` (a death by signal is a failure). `always`: started again after every exit."
    ),
    "restart.exit_codes": "Exit codes that count as success for `on-failure` (each 0-255).",
    "restart.start_seconds": (
        "How long a process must stay up to move from `STARTING` to `RUNNING`. The app counts "
        "as ready from `RUNNING` on."
    ),
    "restart.max_restarts": (
        "Give up (`FATAL`) after this many restarts in a row without a stable run; `0` never "
        'restarts; `"unlimited"` never gives up.'
    ),
    "restart.delay": "First backoff delay.",
    "restart.max_delay": "Cap of the backoff delay.",
    "restart.multiplier": "Each further restart in a streak waits this many times longer (>= 1).",
    "restart.jitter": (
        "Each delay is scaled by a random factor in `[1 - jitter, 1]` (0-1) so replicas that "
        "fail together do not restart together."
    ),
    "restart.stable_seconds": (
        "A run at least this long is stable: it resets the backoff step and the count towards "
        "`max_restarts`."
    ),
    "stop.signal": (
        "Signal that asks the app to stop: sent on SIGTERM, on a requested restart and when a "
        "critical plugin fails. SIGINT is passed on as SIGINT."
    ),
    "stop.timeout": (
        "The one shutdown deadline, counted from the moment shutdown begins. The pre-stop "
        "delay, the plugins' shutdown hooks and the app's stop all fit in it; at the deadline "
        "the app's process group gets SIGKILL. Also bounds the stop of a requested restart."
    ),
    "stop.pre_stop_delay": (
        "After readiness turns false, the app keeps serving this long before it gets the stop "
        "signal, so load balancers can take it out first. Counts against `timeout`; must not "
        "exceed it."
    ),
    "signals.forward_to": (
        "`group`: forwarded signals and the stop signal go to the app's process group. `child`: "
        "to the app's process alone. SIGKILL always goes to the group."
    ),
    "signals.rewrite": (
        'Rewrite forwarded signals, e.g. `{ HUP = "USR1" }`; `"none"` drops the signal. TERM, '
        "KILL, STOP and CHLD cannot be rewritten (use `stop.signal`)."
    ),
    "signals.hup": (
        "What SIGHUP does: `reload` reloads sidecar-run's own configuration (like `POST "
        "/reload`), `forward` passes it to the app, `auto` reloads when sidecar-run was started "
        "with a config file and forwards otherwise."
    ),
    "output.mode": (
        "`auto`: pipes when the runtime's stdout/stderr are not a terminal; on a terminal the app "
        "inherits it, or gets a pty when a plugin subscribes to output. `pipe`, `pty`: always. "
        "`inherit`: the app writes to the runtime's stdout/stderr itself; plugins see no output."
    ),
    "output.max_line_bytes": (
        "Longer lines reach output subscribers in pieces marked `partial` (>= 64). "
        "Passthrough is not affected."
    ),
    "output.subscriber_buffer": "Default size, in lines, of each output subscription (>= 1).",
    "output.drain_timeout": (
        "After the app exits, how long to wait for end-of-file on its pipes (descendants may "
        "hold them open) before reading what is left and closing them."
    ),
    "log.level": "Level of the runtime's own logs. The default prints nothing on a healthy run.",
    "log.format": "`json`, `console`, or `auto`: console when the log stream is a terminal.",
    "log.file": "Append the runtime's logs to this file instead of stderr.",
    "subreaper": (
        "When not PID 1, register as child subreaper (Linux `PR_SET_CHILD_SUBREAPER`) so "
        "orphaned descendants of the app are re-parented to sidecar-run and reaped."
    ),
    "notify": (
        "Send sd_notify messages (`READY=1`, `STATUS=`, `STOPPING=1`) when `NOTIFY_SOCKET` is "
        "set. `false` ignores `NOTIFY_SOCKET`."
    ),
    "plugins": "One table per enabled plugin, `[plugins.<name>]`. See below.",
    "plugins.<name>.enabled": (
        "A table enables its plugin; `false` disables one that is on by default (`admin`)."
    ),
    "plugins.<name>.critical": (
        "When the plugin fails after start-up, stop the runtime gracefully (exit 70) instead of "
        "restarting the plugin with backoff."
    ),
    "plugins.admin.listen": (
        "`HOST:PORT`, `[IPv6]:PORT`, `:PORT` (all interfaces) or `unix:/path`. Unset: "
        "`127.0.0.1:9901`, skipped with a warning (`admin_listen_skipped`) when that port is "
        "busy; a configured address that is busy is a start-up error (exit 2)."
    ),
    "plugins.admin.token": (
        "Bearer token (>= 16 characters) that lets non-loopback clients call the mutating "
        "routes (`POST /restart`, `POST /reload`); without it they answer loopback clients "
        "only."
    ),
    "plugins.admin.max_body_bytes": "Largest request body the listener accepts.",
}

STATE_DOCS: dict[str, str] = {
    "STOPPED": "Not started yet. The first state.",
    "STARTING": "A process was spawned and has not yet run `restart.start_seconds`.",
    "RUNNING": "The process has run `start_seconds`. The app is ready (`READY=1`).",
    "BACKOFF": "The process ended; it is started again after the backoff delay.",
    "STOPPING": "The stop signal was sent; SIGKILL to the group at the deadline.",
    "EXITED": (
        "Ended for good: stopped, policy `never`, or a success exit under `on-failure`. "
        "The runtime exits with the app's status."
    ),
    "FATAL": (
        "Could not be started (126/127), or the restart policy gave up. The runtime exits with "
        "the app's last status."
    ),
}

NOT_HANDLED_DOCS: dict[str, str] = {
    "CHLD": "owned by the reaper: it reports children's exits",
    "KILL": "cannot be caught",
    "STOP": "cannot be caught",
    "SEGV": "a fault of the runtime itself, not a request",
    "BUS": "a fault of the runtime itself, not a request",
    "FPE": "a fault of the runtime itself, not a request",
    "ILL": "a fault of the runtime itself, not a request",
    "TRAP": "a fault of the runtime itself, not a request",
    "SYS": "a fault of the runtime itself, not a request",
    "ABRT": "a fault of the runtime itself, not a request",
    "PIPE": "raised against the runtime when its own output breaks; Python ignores it",
    "XFSZ": "raised against the runtime when its own output breaks; Python ignores it",
}

STATUS_DOCS: dict[str, tuple[str, str]] = {
    "state": ("string", "The app's state: `STOPPED`, `STARTING`, `RUNNING`, ... (see states)."),
    "pid": ("integer or null", "The running app's pid, also its process group id."),
    "ready": (
        "boolean",
        "Readiness: true while the app is `RUNNING`, every readiness check passes (the health "
        "plugin's probes) and no shutdown has begun; what `/readyz` answers.",
    ),
    "uptime_seconds": ("number or null", "How long the current process has run."),
    "starts": ("integer", "Processes spawned so far."),
    "restarts": ("integer", "Times the app was started again after an exit."),
    "last_exit": ("object or null", "How the last process ended; null before the first exit."),
    "last_exit.code": ("integer or null", "Its exit code; null when a signal killed it."),
    "last_exit.signal": ("string or null", "The signal that killed it, e.g. `KILL`."),
    "last_exit.returncode": ("integer", "The shell's view: the code, or 128+N for signal N."),
    "last_exit.at": ("number", "When it ended, Unix time."),
    "command": ("array of strings", "The app's argv (`app.command`)."),
    "runtime": ("object", "The sidecar-run process itself."),
    "runtime.version": ("string", "sidecar-run's version."),
    "runtime.pid": ("integer", "sidecar-run's pid (1 as a container entrypoint)."),
    "runtime.uptime_seconds": ("number", "How long sidecar-run has run."),
    "runtime.orphans_reaped": ("integer", "Orphaned descendants reaped (PID 1 or subreaper)."),
    "runtime.output": ("object", "The app's output over the runtime's life, per stream."),
    "runtime.output.stdout": (
        "object",
        "The app's stdout (and stderr, when they share a channel).",
    ),
    "runtime.output.stdout.bytes": ("integer", "Bytes read from the app's stdout."),
    "runtime.output.stdout.lines": ("integer", "Newlines read from the app's stdout."),
    "runtime.output.stderr": ("object", "The app's stderr."),
    "runtime.output.stderr.bytes": ("integer", "Bytes read from the app's stderr."),
    "runtime.output.stderr.lines": ("integer", "Newlines read from the app's stderr."),
    "runtime.output.dropped_lines": (
        "integer",
        "Output lines dropped at full `drop` subscribers (plugins), over all of them.",
    ),
    "runtime.shutting_down": ("boolean", "True once the graceful shutdown has begun."),
    "plugins": ("object", "One entry per enabled plugin, by name."),
    "plugins.<name>": ("object", "The plugin called `<name>`, e.g. `admin`."),
    "plugins.<name>.state": (
        "string",
        "`starting`, `running`, `backoff` (restarting after a crash), `failed` (critical, "
        "gave up), `finished` or `stopped`.",
    ),
    "plugins.<name>.critical": ("boolean", "`plugins.<name>.critical`."),
    "plugins.<name>.restarts": ("integer", "Restarts of the plugin after crashes."),
    "plugins.<name>.last_error": ("string or null", "The last crash, one line."),
    "plugins.<name>.info": (
        "object",
        "Facts the plugin publishes, e.g. admin's bound `listen` address; absent when empty.",
    ),
}

EVENT_DOCS: dict[str, str] = {
    "admin_listen_skipped": (
        "The default admin address was busy; the runtime runs without the listener."
    ),
    "admin_listening": "The admin listener is bound; `address` is the real one (port 0 resolved).",
    "app_exited": "A process of the app ended, with `code` or `signal`.",
    "app_killed": "A second SIGTERM/SIGINT: SIGKILL to the app's process group at once.",
    "app_restart_scheduled": "The app is started again after `delay` seconds.",
    "app_spawn_failed": "The command could not be executed (the run exits 126/127).",
    "app_restart_requested": "`POST /restart` asked for a graceful restart of the app.",
    "app_state_changed": (
        "Every state change, with `old`, `new` and `reason`. Level warning for `BACKOFF` and "
        "`FATAL`, else info (info for a failed spawn)."
    ),
    "app_stop_signalled": "The stop signal was sent, to the group when `group` is true.",
    "app_stop_timed_out": "The deadline passed: SIGKILL to the app's process group.",
    "orphan_reaped": "An orphaned descendant was reaped.",
    "plugin_failed": "A plugin crashed after start-up; the traceback is in `exception`.",
    "plugin_finished": "A plugin's `run()` returned on its own.",
    "plugin_restart_scheduled": "A crashed plugin is started again after `delay` seconds.",
    "plugin_started": "A plugin called `task_status.started()`.",
    "pre_stop_delay_started": "Shutdown waits `seconds`, readiness false, before stopping the app.",
    "readiness_changed": "Overall readiness turned true or false.",
    "route_failed": "A route handler raised; the client got 500.",
    "shutdown_finished": "Everything stopped; `exit_status` is what the command exits with.",
    "shutdown_hook_failed": "A plugin's shutdown hook raised; shutdown went on.",
    "shutdown_hooks_timed_out": "Shutdown hooks were cancelled at the deadline.",
    "config_reload_started": "SIGHUP or `POST /reload`: the new configuration was valid.",
    "config_reloaded": (
        "A reload was applied: `changed` sections, whether the app was restarted (its `app` "
        "section changed), plugins reloaded in place, restarted, started and stopped."
    ),
    "config_reload_failed": (
        "A reload was refused (`error` is the one-line config error); nothing changed."
    ),
    "reload_needs_restart": (
        "A reload changed `sections` that are fixed for the life of the process (`output`, "
        "`log`, `subreaper`, `notify`); they keep their old values."
    ),
    "plugin_start_failed": "A plugin added or changed by a reload could not start.",
    "plugin_reload_failed": "A plugin's `reload` hook raised; the plugin is restarted instead.",
    "drain_hook_failed": "A plugin's drain hook (run after the app's output ended) raised.",
    "drain_hooks_timed_out": "Drain hooks were cancelled at the deadline (or the plugin grace).",
    "shutdown_started": "The graceful shutdown began, for `reason`.",
    "signal_escalated": "A second SIGTERM/SIGINT arrived during shutdown.",
    "signal_forwarded": "A signal was passed to the app as `sent` (after rewriting).",
    "signal_received": "SIGTERM or SIGINT started the shutdown.",
    "subreaper_unavailable": "`PR_SET_CHILD_SUBREAPER` failed; orphans are not reaped.",
}


def check_prose(
    kind: str, table: str, documented: Mapping[str, object], found: Sequence[str]
) -> None:
    """Raise ``DocsError`` unless ``documented`` has prose for exactly the facts ``found``."""
    missing = [k for k in found if k not in documented]
    stale = [k for k in documented if k not in found]
    if missing or stale:
        parts = []
        if missing:
            parts.append(f"no prose for {kind} {', '.join(missing)}")
        if stale:
            parts.append(f"prose for {kind} that no longer exist: {', '.join(stale)}")
        msg = f"{'; '.join(parts)}: edit {table} (docs/refgen/prose.py or the plugin)"
        raise DocsError(msg)


def plugin_docs(attr: str, prefix: str = "") -> dict[str, str]:
    """Prose a built-in plugin keeps beside its code: ``CONFIG_DOCS`` (config keys relative to
    ``plugins.<name>.``) and ``EVENT_DOCS`` (its log events), as class attributes."""
    docs: dict[str, str] = {}
    for name, cls in builtin_plugins().items():
        for key, text in getattr(cls, attr, {}).items():
            docs[f"{prefix.format(name=name)}{key}"] = text
    return docs
