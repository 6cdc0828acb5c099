"""One tailed file: its descriptor, identity, read position and the line splitter (the hot path).

A file's **identity** is its device, inode and a **fingerprint**: a BLAKE2b digest of its first
line (newline included), or of its first ``fingerprint_bytes`` bytes when the first line is
longer. Until a file holds a complete first line or ``fingerprint_bytes`` bytes it is *pending*:
it is kept open but nothing is emitted from it (it has no complete line anyway). The checkpoint
key is ``"<dev>:<ino>:<fingerprint>"`` (``:<n>`` appended for a later generation of the same
identity, e.g. a file truncated and rewritten with the same first line).

Reading keeps three numbers: ``pos`` (the start of the line being read, which is also the end of
the last emitted line), ``partial`` (the bytes of that line read so far, at most
``max_line_bytes``) and ``over`` (bytes of that line read beyond ``max_line_bytes`` and thrown
away). The next read starts at ``pos + len(partial) + over``.
"""

from __future__ import annotations

import hashlib
import os
import time

from ._model import Chunk

__all__ = ["TailedFile", "fingerprint"]


def fingerprint(head: bytes) -> str:
    """The hex digest that identifies a file by its first bytes."""
    return hashlib.blake2b(head, digest_size=8).hexdigest()


def _may_hold_long_line(data: bytes, end: int, max_line: int) -> bool:
    """Whether ``data[:end]`` may hold a line longer than ``max_line`` (``False`` is certain).

    A run of ``max_line + 1`` bytes without a newline contains one of the windows
    ``[k*step, k*step + step)`` with ``step = (max_line + 2) // 2``; probing each window with
    ``find`` costs ``end / step`` memchr calls instead of one ``len`` per line.
    """
    step = (max_line + 2) // 2
    if end // step > end // 64:  # short max_line: a plain length check is cheaper
        return True
    find = data.find
    return any(find(b"\n", k, k + step) < 0 for k in range(0, end - step + 1, step))


