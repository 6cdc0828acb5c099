"""``type = "file"``: JSON lines appended to a file, rotated by size.

Rotation renames like ``logging.handlers.RotatingFileHandler``: ``app.jsonl`` → ``app.jsonl.1``
→ ... → ``app.jsonl.<max_files>`` (the oldest is deleted); ``max_files = 0`` keeps no backup,
``max_bytes = 0`` never rotates. A batch is split only between lines, so no line is ever cut
across files and no file grows past ``max_bytes`` (unless one line alone is larger). Writes run
in a worker thread; ``fsync = true`` syncs after every batch and before every rotation. A write
error (``ENOSPC``, ``EACCES``, ...) is retryable: the file is truncated back to where the batch
began, so a retry never leaves half a batch behind. If another program moves the file away
(logrotate), the next batch reopens the path.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import anyio

from .._model import Record
from ._base import RetryLater, encode_lines, os_error_kind
from ._config import FileConfig

__all__ = ["FileOutput"]


class FileOutput:
    """Appends JSON lines to ``path`` and rotates it by size."""

    def __init__(self, name: str, config: FileConfig, *, log: Any) -> None:
        self.name = name
        self.config = config
        self.log = log
        self.path = os.path.abspath(config.path)
        self.bytes_sent = 0
        self.rotations = 0
        self._fd: int | None = None
        self._size = 0
        self._inode: tuple[int, int] | None = None
        self._partial: tuple[list[Record], bytes, int] | None = None

    async def open(self) -> None:
        """Files are opened on the first write (and reopened after errors)."""

    async def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    async def send(self, records: list[Record]) -> None:
        partial = self._partial
        if partial is not None and partial[0] is records:
            data, pos = partial[1], partial[2]  # a resend: continue after what was written
        else:
            data, pos = encode_lines(records), 0
        self._partial = (records, data, pos)
        try:
            await anyio.to_thread.run_sync(self._write, data)
        except OSError as err:
            msg = f"cannot write {self.path}: {err.strerror or err}"
            raise RetryLater(msg, kind=os_error_kind("write", err)) from None
        self._partial = None
        self.bytes_sent += len(data) - pos

    # The rest runs in a worker thread.

    def _open(self) -> int:
        if self._fd is not None:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) == self._inode:
                return self._fd
            os.close(self._fd)  # moved or deleted by someone else: start a new file
            self._fd = None
        parent = os.path.dirname(self.path)
        os.makedirs(parent, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        st = os.fstat(fd)
        self._fd, self._size, self._inode = fd, st.st_size, (st.st_dev, st.st_ino)
        return fd

    def _write(self, data: bytes) -> None:
        assert self._partial is not None
        max_bytes = self.config.max_bytes
        pos, end = self._partial[2], len(data)
        while pos < end:
            fd = self._open()
            if not max_bytes or self._size + (end - pos) <= max_bytes:
                stop = end
            else:
                stop = data.rfind(b"\n", pos, pos + max_bytes - self._size) + 1
                if stop <= pos:  # not even one whole line fits
                    if self._size > 0:
                        self._rotate()
                        continue
                    stop = data.find(b"\n", pos) + 1 or end  # one line alone > max_bytes
            self._append(fd, memoryview(data)[pos:stop])
            pos = stop
            self._partial = (self._partial[0], data, pos)
            if pos < end:
                self._rotate()

    def _append(self, fd: int, piece: memoryview) -> None:
        start = self._size
        try:
            rest = piece
            while rest:
                written = os.write(fd, rest)
                rest = rest[written:]
            if self.config.fsync:
                os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise
        self._size = start + len(piece)

    def _rotate(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            if self.config.fsync:
                os.fsync(fd)
            os.close(fd)
        path, keep = self.path, self.config.max_files
        if keep == 0:
            if os.path.exists(path):
                os.unlink(path)
        else:
            for i in range(keep - 1, 0, -1):
                older = f"{path}.{i}"
                if os.path.exists(older):
                    os.replace(older, f"{path}.{i + 1}")
            if os.path.exists(path):
                os.replace(path, f"{path}.1")
        self.rotations += 1
