"""``type = "stdout"`` / ``"stderr"``: JSON lines on sidecar-run's own stdout or stderr.

Writes happen on one daemon thread per output, so a full pipe (a slow reader of our stdout)
never blocks the event loop: the output just stops delivering and its buffer fills, then spills.
Waiting is cancellable (shutdown deadlines work); a write already handed to the thread
completes in the background, and a resend of the same batch waits for it instead of writing it
twice. A closed stream (``EPIPE``, ``EBADF``) rejects batches: its reader is gone for good.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import sys
import threading
from concurrent.futures import Future
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from .._model import Record
from ._base import Rejected, RetryLater, encode_lines, os_error_kind
from ._config import StderrConfig, StdoutConfig

__all__ = ["StreamOutput"]

_GONE = (errno.EPIPE, errno.EBADF, errno.ECONNRESET)


class _Write:
    """One batch handed to the writer thread."""

    __slots__ = ("data", "done", "future", "records", "token")

    def __init__(self, records: list[Record], data: bytes, token: Any) -> None:
        self.records = records
        self.data = data
        self.token = token
        self.future: Future[None] = Future()
        self.done = anyio.Event()


class StreamOutput:
    """JSON lines on file descriptor 1 (stdout) or 2 (stderr)."""

    def __init__(self, name: str, config: StdoutConfig | StderrConfig, *, log: Any) -> None:
        self.name = name
        self.config = config
        self.log = log
        self.stream = config.type
        self.bytes_sent = 0
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._last: _Write | None = None

    def _fd(self) -> int:
        stream = sys.stdout if self.stream == "stdout" else sys.stderr
        try:
            return stream.fileno()
        except (AttributeError, OSError, ValueError):
            return 1 if self.stream == "stdout" else 2

    async def open(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._writer, name=f"sidecar-logs-{self.name}", daemon=True
            )
            self._thread.start()

    async def close(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)

    def _writer(self) -> None:
        fd = self._fd()
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                view = memoryview(item.data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            except OSError as err:
                item.future.set_exception(err)
            else:
                item.future.set_result(None)
            with contextlib.suppress(Exception):  # the event loop is gone: nobody waits
                anyio.from_thread.run_sync(item.done.set, token=item.token)

    async def send(self, records: list[Record]) -> None:
        await self.open()
        last = self._last
        if last is not None and not last.future.done():
            # A cancelled send left its write in flight: never interleave with it.
            await last.done.wait()
            if last.records is records and last.future.exception() is None:
                return
        item = _Write(records, encode_lines(records), anyio.lowlevel.current_token())
        self._last = item
        self._queue.put(item)
        await item.done.wait()
        err = item.future.exception()
        if err is None:
            self.bytes_sent += len(item.data)
            return
        assert isinstance(err, OSError)
        msg = f"cannot write to {self.stream}: {err.strerror or err}"
        if err.errno in _GONE:
            raise Rejected(msg, kind=os_error_kind("write", err))
        raise RetryLater(msg, kind=os_error_kind("write", err))
