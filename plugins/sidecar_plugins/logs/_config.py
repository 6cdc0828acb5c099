"""``[plugins.logs]``: sources (the app's streams, tailed files), processors and outputs.

The parts' own tables are defined beside the code that reads them (``TailConfig`` in ``_tail``,
``MultilineConfig`` in ``_multiline``, ``ProcessorConfig`` in ``_processors``, ``OutputConfig``
in ``outputs``); this module assembles them and checks what spans several parts.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from sidecar_runtime import Duration

from ._multiline import MultilineConfig
from ._processors import ProcessorConfig
from ._tail import TailConfig
from .outputs import OutputConfig, parse_output_spec

__all__ = ["FileSourceConfig", "LogsConfig", "StreamName"]

StreamName = Literal["stdout", "stderr"]


class FileSourceConfig(TailConfig, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One ``[[plugins.logs.files]]`` table: globs to tail, and multiline joining for them."""

    multiline: MultilineConfig | None = None


class LogsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The logs sidecar: what to read, how to process it, where to ship it."""

    streams: list[StreamName] = msgspec.field(default_factory=lambda: ["stdout", "stderr"])
    stream_overflow: Literal["block", "drop"] = "block"
    stream_buffer: int = 16384
    stream_multiline: MultilineConfig | None = None
    max_line_bytes: int = 32768
    files: list[FileSourceConfig] = msgspec.field(default_factory=list)
    processors: list[ProcessorConfig] = msgspec.field(default_factory=list)
    outputs: dict[str, OutputConfig] = msgspec.field(default_factory=dict)
    log_output: list[str] = msgspec.field(default_factory=list)
    state_dir: str | None = None
    checkpoint_interval: Duration = Duration(1.0)

    def all_outputs(self) -> dict[str, OutputConfig]:
        """The ``outputs`` tables plus one per ``--log-output`` spec."""
        outputs = dict(self.outputs)
        for i, spec in enumerate(self.log_output):
            outputs[spec_name(i, spec)] = _spec_config(spec)
        return outputs

    def __post_init__(self) -> None:
        for i, spec in enumerate(self.log_output):
            try:
                _spec_config(spec)
            except (ValueError, msgspec.ValidationError) as err:
                msg = f"log_output[{i}]: {err}"
                raise ValueError(msg) from None
        if not self.outputs and not self.log_output:
            msg = "outputs: at least one output is needed (e.g. --log-output stdout)"
            raise ValueError(msg)
        if not self.streams and not self.files:
            msg = "streams and files are both empty: nothing to read"
            raise ValueError(msg)
        if len(set(self.streams)) != len(self.streams):
            msg = f"streams: each stream once, got {self.streams}"
            raise ValueError(msg)
        if self.stream_buffer < 1:
            msg = f"stream_buffer must be >= 1, got {self.stream_buffer}"
            raise ValueError(msg)
        if self.max_line_bytes < 64:
            msg = f"max_line_bytes must be >= 64, got {self.max_line_bytes}"
            raise ValueError(msg)
        if self.checkpoint_interval <= 0:
            msg = f"checkpoint_interval must be > 0, got {self.checkpoint_interval}"
            raise ValueError(msg)
        for name in self.all_outputs():
            if not name or not name.replace("_", "").replace("-", "").isalnum():
                msg = f"outputs: names are letters, digits, '-' and '_', got {name!r}"
                raise ValueError(msg)


def _spec_config(spec: str) -> OutputConfig:
    table = parse_output_spec(spec)
    config: OutputConfig = msgspec.convert(table, OutputConfig)
    return config


def spec_name(index: int, spec: str) -> str:
    """The output name of the ``index``-th ``--log-output``: its type, then a number."""
    kind = str(parse_output_spec(spec).get("type", "output"))
    return kind if index == 0 else f"{kind}-{index + 1}"


def duplicate_stdout_warning(config: LogsConfig) -> list[str]:
    """The app's stdout passes through to ours already; a stdout output repeats it as JSON."""
    warnings = []
    for name, output in config.all_outputs().items():
        kind = getattr(output, "type", None)
        if kind in config.streams:
            warnings.append(
                f"plugins.logs.outputs.{name}: the app's {kind} is passed through to "
                f"sidecar-run's {kind} and shipped to it again as JSON lines"
            )
    return warnings
