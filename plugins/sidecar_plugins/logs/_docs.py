"""The logs plugin's reference prose, kept beside the code it describes.

``docs/gen_reference.py`` reads :data:`CONFIG_DOCS` and :data:`EVENT_DOCS` through the plugin
class and writes :func:`reference_page` to ``docs/reference/logs.md``. The key tables of the
nested tables (files, multiline, processors, outputs) are generated from the structs, so every
key is listed with its type and default.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .._refdocs import key_table, metric_table
from ._checkpoint import CHECKPOINT_EVENT_DOCS
from ._config import FileSourceConfig
from ._enrich import EnrichConfig, LevelConfig
from ._filters import MatchRule, RedactRule
from ._metrics import METRIC_DOCS
from ._multiline import MultilineConfig
from ._parsers import ParseConfig
from ._processors import ProcessorConfig
from ._tailconfig import TAIL_EVENT_DOCS, TAIL_KEY_DOCS
from ._timestamps import TimestampConfig
from .outputs import (
    ElasticsearchConfig,
    FileConfig,
    FluentdForwardConfig,
    FluentdHttpConfig,
    HttpConfig,
    LokiConfig,
    StdoutConfig,
)

__all__ = ["CONFIG_DOCS", "EVENT_DOCS", "reference_page"]

CONFIG_DOCS: dict[str, str] = {
    "streams": (
        "Which of the app's streams to ship (`stdout`, `stderr`); `[]` ships none. The bytes "
        "still pass through to sidecar-run's own stdout and stderr."
    ),
    "stream_overflow": (
        "When the core's buffer of output lines for this plugin is full: `block` makes the "
        "app's output wait (nothing lost; the outputs' disk spool makes this rare), `drop` "
        'drops and counts (`sidecar_logs_dropped_total{reason="stream_overflow"}`).'
    ),
    "stream_buffer": "Lines buffered between the core and this plugin.",
    "stream_multiline": (
        "Multiline joining for the app's streams (a table: see [multiline](logs.md#multiline))."
    ),
    "max_line_bytes": (
        "Longer stdout/stderr lines are shipped cut to this size with `truncated: true`."
    ),
    "files": (
        "Files to tail, a list of tables (see [files](logs.md#files)). `--tail GLOB` sets one."
    ),
    "processors": "The processor chain, in order (see [processors](logs.md#processors)).",
    "outputs": (
        "Named outputs, `[plugins.logs.outputs.NAME]` tables with a `type` (see "
        "[outputs](logs.md#outputs)). At least one output (or `log_output`) is needed."
    ),
    "log_output": (
        "Outputs as `--log-output` specs (`stdout`, `file:PATH`, `loki+http://...`); named "
        "after their type."
    ),
    "state_dir": (
        "Where checkpoints and the disk spool live (`logs/` below it). Default: "
        "`$STATE_DIRECTORY` (systemd's `StateDirectory=`), else `/var/lib/sidecar-run` when "
        "writable, else "
        "`$XDG_STATE_HOME/sidecar-run` (`~/.local/state/sidecar-run`)."
    ),
    "checkpoint_interval": "How often delivered file offsets are written to disk.",
}

EVENT_DOCS: dict[str, str] = {
    **TAIL_EVENT_DOCS,
    **CHECKPOINT_EVENT_DOCS,
    "logs_started": "The plugin runs: its outputs are open, sources are being read.",
    "logs_reloaded": (
        "A config reload changed only outputs or processors: applied in place, the old "
        "outputs flushed (up to 10 s) and stopped."
    ),
    "logs_drained": (
        "Shutdown: the app's output and the files were read to the end and the outputs "
        "flushed (`buffered` records were left, 0 when everything was delivered)."
    ),
    "log_enrich_env_unset": (
        "An enrich processor names environment `variables` that are not set; their fields "
        "are left out."
    ),
    "log_processor_failed": (
        "A processor raised (first time per processor): the record went on unchanged with "
        "`processor_error` set, counted in `sidecar_logs_processor_errors_total`."
    ),
    "output_buffer_full": (
        "An output's memory buffer and disk spool are full: the pipeline waits (backpressure; "
        "logged at most once a minute)."
    ),
    "output_send_failed": (
        "A batch could not be delivered (`kind`, `error`); it is retried with backoff. Logged "
        "at attempts 1, 2, 4, 8, ..."
    ),
    "output_send_crashed": "An output driver raised an unexpected error; the batch is retried.",
    "output_recovered": "An output accepted a batch again after `attempts` tries.",
    "output_rejected": (
        "An output refused a batch for good (a 4xx other than 408/429): the records are "
        "counted as dropped (`rejected`), logged once per `kind`."
    ),
    "output_batch_dropped": (
        "A batch ran out of `max_retries`; its records are counted as dropped "
        "(`retries_exhausted`)."
    ),
    "on_delivered_failed": "Committing the checkpoints of a delivered batch raised (a bug).",
    "batch_ack_failed": "A batch's acknowledgement callback raised (a bug).",
    "spool_cleared": "At start, the disk spool of the previous run was removed (`files`).",
    "spool_clear_failed": "A file of the old spool could not be removed.",
    "spool_failed": (
        "Writing to or reading from the disk spool failed (`action`, `error`, e.g. a full "
        "disk): the pipeline waits and tries again in `retry_in` seconds."
    ),
    "spool_write_recovered": "The disk spool could be written again.",
}

_FILE_KEY_DOCS = {
    **TAIL_KEY_DOCS,
    "multiline": "Multiline joining for these files (a table: see [multiline](#multiline)).",
}

_INTRO = """\
The `logs` plugin (off until configured) ships the app's stdout and stderr and its log files,
tailed through rotation, through a chain of processors to one or more outputs, with
nothing lost: file offsets are checkpointed only after every output accepted the lines, a slow
or absent output fills a bounded memory buffer and then a disk spool, and at shutdown the app's
output is read to its end, files to their end and every output flushed before sidecar-run
exits. How to set it up: [ship logs](../how-to/ship-logs.md).

