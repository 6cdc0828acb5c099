"""Checkpoints of the file source: per file identity, the offset up to which lines are delivered.

One JSON document (msgspec) in the state directory maps a checkpoint key (see
:mod:`sidecar_plugins.logs._tail`) to the file's identity (path, device, inode, fingerprint of its
first line) and its committed offset. A store belongs to one :class:`~._tail.FileTailer`.

* The tailer **tracks** a file when it starts reading it (its start offset is committed at once,
  so a restart before the first ack resumes there instead of applying ``start_at`` again).
* The glue **commits** ``(key, offset)`` once every output acked the lines before ``offset``;
  offsets only move forward, and commits for unknown (forgotten) keys are ignored.
* :meth:`CheckpointStore.flush` writes the document atomically: temp file in the same directory,
  fsync, ``os.replace``, fsync of the directory. A failing write (disk full, read-only file
  system) is logged once and retried by the next flush; nothing is raised.
* A corrupt or unreadable document is logged, moved aside to ``<name>.corrupt-<unix time>`` and
  the store starts empty.
* Entries of files the tailer has not seen for ``forget_after`` seconds are dropped.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

__all__ = [
    "CHECKPOINT_EVENT_DOCS",
    "SYSTEM_STATE_DIR",
    "CheckpointEntry",
    "CheckpointStats",
    "CheckpointStore",
    "default_state_dir",
]

#: The state directory of a system-wide install (used when writable).
SYSTEM_STATE_DIR = "/var/lib/sidecar-run"
#: Temp files older than this are leftovers of a crashed flush and removed on load.
_STALE_TEMP_SECONDS = 60.0

_NonNegative = Annotated[int, msgspec.Meta(ge=0)]

CHECKPOINT_EVENT_DOCS: dict[str, str] = {
    "checkpoint_file_corrupt": (
        "The checkpoint file could not be read or decoded (`reason`); it was moved to "
        "`moved_to` and tailing starts without checkpoints."
    ),
    "checkpoint_flush_failed": (
        "Writing the checkpoint file failed (`reason`, e.g. disk full); retried at the next "
        "flush, logged again only when the reason changes."
    ),
    "checkpoint_flush_recovered": "The checkpoint file could be written again.",
    "checkpoint_entries_forgotten": (
        "`count` checkpoints of files not seen for `forget_after` were dropped."
    ),
}


class CheckpointEntry(msgspec.Struct, kw_only=True):
    """One file identity and its committed offset; ``updated`` is when it was last seen (Unix)."""

    path: str
    dev: _NonNegative
    ino: _NonNegative
    fingerprint: str
    offset: _NonNegative
    updated: float


class _Document(msgspec.Struct, kw_only=True):
    """The file on disk. ``scanned``: wall time of the tailer's last glob round before the write."""

    version: Literal[1]
    saved: float
    scanned: float | None = None
    files: dict[str, CheckpointEntry]


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(_Document)


@dataclass(slots=True)
class CheckpointStats:
    """Counters for metrics (all monotonic except ``entries``)."""

    entries: int = 0
    commits: int = 0
    commits_ignored: int = 0
    flushes: int = 0
    flush_errors: int = 0
    corrupt_files: int = 0
    forgotten: int = 0


def default_state_dir(
    environ: Mapping[str, str] | None = None, *, system_dir: str = SYSTEM_STATE_DIR
) -> str:
    """``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``; the first of a ``:`` list); else
    ``system_dir`` when writable (or creatable); else per user.

    The per-user directory is ``$XDG_STATE_HOME/sidecar-run`` (when set and absolute) or
    ``~/.local/state/sidecar-run``.
    """
    env = os.environ if environ is None else environ
    explicit = env.get("STATE_DIRECTORY")
    if explicit:
        return explicit.split(":")[0]
    if _writable_dir(system_dir):
        return system_dir
    base = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".local", "state")
    return os.path.join(base, "sidecar-run")


def _writable_dir(path: str) -> bool:
    if os.path.isdir(path):
        return os.access(path, os.W_OK | os.X_OK)
    parent = os.path.dirname(os.path.abspath(path))
    return not os.path.exists(path) and os.path.isdir(parent) and os.access(parent, os.W_OK)


