"""The file source: files by glob, tailed through rotation, resumed from checkpoints.

Each :meth:`FileTailer.poll` re-globs when ``glob_interval`` has passed, then ``fstat``\\ s every
open file and reads at most ``read_bytes`` of complete lines from each (no inotify: polling
works on every file system, overlay and NFS included). Behaviour, in the words of the tools
users compare it with:

* **Start**: a file with a checkpoint resumes at its committed offset. Otherwise a file found
  by the first glob round starts at ``start_at`` (``tail``: just past the last complete line,
  so a line being written is read whole), and a file found later at ``start_new_at``. A file
  with no checkpoint whose inode changed after the previous run's last glob round (it appeared
  while the sidecar was down, e.g. a rotation) counts as found later.
* **Rename rotation** (``create``): the old file stays open and is read to its end; it is
  released once it has been gone (renamed to a name no pattern matches, or deleted) for
  ``rotate_wait`` and is read to its end. The new file is found by the glob and read from its
  head. A rotated file still matching a pattern (``app.log`` → ``app.log.1`` with ``app.log*``)
  is the same file (same inode), read once.
* **copytruncate / truncation**: a file smaller than the read offset, or whose first bytes no
  longer match its fingerprint, is a new generation read from offset 0 under a new key.
* **Identity** is device + inode + fingerprint of the first line (see ``_tailfile``); a reused
  inode with another first line is a new file read from offset 0.
* **Lines** are split on ``\\n``; only complete lines are emitted. A file's unterminated last
  line is emitted only when the file is released after rotation or deletion (nobody will finish
  it), never for a file still in place. Lines longer than ``max_line_bytes`` are cut and counted.
* **Problems** (unreadable files, files vanishing between glob and open, directories or FIFOs
  matching a pattern, read errors) are logged once per file until they change, and counted.

Sync code: regular-file reads do not block meaningfully; the glue calls :meth:`poll` from its
loop every ``poll_interval``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ._checkpoint import CheckpointStore
from ._discovery import Discovery
from ._model import Chunk
from ._tailconfig import TAIL_EVENT_DOCS, TAIL_KEY_DOCS, TailConfig
from ._tailfile import TailedFile, fingerprint

__all__ = ["TAIL_EVENT_DOCS", "TAIL_KEY_DOCS", "FileTailer", "TailConfig", "TailStats"]

#: Slack between the wall clock and file system timestamps (coarse kernel clock, NFS).
_CLOCK_SLACK = 2.0
#: At most how often (monotonic seconds) live checkpoint entries are refreshed and stale ones
#: expired; ``forget_after / 8`` when shorter, so tailers sharing a store keep theirs alive.
_REFRESH_EVERY = 60.0
#: ``stats_totals()`` names: ``sidecar_logs_file_events_total{event=...}`` and the gauge.
_TOTAL_NAMES = {
    "files_watched": "watched",
    "files_opened": "opened",
    "files_released": "released",
    "files_skipped": "skipped",
    "files_vanished": "vanished",
    "bytes_read": "bytes",
    "lines_read": "lines",
    "lines_cut": "cut",
    "rotations": "rotation",
    "truncations": "truncation",
    "read_errors": "read_error",
}


@dataclass(slots=True)
class TailStats:
    """Counters for metrics; ``files_watched`` is a gauge, the rest only grow."""

    files_watched: int = 0
    files_opened: int = 0
    files_released: int = 0
    files_skipped: int = 0
    files_vanished: int = 0
    bytes_read: int = 0
    lines_read: int = 0
    lines_cut: int = 0
    rotations: int = 0
    truncations: int = 0
    read_errors: int = 0


class FileTailer:
    """Tails the files matching ``config.paths``; see the module docstring.

    ``store`` must be loaded first; several tailers may share it (each keeps the entries of the
    files it watches fresh; entries nobody sees for ``forget_after`` expire). ``log`` is a
    structlog-like logger (``.info/.warning/.error(event, **fields)``).
    """

    def __init__(
        self,
        config: TailConfig,
        store: CheckpointStore,
        *,
        log: Any,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = store
        self.stats = TailStats()
        self._log = log
        self._clock = clock
        self._discovery = Discovery(config.paths, config.exclude, log=log, stats=self.stats)
        self._files: dict[tuple[int, int], TailedFile] = {}
        self._scans = 0
        self._next_scan = float("-inf")
        self._next_refresh = float("-inf")
        self._used_keys: set[str] = set()
        #: Read offsets of files released while still linked (renamed away), by key.
        self._released: dict[str, int] = {}

    # -- public ----------------------------------------------------------------------------

    def poll(self) -> list[Chunk]:
        """One round: re-glob when due, then read new complete lines from every file."""
        now = self._clock()
        if now >= self._next_scan:
            self.scan()
        out: list[Chunk] = []
        budget = self.config.read_bytes
        for f in list(self._files.values()):
            self._service(f, out, now, budget, final=False)
        return out

    def drain(self, max_bytes: int | None = None) -> list[Chunk]:
        """Re-glob, then read every file to its end (shutdown), at most ``max_bytes`` in all.

        Rotated-away and deleted files are released with their unterminated last line; a file
        still in place keeps its partial line (it is read whole after a restart). The default
        cap is ``16 * read_bytes``; what is left is read after the restart, from the checkpoint.
        """
        now = self._clock()
        self.scan()
        left = 16 * self.config.read_bytes if max_bytes is None else max_bytes
        out: list[Chunk] = []
        while left > 0:
            read = 0
            for f in list(self._files.values()):
                if left - read <= 0:
                    break
                read += self._service(
                    f, out, now, min(self.config.read_bytes, left - read), final=True
                )
            left -= read
            if not read:
                break
        return out

    def close(self) -> None:
        """Release every file descriptor (checkpoints stay as committed)."""
        for f in self._files.values():
            f.close()
        self._files.clear()
        self.stats.files_watched = 0

    def lag(self) -> dict[str, int]:
        """Per path: bytes read but not yet committed."""
        result: dict[str, int] = {}
        for f in self._files.values():
            committed = None if f.key is None else self.store.get(f.key)
            if committed is not None:
                result[f.path] = result.get(f.path, 0) + max(0, f.read_offset - committed)
        return result

    def stats_totals(self) -> dict[str, int]:
        """The counters for metrics, under the names the logs plugin exports."""
        stats = asdict(self.stats)
        return {_TOTAL_NAMES.get(name, name): value for name, value in stats.items()}

    def watched(self) -> list[dict[str, Any]]:
        """A snapshot of the open files (for status pages): path, key, offset, pending, gone."""
        return [
            {
                "path": f.path,
                "key": f.key,
                "offset": f.read_offset,
                "pending": f.key is None,
                "gone": f.gone_at is not None,
            }
            for f in self._files.values()
        ]

    # -- discovery -------------------------------------------------------------------------

    def scan(self) -> None:
        """Glob now: open new files, notice renamed, deleted and returning ones."""
        now = self._clock()
        wall = time.time()
        self._next_scan = now + self.config.glob_interval
        names: dict[tuple[int, int], list[str]] = {}
        for path, st in self._discovery.scan():
            ident = (st.st_dev, st.st_ino)
            if ident not in self._files:
                f = self._open(path, st)
                if f is None:
                    continue
                ident = (f.dev, f.ino)
            names.setdefault(ident, []).append(path)
        for ident, f in list(self._files.items()):
            found = names.get(ident)
            if found is None:
                self._gone(f, now)
                continue
            if f.path not in found:
                self.stats.rotations += 1
                self._log.info("log_file_rotated", path=f.path, to=found[0], key=f.key)
                f.path = found[0]
                if f.key is not None:
                    self._track(f)
            if not f.deleted:
                f.gone_at = None
        self.store.note_scan(wall, scanner=self)
        if self._scans == 0 and self.store.previous_scan is None:
            # A fresh state directory: save at once, so a crash before the first periodic flush
            # restarts as a second run (files found since are new), not as a first run.
            self.store.flush()
        self._scans += 1
        if now >= self._next_refresh:
            self._next_refresh = now + min(_REFRESH_EVERY, self.store.forget_after / 8)
            live = {f.key for f in self._files.values() if f.key is not None}
            self.store.refresh(live)
            for key in [k for k in self._released if k not in self.store]:
                del self._released[key]

    def _open(self, path: str, st: os.stat_result) -> TailedFile | None:
        opened = self._discovery.open(path, st)
        if opened is None:
            return None
        fd, fst = opened
        existing = self._files.get((fst.st_dev, fst.st_ino))
        if existing is not None:
            os.close(fd)
            return existing
        f = TailedFile(path, fd, fst, initial=self._scans == 0)
        self._files[(f.dev, f.ino)] = f
        self.stats.files_opened += 1
        self.stats.files_watched = len(self._files)
        try:
            self._identify(f, fst.st_size, force=False)
        except OSError as err:
            self._read_failed(f, err)
        return f

    def _gone(self, f: TailedFile, now: float) -> None:
        """``f`` was not found by the glob: renamed away or deleted."""
        if f.gone_at is not None:
            return
        f.gone_at = now
        try:
            f.deleted = os.fstat(f.fd).st_nlink == 0
        except OSError:
            f.deleted = False
        if not f.deleted:
            self.stats.rotations += 1
            self._log.info("log_file_rotated", path=f.path, to=None, key=f.key)

    # -- identity and start ----------------------------------------------------------------

    def _identify(self, f: TailedFile, size: int, *, force: bool) -> bool:
        """Fingerprint a pending file and choose where it starts; ``False`` while pending."""
        head = f.read_head(self.config.fingerprint_bytes, force=force)
        if head is None:
            return False
        fp = fingerprint(head)
        found = self.store.find(f.dev, f.ino, fp)
        if found is not None:
            key, offset = found
            offset = max(offset, self._released.pop(key, 0))
            if offset <= size and not f.force_head:
                f.start(key, head, offset)
                self._used_keys.add(key)
                self._track(f)
                self._opened(f, "checkpoint")
                return True
            self.store.forget(key)
            self.stats.truncations += 1
            self._log.info("log_file_truncated", path=f.path, key=key, offset=offset, size=size)
            f.force_head = True
        discard = False
        if f.force_head or self._policy(f) == "head":
            offset, how = 0, "head"
        else:
            (offset, discard), how = f.tail_offset(self.config.max_line_bytes), "tail"
        f.start(self._new_key(f, fp), head, offset, discard=discard)
        self._track(f)
        self._opened(f, how)
        return True

    def _policy(self, f: TailedFile) -> str:
        if not f.initial:
            return self.config.start_new_at
        previous = self.store.previous_scan
        if previous is not None and f.ctime > previous - _CLOCK_SLACK:
            return self.config.start_new_at
        return self.config.start_at

    def _new_key(self, f: TailedFile, fp: str) -> str:
        base = key = f"{f.dev}:{f.ino}:{fp}"
        n = 1
        while key in self._used_keys or key in self.store:
            n += 1
            key = f"{base}:{n}"
        self._used_keys.add(key)
        return key

    def _track(self, f: TailedFile) -> None:
        """Record ``f`` in the store: a new key starts at ``f.pos``, a known one keeps its
        committed offset (lines read but not acked are never committed here)."""
        assert f.key is not None
        self.store.track(
            f.key,
            path=f.path,
            dev=f.dev,
            ino=f.ino,
            fingerprint=fingerprint(f.head),
            offset=f.pos,
        )

    def _opened(self, f: TailedFile, how: str) -> None:
        self._log.info("log_file_opened", path=f.path, key=f.key, offset=f.pos, start=how)

    # -- reading ---------------------------------------------------------------------------

    def _service(
        self, f: TailedFile, out: list[Chunk], now: float, budget: int, *, final: bool
    ) -> int:
        """Read up to ``budget`` bytes of ``f``; handle truncation and release. Bytes read."""
        try:
            st = os.fstat(f.fd)
            size = st.st_size
            if st.st_nlink == 0 and not f.deleted:
                f.deleted = True
                if f.gone_at is None:
                    f.gone_at = now
            finished = f.gone_at is not None and (
                final or now - f.gone_at >= self.config.rotate_wait
            )
            if f.key is None and not self._identify(f, size, force=finished):
                if finished:
                    self._release(f, out)
                return 0
            offset = f.read_offset
            touched = size > offset or st.st_mtime_ns != f.mtime_ns
            f.mtime_ns = st.st_mtime_ns
            # A file truncated and rewritten between two polls may be longer, or exactly as
            # long as before (then only its mtime says so): check its first bytes either way.
            if size < offset or (touched and not f.head_matches()):
                self._truncated(f, size)
                if not self._identify(f, size, force=finished):
                    if finished:
                        self._release(f, out)
                    return 0
                offset = f.read_offset
            read = 0
            if size > offset and budget > 0:
                chunk, read = f.read(min(size - offset, budget), self.config.max_line_bytes)
                self.stats.bytes_read += read
                if f.discarded_to is not None and f.key is not None:
                    self.store.commit(f.key, f.discarded_to)
                    f.discarded_to = None
                if chunk is not None:
                    out.append(chunk)
                    self.stats.lines_read += len(chunk.lines)
                    if chunk.cut:
                        self.stats.lines_cut += len(chunk.cut)
        except OSError as err:
            self._read_failed(f, err)
            return 0
        f.error = None
        if finished and f.read_offset >= size:
            self._release(f, out)
        return read

    def _truncated(self, f: TailedFile, size: int) -> None:
        key, offset = f.key, f.read_offset
        dropped = f.reset()
        if key is not None:
            self.store.forget(key)
        self.stats.truncations += 1
        self._log.info(
            "log_file_truncated",
            path=f.path,
            key=key,
            offset=offset,
            size=size,
            partial_bytes_dropped=dropped,
        )

    def _release(self, f: TailedFile, out: list[Chunk]) -> None:
        """Emit the unterminated last line, close the file and forget it if deleted."""
        if f.key is not None:
            chunk = f.final()
            if chunk is not None:
                out.append(chunk)
                self.stats.lines_read += 1
                self.stats.lines_cut += len(chunk.cut)
            if f.deleted:
                self.store.forget(f.key)
            else:
                self._released[f.key] = f.read_offset
        f.close()
        del self._files[(f.dev, f.ino)]
        self.stats.files_released += 1
        self.stats.files_watched = len(self._files)
        self._log.info(
            "log_file_released",
            path=f.path,
            key=f.key,
            offset=f.read_offset,
            reason="deleted" if f.deleted else "rotated",
        )

    def _read_failed(self, f: TailedFile, err: OSError) -> None:
        reason = err.strerror or str(err)
        if f.error != reason:
            f.error = reason
            self.stats.read_errors += 1
            self._log.error("log_file_read_failed", path=f.path, reason=reason, errno=err.errno)
