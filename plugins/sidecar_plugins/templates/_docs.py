"""The templates plugin's reference prose, kept beside the code it describes.

``docs/gen_reference.py`` reads :data:`CONFIG_DOCS` and :data:`EVENT_DOCS` through the plugin
class and writes :func:`reference_page` to ``docs/reference/templates.md``. Every template key,
action key and metric must have prose here, or generating the page fails.
"""

from __future__ import annotations

from .._refdocs import key_table, metric_table
from ._config import DEFAULT_MODE, ActionConfig, TemplateConfig, format_mode
from ._metrics import METRIC_DOCS

__all__ = ["ACTION_KEY_DOCS", "CONFIG_DOCS", "EVENT_DOCS", "TEMPLATE_KEY_DOCS", "reference_page"]

CONFIG_DOCS: dict[str, str] = {
    "templates": (
        "The templates to render, a list of tables (`[[plugins.templates.templates]]`), at "
        "least one; the keys are in the [templates reference](templates.md#template-keys)."
    ),
    "debounce": (
        "After a source changed, wait until the sources have been quiet this long (at most 4x "
        "as long during a stream of changes), then render."
    ),
    "force_polling": (
        "Poll the watched directories every `poll_interval` instead of using inotify (network "
        "filesystems, some container runtimes). Polling is also used when inotify fails."
    ),
    "poll_interval": "How often to poll when polling; at least 10ms.",
}

TEMPLATE_KEY_DOCS: dict[str, str] = {
    "source": (
        "The Jinja2 template file; must exist at start-up. `{% include %}` names are relative "
        "to its directory."
    ),
    "target": (
        "The file to write (its directory is created if missing). Each template has its own "
        "target; it is replaced atomically."
    ),
    "name": "The template's name in logs and metric labels. Default: `target`.",
    "mode": (
        f'Permissions as an octal string, e.g. `"0640"`. Default: an existing target\'s mode, '
        f'else `{format_mode(DEFAULT_MODE)}`. Give secrets `"0600"` or `"0640"`.'
    ),
    "owner": (
        "User name or uid to own the target. Needs root unless it is sidecar-run's own user. "
        "Default: as root, an existing target's owner; else sidecar-run's user."
    ),
    "group": (
        "Group name or gid of the target. Needs root unless sidecar-run is a member of it. "
        "Default: as root, an existing target's group."
    ),
    "vars": (
        'Static variables for this template, e.g. `{ region = "eu-west-1", workers = 4 }`; '
        "each is a name in the template."
    ),
    "on_change": (
        "What to do after the target was rewritten with different content: a table with one "
        "of `signal`, `exec` or `restart` ([action keys](templates.md#action-keys)). Unset: "
        "nothing (the app rereads the file itself)."
    ),
}

ACTION_KEY_DOCS: dict[str, str] = {
    "signal": (
        'Send this signal to the app, as a forwarded signal is sent, e.g. `"HUP"`. Skipped '
        "when the app is not running (it reads the new file when it starts)."
    ),
    "exec": (
        'Run this argv (no shell), e.g. `["nginx", "-s", "reload"]`, in its own process group; '
        "success is exit 0. Its output is captured; its last line goes into the log."
    ),
    "restart": (
        "`true`: restart the app gracefully through the core (stop signal, `stop.timeout`, "
        "start again). Skipped when the app is not running."
    ),
    "timeout": (
        "For `exec`: kill the command's process group after this long and count a failure."
    ),
}

EVENT_DOCS: dict[str, str] = {
    "template_rendered": (
        "A template rendered to new content and the target was replaced; `bytes` is its size."
    ),
    "template_render_failed": (
        "A render or write failed; `reason` says where (`FILE:LINE` when known) and what. The "
        "old target is untouched and the app is not signalled; the next change retries."
    ),
    "template_target_fixed": (
        "The output was unchanged, but the target's mode or owner differed from the config and "
        "was corrected."
    ),
    "template_action_succeeded": "An `on_change` action ran; `detail` says how it ended.",
    "template_action_failed": (
        "An `on_change` action failed: a command exited non-zero, timed out or could not start."
    ),
    "template_action_skipped": (
        "An `on_change` action was not run: the app is not running, or it is being restarted "
        "anyway."
    ),
    "template_watch_started": "The watcher (re)started on these directories.",
    "template_watch_polling": (
        "File notifications (inotify) could not be used; the watcher polls every "
        "`poll_interval` instead. `reason` says why (e.g. no inotify watches left)."
    ),
    "template_watch_failed": (
        "Even polling could not watch the sources; retried after `retry_in` seconds. Renders "
        "wait until then."
    ),
    "templates_metrics_not_registered": (
        "The shared registry refused the templates metrics (a name is taken); rendering goes "
        "on without them."
    ),
}


