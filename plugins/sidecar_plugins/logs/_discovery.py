"""Finding the files to tail: glob patterns minus exclude patterns, regular files only.

Patterns are made absolute against the working directory when the tailer starts; ``**`` matches
any number of directories. An exclude pattern with a ``/`` is matched against the whole path,
one without against the file name (``*.gz``). Problems (a path vanishing between glob and open,
an unreadable file, a directory or FIFO matching a pattern) are logged and counted once per path
until they change (another errno, inode or mode), and forgotten when the path no longer matches.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import stat
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._tail import TailStats

__all__ = ["Discovery"]


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file"


class Discovery:
    """Globs ``paths`` minus ``exclude`` and opens regular files, reporting problems once."""

    def __init__(
        self, paths: Sequence[str], exclude: Sequence[str], *, log: Any, stats: TailStats
    ) -> None:
        self.patterns = [os.path.abspath(p) for p in paths]
        self._exclude = [(os.path.abspath(p) if "/" in p else p, "/" in p) for p in exclude]
        self._log = log
        self._stats = stats
        self._problems: dict[str, tuple[object, ...]] = {}

    def scan(self) -> Iterator[tuple[str, os.stat_result]]:
        """Every matching regular file (path, stat), each path once, in pattern order."""
        matched: set[str] = set()
        for pattern in self.patterns:
            for path in sorted(glob.glob(pattern, recursive=True)):
                if path in matched or self.excluded(path):
                    continue
                matched.add(path)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    self._vanished(path)
                    continue
                except OSError as err:
                    self._unreadable(path, ("stat", err.errno), err)
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield path, st
                else:
                    self.skip(path, st)
        for path in [p for p in self._problems if p not in matched]:
            del self._problems[path]

    def excluded(self, path: str) -> bool:
        name = os.path.basename(path)
        return any(
            fnmatch.fnmatchcase(path if full else name, pattern) for pattern, full in self._exclude
        )

    def open(self, path: str, st: os.stat_result) -> tuple[int, os.stat_result] | None:
        """Open ``path`` for reading (never blocking, even on a FIFO); ``None`` on a problem."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            self._vanished(path)
            return None
        except OSError as err:
            self._unreadable(path, ("open", err.errno, st.st_dev, st.st_ino, st.st_ctime_ns), err)
            return None
        try:
            fst = os.fstat(fd)
        except OSError as err:
            os.close(fd)
            self._unreadable(path, ("fstat", err.errno, st.st_dev, st.st_ino), err)
            return None
        if not stat.S_ISREG(fst.st_mode):
            os.close(fd)
            self.skip(path, fst)
            return None
        self._problems.pop(path, None)
        return fd, fst

    def skip(self, path: str, st: os.stat_result) -> None:
        kind = _kind(st.st_mode)
        if self._new_problem(path, ("kind", kind, st.st_dev, st.st_ino), "files_skipped"):
            self._log.warning("log_path_skipped", path=path, reason=f"not a regular file ({kind})")

    def _vanished(self, path: str) -> None:
        if self._new_problem(path, ("vanished",), "files_vanished"):
            self._log.info("log_file_vanished", path=path)

    def _unreadable(self, path: str, signature: tuple[object, ...], err: OSError) -> None:
        if self._new_problem(path, signature, "read_errors"):
            self._log.warning(
                "log_file_unreadable",
                path=path,
                reason=err.strerror or str(err),
                errno=err.errno,
            )

    def _new_problem(self, path: str, signature: tuple[object, ...], counter: str) -> bool:
        """Count a problem with ``path``; true (log it) once, until its signature changes."""
        if self._problems.get(path) == signature:
            return False
        self._problems[path] = signature
        setattr(self._stats, counter, getattr(self._stats, counter) + 1)
        return True
