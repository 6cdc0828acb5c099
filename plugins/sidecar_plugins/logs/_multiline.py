"""Multiline joining: stack traces and continued messages become one record, per source.

A :class:`Joiner` sees a source's raw lines before records exist and returns *groups*: the lines
of one group joined with ``"\\n"``, with the number of source lines in it (the glue maps groups
back to file offsets). Three ways to find groups, set by :class:`MultilineConfig`:

* ``start`` (a regex, searched in each line's bytes, so ``\\d``/``\\w`` are ASCII): a group starts
  at a matching line; the following non-matching lines join it. Lines before the first match
  pass alone. Costs one regex search per line (~0.2-0.5 µs).
* ``mode = "python"``: CPython tracebacks. A group starts at ``Traceback (most recent call
  last):`` (or an exception group's ``  + Exception Group Traceback ...``); indented lines (frames,
  source, carets) join it, then the ``ExcType: message`` line; indented lines after it (notes,
  indented message lines) still join; chained tracebacks ("During handling of the above
  exception ..." / "The above exception was the direct cause ...", with their blank lines) stay
  in one group. Lines outside a traceback cost one ``bytes.startswith``. The line a logger
  writes before ``Traceback`` (``ERROR:root:failed``) stays its own record, as with Fluent Bit's
  built-in ``python`` parser: joining it would delay every line.
* ``mode = "java"``: JVM stack traces. Continuations are lines starting with ``Caused by:`` or
  whitespace followed by ``at ``, ``...``, ``Caused by:``, ``Suppressed:`` or ``Wrapped by:``;
  they join the line before them (the ``Exception in thread "main" ...`` or ``SomeException:
  msg`` header). So the latest line is held until the next one shows whether a trace follows.

A group that is still open is *held*: :meth:`Joiner.pending_lines` lists its lines, and
:meth:`Joiner.flush` emits it once ``flush_timeout`` passed without a new line. A group that
reaches ``max_lines`` or ``max_bytes`` is emitted as it is and the following continuation lines
start the next group.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from sidecar_runtime import Duration

__all__ = ["MODES", "Joiner", "MultilineConfig"]

#: The built-in ``mode`` values.
MODES = ("python", "java")
_PY_STARTS = (
    b"Traceback (most recent call last):",
    b"  + Exception Group Traceback (most recent call last):",
)
_PY_CHAIN = (
    b"During handling of the above exception, another exception occurred:",
    b"The above exception was the direct cause of the following exception:",
)
_INDENT = (b" ", b"\t")
_JAVA_TOP = (b"Caused by:", b"Wrapped by:")
_JAVA_NESTED = (b"at ", b"...", b"Caused by:", b"Suppressed:", b"Wrapped by:")
_JAVA_FIRST = (*_INDENT, *_JAVA_TOP)  # a cheap test first: most lines start otherwise

# Python joiner states.
_IDLE, _FRAMES, _AFTER_EXC, _BLANKS, _CHAIN = range(5)

Group = tuple[bytes, int]


class MultilineConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Joins a source's continued lines into one record. Set exactly one of ``start`` (a regex
    searched in each line's bytes: a matching line starts a record, the lines after it that do
    not match join it) or ``mode``: ``"python"`` (tracebacks, chained ones and exception groups
    included) or ``"java"`` (``at``/``Caused by:``/``... N more``/``Suppressed:`` lines join the
    line before them). A record ends at ``max_lines`` or ``max_bytes``; an open one is shipped
    ``flush_timeout`` after its last line.
    """

    start: str | None = None
    mode: str | None = None
    max_lines: Annotated[int, msgspec.Meta(ge=2)] = 500
    max_bytes: Annotated[int, msgspec.Meta(ge=64)] = 1048576
    flush_timeout: Duration = Duration(1.0)

    def __post_init__(self) -> None:
        if (self.start is None) == (self.mode is None):
            msg = "give exactly one of start (a regex) or mode ('python' or 'java')"
            raise ValueError(msg)
        if self.mode is not None and self.mode not in MODES:
            msg = f"mode: expected one of {', '.join(MODES)}, got {self.mode!r}"
            raise ValueError(msg)
        if self.start is not None:
            try:
                re.compile(self.start.encode())
            except re.error as err:
                msg = f"start: invalid regex {self.start!r}: {err}"
                raise ValueError(msg) from None
        if not 0 < self.flush_timeout <= 3600:
            msg = f"flush_timeout: must be more than 0 and at most 1h, got {self.flush_timeout:g}s"
            raise ValueError(msg)


def _java_continues(line: bytes) -> bool:
    """A JVM stack trace line that belongs to the line before it."""
    if line.startswith(_INDENT):
        return line.lstrip().startswith(_JAVA_NESTED)
    return line.startswith(_JAVA_TOP)