```console
$ sidecar-run --tail '/var/log/app/*.log' --log-output loki+http://loki:3100 -- ./legacy-app
```

A record is a JSON object with `message`, `time` (Unix seconds, when it was read), `stream`
(`stdout`/`stderr`) or `file` and `offset`, `truncated: true` for a cut line, and whatever the
processors add."""

_SEMANTICS = """\
## Delivery guarantees

- **Files**: a checkpoint (device, inode, a fingerprint of the first line, offset) per file is
  written atomically to `state_dir/logs/checkpoints.json` every `checkpoint_interval` and at
  shutdown, and only up to lines every output has accepted. A restart, even after `kill -9`,
  resumes there: nothing is lost, and at most the lines of unacknowledged batches are sent
  again. A corrupt checkpoint file is moved aside (`.corrupt-<time>`) and reported.
- **Rotation**: rename-and-create (the old file is read to its end, then released),
  copytruncate and truncation (read again from 0), deletion (released once read), inode reuse
  (a different fingerprint is a new file). A renamed file that still matches the glob is not
  read twice.
- **Streams**: with `stream_overflow = "block"` (the default) every line of the app's output
  reaches the outputs; the app's last line, even without a newline, is shipped at exit.
- **Outputs**: each output has its own FIFO: a memory buffer (`buffer_max_bytes`), then a
  disk spool (`spool_max_bytes`, cleared at start: files replay from their checkpoints), then
  the pipeline waits. Batches are retried with capped exponential backoff and jitter, without
  limit by default; 4xx replies other than 408 and 429 are rejected and counted, never
  retried. Records of one source stay in order in every output.
- **Shutdown**: after the app exited and its pipes were read to the end, the plugin reads the
  files to their end and flushes every output, within what is left of `stop.timeout` (at least
  5 s)."""


def _doc(struct: type[Any]) -> str:
    """The first paragraph of a struct's docstring, in Markdown."""
    text = (struct.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(text.split()).replace("``", "`")


def reference_page() -> str:
    """``docs/reference/logs.md``."""
    outputs = [
        ("stdout", "stdout` / `stderr", StdoutConfig),
        ("file", "file", FileConfig),
        ("http", "http", HttpConfig),
        ("loki", "loki", LokiConfig),
        ("elasticsearch", "elasticsearch", ElasticsearchConfig),
        ("fluentd_http", "fluentd_http", FluentdHttpConfig),
        ("fluentd_forward", "fluentd_forward", FluentdForwardConfig),
    ]
    common = {f.name for f in msgspec.structs.fields(StdoutConfig)}
    output_parts = [
        f'### `type = "{label}"`\n\n{_doc(cls)}\n\n'
        + (key_table(cls, skip=tuple(common)) if cls is not StdoutConfig else "No other keys.")
        for _, label, cls in outputs
    ]
    processor_parts = [
        f"### `{name}`\n\n{_doc(cls)}\n\n{key_table(cls)}"
        for name, cls in (
            ("parse", ParseConfig),
            ("enrich", EnrichConfig),
            ("level", LevelConfig),
            ("timestamp", TimestampConfig),
            ("redact", RedactRule),
            ("drop / keep", MatchRule),
        )
    ]
    sections = [
        "# Logs",
        _INTRO,
        "## Files\n\n"
        + _doc(FileSourceConfig)
        + "\n\n"
        + key_table(FileSourceConfig, docs=_FILE_KEY_DOCS),
        "## Multiline\n\n" + _doc(MultilineConfig) + "\n\n" + key_table(MultilineConfig),
        "## Processors\n\n`[[plugins.logs.processors]]`: one processor each, run in order; "
        "set exactly one of `parse`, `enrich`, `redact`, `drop`, `keep`, `level`, `timestamp` "
        "or `custom` (a `module:function`, or the name of an entry point in the group "
        "`sidecar_runtime.log_processors`; with `options` it is called as a factory). A "
        "dropping processor counts its drops under its `name` (or its kind).\n\n"
        + key_table(ProcessorConfig),
        *processor_parts,
        "## Outputs\n\nEvery output has these keys (batching, retries, buffering):\n\n"
        + key_table(StdoutConfig),
        *output_parts,
        _SEMANTICS,
        "## Metrics\n\n" + metric_table(METRIC_DOCS),
    ]
    return "\n\n".join(sections) + "\n"
