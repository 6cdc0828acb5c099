"""``[[plugins.logs.files]]``: which files to tail and how, with the prose for the reference.

Names and defaults follow Fluent Bit's ``tail`` input (``rotate_wait``, ``read_from_head`` as
``start_at``) and Vector's ``file`` source (``glob_minimum_cooldown`` as ``glob_interval``,
``max_line_bytes``, ``fingerprint``). Every key and every event the file source logs has prose
here, so the generated reference cannot drift from the code.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from sidecar_runtime import Duration, format_duration

__all__ = ["TAIL_EVENT_DOCS", "TAIL_KEY_DOCS", "TailConfig"]


class TailConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Which files to tail and how (Fluent Bit ``tail`` / Vector ``file`` semantics)."""

    paths: list[str]
    exclude: list[str] = []
    start_at: Literal["head", "tail"] = "tail"
    start_new_at: Literal["head", "tail"] = "head"
    poll_interval: Duration = Duration(0.25)
    glob_interval: Duration = Duration(1.0)
    rotate_wait: Duration = Duration(5.0)
    max_line_bytes: Annotated[int, msgspec.Meta(ge=1, le=1 << 26)] = 32768
    read_bytes: Annotated[int, msgspec.Meta(ge=1, le=1 << 28)] = 1 << 20
    fingerprint_bytes: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 256

    def __post_init__(self) -> None:
        if not self.paths:
            msg = "paths: expected at least one glob pattern, e.g. ['/var/log/app/*.log']"
            raise ValueError(msg)
        for key, patterns in (("paths", self.paths), ("exclude", self.exclude)):
            for index, pattern in enumerate(patterns):
                if not pattern or "\0" in pattern:
                    msg = f"{key}[{index}]: expected a non-empty glob pattern, got {pattern!r}"
                    raise ValueError(msg)
        if self.poll_interval <= 0:
            msg = f"poll_interval: must be more than 0, got {format_duration(self.poll_interval)}"
            raise ValueError(msg)
        for key in ("glob_interval", "rotate_wait"):
            value: float = getattr(self, key)
            if value < 0:
                msg = f"{key}: must not be negative, got {value:g}"
                raise ValueError(msg)


TAIL_KEY_DOCS: dict[str, str] = {
    "paths": (
        "Glob patterns of the files to tail (`**` for any depth); relative ones are relative "
        "to the working directory. Symlinks are followed."
    ),
    "exclude": (
        "Patterns of files not to tail: with a `/` matched against the whole path, without "
        "against the file name (`*.gz`)."
    ),
    "start_at": (
        "Where a file found at start without a checkpoint begins: `tail` (after its last "
        "complete line) or `head`. A file changed since the previous run's last glob round "
        "counts as new (`start_new_at`)."
    ),
    "start_new_at": "Where a file that appears while running begins: `head` or `tail`.",
    "poll_interval": "How often open files are checked for new data (`stat`, no inotify).",
    "glob_interval": "How often the patterns are globbed again to find new or rotated files.",
    "rotate_wait": (
        "How long a file renamed away or deleted is still read after that was noticed, for an "
        "app that reopens its log late; then it is read to its end and closed."
    ),
    "max_line_bytes": (
        "Longer lines keep their first `max_line_bytes` bytes, are flagged `truncated` and "
        "counted; the rest up to the newline is skipped."
    ),
    "read_bytes": (
        "At most this much is read from one file per poll, so a busy file cannot starve the "
        "others and memory stays bounded."
    ),
    "fingerprint_bytes": (
        "A file is identified by device, inode and a hash of its first line (at most this many "
        "bytes); until it has a first line or this many bytes, nothing is read from it."
    ),
}

TAIL_EVENT_DOCS: dict[str, str] = {
    "log_file_opened": (
        "A file is tailed from `offset`: `start` says why (`checkpoint`, `head` or `tail`)."
    ),
    "log_file_rotated": (
        "A tailed file was renamed (`to` its new name, or unset when no pattern matches it "
        "any more); it is still read to its end."
    ),
    "log_file_truncated": (
        "A file was truncated (copytruncate) or rewritten: it is read again from offset 0 "
        "under a new checkpoint key."
    ),
    "log_file_released": (
        "A file renamed away or deleted (`reason`) was read to its end and closed; its last "
        "unterminated line, if any, was shipped."
    ),
    "log_file_unreadable": "A matching file cannot be opened or stat'ed (`reason`); once per file.",
    "log_file_vanished": "A matching path disappeared between glob and open; once per path.",
    "log_path_skipped": "A path matching a pattern is not a regular file (`reason`); once.",
    "log_file_read_failed": "Reading an open file failed (`reason`); retried on the next poll.",
}