class Joiner:
    """Joins one source's lines into groups; stateful, not thread-safe, one per source."""

    def __init__(self, config: MultilineConfig) -> None:
        self.config = config
        self._max_lines = config.max_lines
        self._max_bytes = config.max_bytes
        self._timeout = float(config.flush_timeout)
        self._start = re.compile(config.start.encode()).search if config.start else None
        self._lines: list[bytes] = []  # the open group
        self._size = 0  # bytes of the open group once joined
        self._blanks = 0  # python: blank lines after an exception line, held until we know
        self._state = _IDLE
        self._group_exc = False  # python: the open traceback is an exception group
        self._last = 0.0  # when the open group last got a line

    def feed(self, lines: list[bytes], now: float) -> list[Group]:
        """Take the next lines of the source; return the groups they completed, in order."""
        out: list[Group] = []
        if not lines:
            return out
        if self.config.mode == "python":
            self._feed_python(lines, out)
        elif self.config.mode == "java":
            self._feed_java(lines, out)
        else:
            self._feed_start(lines, out)
        if self._lines or self._blanks:
            self._last = now
        return out

    def pending_lines(self) -> list[bytes]:
        """The lines held in the open group, oldest first (not yet in any returned group)."""
        return self._lines + [b""] * self._blanks

    def flush(self, now: float, *, force: bool = False) -> list[Group]:
        """Emit the open group if ``flush_timeout`` passed since its last line (or ``force``)."""
        out: list[Group] = []
        if (self._lines or self._blanks) and (force or now - self._last >= self._timeout):
            self._close(out)
            self._state = _IDLE
        return out

    # Group bookkeeping -------------------------------------------------------------------

    def _open(self, line: bytes) -> None:
        self._lines = [line]
        self._size = len(line)

    def _add(self, line: bytes, out: list[Group]) -> None:
        """Append a continuation line; emit the group first if the line would overfill it."""
        size = self._size + 1 + len(line)
        if len(self._lines) >= self._max_lines or size > self._max_bytes:
            out.append((b"\n".join(self._lines), len(self._lines)))
            self._open(line)
        else:
            self._lines.append(line)
            self._size = size

    def _close(self, out: list[Group]) -> None:
        """Emit the open group, then any held blank lines, each on its own."""
        lines = self._lines
        if lines:
            out.append((lines[0], 1) if len(lines) == 1 else (b"\n".join(lines), len(lines)))
            self._lines = []
            self._size = 0
        if self._blanks:
            out.extend([(b"", 1)] * self._blanks)
            self._blanks = 0

    # The three ways to find groups -------------------------------------------------------

    def _feed_start(self, lines: list[bytes], out: list[Group]) -> None:
        start = self._start
        assert start is not None
        emit = out.append
        for line in lines:
            if start(line) is not None:
                held = self._lines
                if len(held) == 1:  # the common single-line group, without a join
                    emit((held[0], 1))
                elif held:
                    emit((b"\n".join(held), len(held)))
                self._lines = [line]
                self._size = len(line)
            elif self._lines:
                self._add(line, out)
            else:
                emit((line, 1))

    def _feed_java(self, lines: list[bytes], out: list[Group]) -> None:
        emit = out.append
        for line in lines:
            held = self._lines
            if held and line.startswith(_JAVA_FIRST) and _java_continues(line):
                self._add(line, out)
                continue
            if len(held) == 1:  # the common single-line group, without a join
                emit((held[0], 1))
            elif held:
                emit((b"\n".join(held), len(held)))
            self._lines = [line]
            self._size = len(line)

    def _feed_python(self, lines: list[bytes], out: list[Group]) -> None:
        state = self._state
        for line in lines:
            if state == _IDLE:
                if line.startswith(_PY_STARTS):
                    self._open(line)
                    self._group_exc = line[0] == 0x20
                    state = _FRAMES
                else:
                    out.append((line, 1))
            elif state == _FRAMES:
                if line.startswith(_INDENT) or (not line and not self._group_exc):
                    self._add(line, out)
                elif self._group_exc:  # an exception group's box ended: as after an exception
                    state = self._after_exc(line, out)
                elif line.startswith(_PY_STARTS):  # a cut-off traceback, then a new one
                    self._close(out)
                    state = self._idle(line, out)
                else:  # the "ExcType: message" line
                    self._add(line, out)
                    state = _AFTER_EXC
            elif state == _AFTER_EXC:
                state = self._after_exc(line, out)
            elif state == _BLANKS:
                if not line:
                    self._blanks += 1
                    if self._blanks >= self._max_lines:  # not a chain: stop holding them
                        self._close(out)
                        state = _IDLE
                elif line.startswith(_PY_CHAIN):
                    for _ in range(self._blanks):
                        self._add(b"", out)
                    self._blanks = 0
                    self._add(line, out)
                    state = _CHAIN
                else:
                    self._close(out)
                    state = self._idle(line, out)
            elif not line:  # _CHAIN: blank lines before the next traceback
                self._add(line, out)
            elif line.startswith(_PY_STARTS):
                self._add(line, out)
                self._group_exc = line[0] == 0x20
                state = _FRAMES
            else:
                self._close(out)
                state = self._idle(line, out)
        self._state = state

    def _after_exc(self, line: bytes, out: list[Group]) -> int:
        """A line after a traceback's exception line: the next python state."""
        if not line:
            self._blanks = 1
            return _BLANKS
        if line.startswith(_INDENT):
            self._add(line, out)
            return _AFTER_EXC
        if line.startswith(_PY_CHAIN):
            self._add(line, out)
            return _CHAIN
        self._close(out)
        return self._idle(line, out)

    def _idle(self, line: bytes, out: list[Group]) -> int:
        """A line seen with no group open: start a traceback or pass it alone."""
        if line.startswith(_PY_STARTS):
            self._open(line)
            self._group_exc = line[0] == 0x20
            return _FRAMES
        out.append((line, 1))
        return _IDLE