class TailedFile:
    """An open file being tailed (see the module docstring for the position bookkeeping)."""

    __slots__ = (
        "ctime",
        "deleted",
        "dev",
        "discard",
        "discarded_to",
        "error",
        "fd",
        "first_size",
        "force_head",
        "gone_at",
        "head",
        "initial",
        "ino",
        "key",
        "mtime_ns",
        "over",
        "partial",
        "path",
        "pos",
    )

    def __init__(self, path: str, fd: int, st: os.stat_result, *, initial: bool) -> None:
        self.path = path
        self.fd = fd
        self.dev = st.st_dev
        self.ino = st.st_ino
        #: Size and inode change time when first opened (for the start policy).
        self.first_size = st.st_size
        self.ctime = st.st_ctime
        #: Modification time at the last poll (a file rewritten to the same size changes it).
        self.mtime_ns = st.st_mtime_ns
        #: Found by the tailer's first glob round (``start_at`` applies, not ``start_new_at``).
        self.initial = initial
        self.key: str | None = None
        self.head = b""
        self.pos = 0
        self.partial = b""
        self.over = 0
        #: Inside a line that started before the tail start point: dropped up to its newline.
        self.discard = False
        self.discarded_to: int | None = None
        #: The next identification starts at 0 whatever the policy (after a truncation).
        self.force_head = False
        #: Monotonic time the file was first seen renamed away or deleted, else ``None``.
        self.gone_at: float | None = None
        self.deleted = False
        #: The last read error reported for this file (reported once until it changes).
        self.error: str | None = None

    @property
    def read_offset(self) -> int:
        """The offset of the next byte to read."""
        return self.pos + len(self.partial) + self.over

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- identity --------------------------------------------------------------------------

    def read_head(self, limit: int, *, force: bool = False) -> bytes | None:
        """The fingerprinted prefix, or ``None`` while there is neither a first line nor enough
        bytes (``force``: whatever is there, unless the file is empty)."""
        head = os.pread(self.fd, limit, 0)
        newline = head.find(b"\n")
        if newline >= 0:
            return head[: newline + 1]
        if len(head) >= limit or (force and head):
            return head
        return None

    def head_matches(self) -> bool:
        """Whether the file still starts with the bytes it was identified by."""
        return os.pread(self.fd, len(self.head), 0) == self.head

    def tail_offset(self, max_line: int) -> tuple[int, bool]:
        """Where ``tail`` starts: just past the last newline in the first ``first_size`` bytes.

        A file whose first bytes are one unterminated line starts at 0 (the line is being
        written). If the last ``max_line`` bytes hold no newline, start at ``first_size`` and
        drop the rest of that over-long line (second value ``True``).
        """
        limit = min(self.first_size, os.fstat(self.fd).st_size)
        if limit == 0:
            return 0, False
        window = min(limit, max_line + 1)
        data = os.pread(self.fd, window, limit - window)
        newline = data.rfind(b"\n")
        if newline >= 0:
            return limit - window + newline + 1, False
        if window == limit:
            return 0, False
        return limit, True

    def start(self, key: str, head: bytes, offset: int, *, discard: bool = False) -> None:
        """Begin reading the identified file at ``offset`` (a line start unless ``discard``)."""
        self.key = key
        self.head = head
        self.pos = offset
        self.partial = b""
        self.over = 0
        self.discard = discard
        self.discarded_to = None
        self.force_head = False

    def reset(self) -> int:
        """Forget the identity and position (the file was truncated); return bytes dropped."""
        dropped = len(self.partial) + self.over
        self.key = None
        self.head = b""
        self.pos = 0
        self.partial = b""
        self.over = 0
        self.discard = False
        self.discarded_to = None
        self.force_head = True
        return dropped

    # -- lines -----------------------------------------------------------------------------

    def read(self, size: int, max_line: int) -> tuple[Chunk | None, int]:
        """Read up to ``size`` bytes; return the complete lines as a chunk and the bytes read.

        Lines longer than ``max_line`` keep their first ``max_line`` bytes; their index in
        ``Chunk.cut`` maps to the full length. Raises ``OSError`` from the read.
        """
        offset = self.pos + len(self.partial) + self.over
        data = os.pread(self.fd, size, offset)
        nbytes = len(data)
        if not nbytes:
            return None, 0
        start = self.pos
        lines: list[bytes] = []
        cut: dict[int, int] = {}
        partial = b""
        if self.over or self.discard:
            newline = data.find(b"\n")
            if newline < 0:
                self.over += nbytes
                return None, nbytes
            if self.discard:
                self.discarded_to = offset + newline + 1
            else:
                cut[0] = len(self.partial) + self.over + newline
                lines.append(self.partial)
            self.pos = offset + newline + 1
            if self.discard:
                start = self.pos
            self.over = 0
            self.discard = False
            data = data[newline + 1 :]
        else:
            partial = self.partial
        parts = data.split(b"\n")
        rest = parts.pop()
        if parts:
            complete = len(data) - len(rest)
            self.pos += len(partial) + complete
            if partial:
                parts[0] = partial + parts[0]
            if (len(parts[0]) > max_line or _may_hold_long_line(data, complete, max_line)) and max(
                map(len, parts)
            ) > max_line:
                base = len(lines)
                for index, line in enumerate(parts):
                    if len(line) > max_line:
                        cut[base + index] = len(line)
                        parts[index] = line[:max_line]
            if lines:
                lines.extend(parts)
            else:
                lines = parts
        elif partial:
            rest = partial + rest
        if len(rest) > max_line:
            self.partial = rest[:max_line]
            self.over = len(rest) - max_line
        else:
            self.partial = rest
        if not lines:
            return None, nbytes
        return Chunk(self.path, self.key, lines, start, self.pos, cut, time.time()), nbytes

    def final(self) -> Chunk | None:
        """The unterminated last line as a chunk (the file is finished: deleted or rotated)."""
        if self.discard or not (self.partial or self.over):
            return None
        start = self.pos
        cut = {0: len(self.partial) + self.over} if self.over else {}
        line = self.partial
        self.pos = self.read_offset
        self.partial = b""
        self.over = 0
        return Chunk(self.path, self.key, [line], start, self.pos, cut, time.time())