_CONTEXT_TABLE = """\
| Name | What it gives |
|---|---|
| `env` | sidecar-run's environment as it started: `{{ env.PORT }}`, `{{ env["PORT"] }}`; \
unset is an error unless defaulted: `{{ env.PORT \\| default("8080") }}`, \
`{% if env.DEBUG is defined %}` |
| `file(path, default=...)` | the text of a file (a ConfigMap or Secret key); missing is an \
error unless `default` is given: `{{ file("/etc/secret/token", default="") \\| trim }}` |
| `files(dir, default=...)` | a ConfigMap-style directory as `{name: text}`, sorted, without \
dot entries (`..data`) and subdirectories: `{% for k, v in files("/etc/cm").items() %}` |
| `json(path, default=...)` | a JSON file's data |
| `yaml(path, default=...)` | a YAML file's data (safe loader) |
| each key of `vars` | the template's static variables from the config |"""


def reference_page() -> str:
    """``docs/reference/templates.md``: template and action keys, the template context,
    semantics, metrics."""
    return f"""# Templates

The `templates` plugin (off until configured) renders config files for the app from
templates, before the app starts and again whenever a source changes, the role of
consul-template or confd. How to use it: [render config files](../how-to/render-config-files.md).

## Template keys

Each entry of `plugins.templates.templates` is a table:

{key_table(TemplateConfig, TEMPLATE_KEY_DOCS, where="TEMPLATE_KEY_DOCS")}

Relative paths are relative to sidecar-run's working directory. A config error names the
entry, e.g. `plugins.templates.templates[1]: mode: expected octal permissions like "0640" or
"0644", got 'rw-r--r--'`; two entries with one target, a missing `source`, an unknown signal,
user or group are errors too (exit 2, nothing started).

## Action keys

`on_change` is a table with exactly one of `signal`, `exec` or `restart`:

{key_table(ActionConfig, ACTION_KEY_DOCS, where="ACTION_KEY_DOCS")}

## Template language

[Jinja2](https://jinja.palletsprojects.com/en/stable/templates/), sandboxed, with strict
undefined variables (a typo is an error, not an empty string), no HTML escaping, `trim_blocks`
(a line with only a block tag leaves no blank line) and the template's trailing newline kept.
Names available in a template:

{_CONTEXT_TABLE}

Paths given to `file()`, `files()`, `json()` and `yaml()` are relative to sidecar-run's working
directory. The environment is read once, when the plugin starts: a process's environment
cannot change from outside, so only files can bring changes at run time.

## Semantics

- **Start-up**: every template is rendered before the app starts. If any fails, sidecar-run
  exits (status 2) before starting the app, with one line on stderr naming the template and the
  problem, e.g. `plugin 'templates' failed to start: template 'app.ini' (app.ini.tmpl ->
  /etc/app/app.ini): app.ini.tmpl:3: environment variable 'PORT' is not set`.
- **Watching**: the template, its includes and every file and directory it read are watched
  (inotify; polling with `force_polling` or when inotify fails), through their parent
  directories and every symlink on the way, so Kubernetes' `..data` symlink swap of a
  ConfigMap or Secret volume is seen. A missing file is watched for creation.
- **Debounce**: after a change, the plugin waits until the sources were quiet for `debounce`
  (at most 4x `debounce`), then renders the templates concerned.
- **Writing**: the output is compared with the target's content; when equal nothing is written
  and no action runs. Otherwise it is written to a temporary file beside the target, given
  `owner`, `group` and `mode`, fsynced and renamed over the target: readers see the old file or
  the new one, never a partial one.
- **Actions**: after a window's renders, each distinct `on_change` action of the changed
  templates runs once, in config order (a restart makes signals redundant: they are skipped).
- **Failures at run time** (a syntax error, a missing variable or file, an unwritable target,
  a full disk): `template_render_failed` with the reason, `result="failed"` in the metrics, the
  old target untouched, no temporary file left, no action. The next change retries.

## Metrics

On the runtime's shared registry, served at `/metrics` by the `metrics` plugin, once the first
renders are done.

{metric_table(METRIC_DOCS)}
"""
