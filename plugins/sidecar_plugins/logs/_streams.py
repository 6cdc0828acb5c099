"""The app's stdout and stderr as chunks: the core's output lines, batched per stream.

The core cuts lines at ``output.max_line_bytes`` and marks the pieces ``partial``; here the
pieces of one line are joined again up to ``max_line_bytes`` (the rest is skipped, the line
flagged ``truncated``). A final line without a newline arrives ``partial`` before the end of
stream and is shipped too: the app's last words are never lost.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection

import anyio

from sidecar_runtime import OutputLine, Subscription

from ._model import Chunk

__all__ = ["StreamReader"]

_MAX_BATCH = 4096


class StreamReader:
    """Reads one output subscription and feeds chunks of the wanted streams."""

    def __init__(
        self,
        subscription: Subscription[OutputLine],
        streams: Collection[str],
        feed: Callable[[Chunk], Awaitable[None]],
        *,
        max_line_bytes: int,
    ) -> None:
        self._sub = subscription
        self._streams = frozenset(streams)
        self._feed = feed
        self._max = max_line_bytes
        self._partial: dict[str, tuple[bytearray, int]] = {}  # stream → (bytes so far, full len)
        self.ended = anyio.Event()

    async def run(self) -> None:
        """Until the end of stream (the app's pipes are read to their end at shutdown)."""
        receive = self._sub.receive
        try:
            while True:
                first = await receive()
                batch = [first]
                try:
                    while len(batch) < _MAX_BATCH:
                        batch.append(self._sub.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    pass
                await self._ship(batch)
        except anyio.EndOfStream:
            await self._flush_partials()
            self.ended.set()

    async def _ship(self, batch: list[OutputLine]) -> None:
        now = time.time()
        per_stream: dict[str, tuple[list[bytes], dict[int, int]]] = {}
        streams = self._streams
        for item in batch:
            stream = item.stream
            if stream not in streams:
                continue
            lines, cut = per_stream.get(stream) or per_stream.setdefault(stream, ([], {}))
            if stream in self._partial or item.partial:
                joined, full = self._join(stream, item.data, item.partial)
                if joined is None:
                    continue
                data = joined
            else:
                data = item.data
                full = len(data)
            if full > self._max:
                cut[len(lines)] = full
                data = data[: self._max]
            lines.append(data)
        for stream, (lines, cut) in per_stream.items():
            if lines:
                await self._feed(Chunk(stream, None, lines, cut=cut, time=now))

    def _join(self, stream: str, data: bytes, partial: bool) -> tuple[bytes | None, int]:
        """Collect a line's pieces; return it once complete (``None`` while pieces follow)."""
        buf, full = self._partial.pop(stream, (bytearray(), 0))
        room = self._max + 1 - len(buf)  # one byte more than allowed marks the cut
        if room > 0:
            buf += data[:room]
        full += len(data)
        if partial:
            self._partial[stream] = (buf, full)
            return None, 0
        return bytes(buf), full

    async def _flush_partials(self) -> None:
        """The end of stream: an unterminated last line is a line too."""
        for stream in list(self._partial):
            buf, full = self._partial.pop(stream)
            cut = {0: full} if full > self._max else {}
            await self._feed(
                Chunk(stream, None, [bytes(buf[: self._max])], cut=cut, time=time.time())
            )