class CheckpointStore:
    """Committed offsets per checkpoint key, persisted atomically in ``directory/name``."""

    def __init__(
        self,
        directory: str,
        *,
        log: Any,
        name: str = "checkpoints.json",
        forget_after: float = 86400.0,
        flush_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not name or "/" in name or name in (".", ".."):
            msg = f"name: expected a plain file name, got {name!r}"
            raise ValueError(msg)
        self.directory = directory
        self.name = name
        self.path = os.path.join(directory, name)
        self.forget_after = forget_after
        self.flush_interval = flush_interval
        self.stats = CheckpointStats()
        self._log = log
        self._clock = clock
        self._entries: dict[str, CheckpointEntry] = {}
        self._unsynced = False  # written without fsync since the last synced write
        self._dir_made = False
        self._dirty = False
        self._last_flush = float("-inf")
        self._scans: dict[int, float] = {}
        self._failing: str | None = None
        #: The previous run's last glob round (from the loaded document), or ``None``.
        self.previous_scan: float | None = None

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        """Read the document; a missing one is an empty store, a bad one is reported and moved."""
        self._entries = {}
        self._scans = {}
        self._dirty = False
        self.previous_scan = None
        self._remove_stale_temps()
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            self._update_count()
            return
        except OSError as err:
            self._set_aside(err.strerror or str(err))
            return
        try:
            document = _DECODER.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as err:
            self._set_aside(str(err) if data else "empty file")
            return
        self._entries = document.files
        self.previous_scan = document.scanned
        self._update_count()

    def _set_aside(self, reason: str) -> None:
        """Report the bad document (one event), move it to ``<name>.corrupt-<time>``."""
        self.stats.corrupt_files += 1
        target = f"{self.path}.corrupt-{int(self._clock())}"
        n = 1
        while os.path.lexists(target):
            n += 1
            target = f"{self.path}.corrupt-{int(self._clock())}-{n}"
        fields: dict[str, Any] = {"path": self.path, "reason": reason}
        try:
            os.replace(self.path, target)
            fields["moved_to"] = target
        except OSError as err:
            fields["move_error"] = err.strerror or str(err)
        self._log.error("checkpoint_file_corrupt", **fields)
        self._dirty = True
        self._update_count()

    def _remove_stale_temps(self) -> None:
        pattern = os.path.join(glob.escape(self.directory), f".{glob.escape(self.name)}.*.tmp")
        cutoff = self._clock() - _STALE_TEMP_SECONDS
        for leftover in glob.glob(pattern):
            with contextlib.suppress(OSError):
                if os.lstat(leftover).st_mtime < cutoff:
                    os.unlink(leftover)

    # -- queries ---------------------------------------------------------------------------

    def get(self, key: str) -> int | None:
        """The committed offset of ``key``, or ``None`` when unknown."""
        entry = self._entries.get(key)
        return None if entry is None else entry.offset

    committed = get

    def entry(self, key: str) -> CheckpointEntry | None:
        """A copy of the entry for ``key`` (for status pages and tests)."""
        entry = self._entries.get(key)
        return None if entry is None else msgspec.structs.replace(entry)

    def keys(self) -> list[str]:
        return list(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, dev: int, ino: int, fingerprint: str) -> tuple[str, int] | None:
        """The key and offset of the file with this identity; drops stale entries of the inode.

        An entry with the same device and inode but another fingerprint belonged to a file that
        no longer exists (truncated, or deleted and its inode reused): it is forgotten.
        """
        matches: list[str] = []
        stale: list[str] = []
        for key, entry in self._entries.items():
            if entry.ino == ino and entry.dev == dev:
                (matches if entry.fingerprint == fingerprint else stale).append(key)
        best = max(matches, key=lambda k: self._entries[k].updated, default=None)
        stale.extend(k for k in matches if k != best)
        for key in stale:
            self.forget(key)
        return None if best is None else (best, self._entries[best].offset)

    # -- changes ---------------------------------------------------------------------------

    def track(
        self, key: str, *, path: str, dev: int, ino: int, fingerprint: str, offset: int
    ) -> None:
        """Start the entry of a file being read at ``offset``, or refresh an existing entry's
        path and ``updated`` (its committed offset only moves by :meth:`commit`)."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = CheckpointEntry(
                path=path, dev=dev, ino=ino, fingerprint=fingerprint, offset=offset, updated=now
            )
            self._update_count()
        else:
            entry.path = path
            entry.updated = now
        self._dirty = True

    def commit(self, key: str, offset: int) -> None:
        """Every line before ``offset`` is delivered; lower offsets and unknown keys are ignored."""
        entry = self._entries.get(key)
        if entry is None:
            self.stats.commits_ignored += 1
            return
        self.stats.commits += 1
        if offset > entry.offset:
            entry.offset = offset
            entry.updated = self._clock()
            self._dirty = True

    def forget(self, key: str) -> None:
        """Drop ``key`` (its file is gone or truncated); later commits to it are ignored."""
        if self._entries.pop(key, None) is not None:
            self.stats.forgotten += 1
            self._dirty = True
            self._update_count()

    def note_scan(self, when: float, *, scanner: object = None) -> None:
        """``scanner`` (a tailer) finished a glob round started at ``when`` (wall time).

        The document keeps the earliest of the tailers' latest rounds: every file that existed
        then (and had a first line) has an entry, which is what the start policy relies on. The
        first round ever dirties the store, so a restart knows it is not the first run.
        """
        if not self._scans and self.previous_scan is None:
            self._dirty = True
        self._scans[id(scanner)] = when

    def refresh(self, live: Collection[str], now: float | None = None) -> list[str]:
        """Mark ``live`` keys as seen; forget others unseen for ``forget_after``; return those.

        A live entry's ``updated`` is rewritten to disk at most every ``forget_after / 8``, so
        idle files cost no writes.
        """
        now = self._clock() if now is None else now
        touch_every = self.forget_after / 8
        expired = []
        for key, entry in self._entries.items():
            if key in live:
                if now - entry.updated >= touch_every:
                    entry.updated = now
                    self._dirty = True
            elif now - entry.updated > self.forget_after:
                expired.append(key)
        for key in expired:
            self.forget(key)
        if expired:
            self._log.info("checkpoint_entries_forgotten", path=self.path, count=len(expired))
        return expired

    def _update_count(self) -> None:
        self.stats.entries = len(self._entries)

    # -- persistence -----------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether there are changes not yet written."""
        return self._dirty

    def maybe_flush(self, now: float | None = None) -> bool:
        """:meth:`flush` if dirty and ``flush_interval`` passed since the last attempt."""
        now = self._clock() if now is None else now
        if not self._dirty or now - self._last_flush < self.flush_interval:
            return False
        return self.flush()

    def flush(self, *, sync: bool = True) -> bool:
        """Write the document atomically if dirty; return whether it was written.

        ``sync=False`` skips the fsyncs: the rename is still atomic, and what the page cache
        holds survives a crash of the process (``kill -9``), though not of the machine. The
        plugin writes that way after every delivered batch, and with fsync periodically.

        An ``OSError`` is logged (once until the error changes) and counted; the store stays
        dirty so the next flush retries.
        """
        if not self._dirty and not (sync and self._unsynced):
            return False
        now = self._clock()
        self._last_flush = now
        scanned = min(self._scans.values(), default=self.previous_scan)
        document = _Document(version=1, saved=now, scanned=scanned, files=self._entries)
        try:
            self._write(_ENCODER.encode(document), sync)
        except OSError as err:
            self._dir_made = False  # it may be gone: make it again next time
            self.stats.flush_errors += 1
            reason = err.strerror or str(err)
            if reason != self._failing:
                self._failing = reason
                self._log.error(
                    "checkpoint_flush_failed", path=self.path, reason=reason, errno=err.errno
                )
            return False
        if self._failing is not None:
            self._failing = None
            self._log.info("checkpoint_flush_recovered", path=self.path)
        self._dirty = False
        self._unsynced = not sync
        self.stats.flushes += 1
        return True

    def _write(self, data: bytes, sync: bool = True) -> None:
        if not self._dir_made:
            os.makedirs(self.directory, mode=0o755, exist_ok=True)
            self._dir_made = True
        # One fixed temporary name: this store is the directory's only writer, and the plain
        # open/write/rename is cheap enough to run after every delivered batch.
        tmp = os.path.join(self.directory, f".{self.name}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if not sync:
            return
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
