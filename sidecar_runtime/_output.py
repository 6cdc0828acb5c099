"""The app's output: pipes (or ptys) owned by the core, passed through byte-exactly, and split
into :class:`OutputLine` events for plugins.

Passthrough comes first and never waits on a plugin that chose the default ``drop`` policy: each
chunk read from the app is written to the runtime's own stdout/stderr unchanged, then split into
lines and offered to subscribers. Writes to a pipe or terminal run in a worker thread so a slow
reader of the runtime's output slows the app (as it would without sidecar-run) but never the
event loop. When the runtime's stdout and stderr are the same file (``2>&1``, one terminal), the
app gets one channel for both so the order of its writes is kept.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import termios

import anyio
import msgspec
from anyio.abc import TaskGroup

from ._config import OutputConfig
from ._events import Hub, OutputLine

__all__ = ["Channel", "OutputCapture", "PreparedOutput", "StreamStats"]

_READ_SIZE = 65536


class StreamStats(msgspec.Struct):
    """Counters for one stream over the runtime's life."""

    bytes: int = 0
    lines: int = 0
    passthrough_errors: int = 0


def _is_nonblocking_target(fd: int) -> bool:
    """Regular files and /dev/null take writes without blocking: no thread needed."""
    try:
        st = os.fstat(fd)
    except OSError:
        return True
    if stat.S_ISREG(st.st_mode):
        return True
    null = os.stat(os.devnull)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Channel:
    """Reads one app stream until EOF, passes it through and publishes its lines."""

    def __init__(
        self,
        name: str,
        fd: int,
        target: int | None,
        hub: Hub[OutputLine],
        stats: StreamStats,
        *,
        max_line: int,
        pid: int = 0,
    ) -> None:
        self.name = name
        self.fd = fd
        self.target = target
        self.pid = pid
        self._hub = hub
        self._stats = stats
        self._max_line = max_line
        self._partial = b""
        self._inline = target is None or _is_nonblocking_target(target)
        self.eof = anyio.Event()
        self.done = anyio.Event()
        self.scope = anyio.CancelScope()
        os.set_blocking(fd, False)

    async def run(self) -> None:
        """Pump until EOF. Cancelling it reads whatever is already buffered, then closes."""
        try:
            with self.scope:
                while not self.eof.is_set():
                    await anyio.wait_readable(self.fd)
                    await self._read_available()
        finally:
            with anyio.CancelScope(shield=True):
                if not self.eof.is_set():
                    await self._read_available()
                await self._flush_partial()
                anyio.notify_closing(self.fd)
                os.close(self.fd)
                self.done.set()

    async def _read_available(self) -> None:
        while True:
            try:
                chunk = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno != errno.EIO:  # a pty master reads EIO once the slave is gone
                    raise
                chunk = b""
            if not chunk:
                self.eof.set()
                return
            await self._deliver(chunk)
            if self.eof.is_set():
                return
            # Publishing rarely waits (only for a full ``block`` subscriber): let the other
            # tasks (the subscribers among them) run once per chunk.
            await anyio.lowlevel.checkpoint()

    async def _deliver(self, chunk: bytes) -> None:
        self._stats.bytes += len(chunk)
        self._stats.lines += chunk.count(b"\n")
        if self.target is not None:
            try:
                if self._inline:
                    _write_all(self.target, chunk)
                else:
                    await anyio.to_thread.run_sync(
                        _write_all, self.target, chunk, abandon_on_cancel=True
                    )
            except BrokenPipeError:
                # Our own reader went away: stop reading, so the app meets EPIPE/SIGPIPE as it
                # would have writing there itself.
                self._stats.passthrough_errors += 1
                self.target = None
                self.eof.set()
                return
            except OSError:
                self._stats.passthrough_errors += 1
        if self._hub.subscriber_count:
            await self._split(chunk)
        elif self._partial:
            self._partial = b""

    async def _split(self, chunk: bytes) -> None:
        data = self._partial + chunk if self._partial else chunk
        start = 0
        limit = self._max_line
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            while end - start > limit:
                await self._publish(data[start : start + limit], partial=True)
                start += limit
            await self._publish(data[start:end], partial=False)
            start = end + 1
        while len(data) - start >= limit:
            await self._publish(data[start : start + limit], partial=True)
            start += limit
        self._partial = data[start:]

    async def _flush_partial(self) -> None:
        if self._partial and self._hub.subscriber_count:
            await self._publish(self._partial, partial=True)
        self._partial = b""

    async def _publish(self, line: bytes, *, partial: bool) -> None:
        await self._hub.publish(OutputLine(self.name, line, self.pid, partial))


class PreparedOutput(msgspec.Struct):
    """The child's ends (to pass to spawn) and our ends (to read) for one run of the app."""

    child_stdout: int | None = None
    child_stderr: int | None = None
    ours: list[tuple[str, int, int | None]] = msgspec.field(
        default_factory=list
    )  # name, fd, target
    child_ends: list[int] = msgspec.field(default_factory=list)


class OutputCapture:
    """Creates the channels for each run of the app and pumps them in a task group."""

    def __init__(self, config: OutputConfig, hub: Hub[OutputLine]) -> None:
        self.config = config
        self.hub = hub
        self.stats = {"stdout": StreamStats(), "stderr": StreamStats()}
        self._channels: list[Channel] = []
        self._tg: TaskGroup | None = None
        self._ptys: list[tuple[int, int]] = []  # (master, our terminal fd) for SIGWINCH

    def bind(self, tg: TaskGroup) -> None:
        self._tg = tg

    def prepare(self) -> PreparedOutput:
        """Decide each stream's mode for the next run and create its pipe or pty."""
        prepared = PreparedOutput()
        targets = {"stdout": 1, "stderr": 2}
        ids: dict[str, tuple[int, int] | None] = {}
        for name, fd in targets.items():
            try:
                st = os.fstat(fd)
                ids[name] = (st.st_dev, st.st_ino)
            except OSError:
                ids[name] = None
        shared = ids["stdout"] is not None and ids["stdout"] == ids["stderr"]
        wanted = {name: self._mode_for(fd) for name, fd in targets.items()}
        if shared and wanted["stdout"] == wanted["stderr"]:
            if wanted["stdout"] != "inherit":
                read_fd, write_fd = self._open(wanted["stdout"], 1)
                prepared.child_stdout = prepared.child_stderr = write_fd
                prepared.ours.append(("stdout", read_fd, 1))
                prepared.child_ends.append(write_fd)
            return prepared
        for name, fd in targets.items():
            if wanted[name] == "inherit":
                continue
            read_fd, write_fd = self._open(wanted[name], fd)
            if name == "stdout":
                prepared.child_stdout = write_fd
            else:
                prepared.child_stderr = write_fd
            prepared.ours.append((name, read_fd, fd))
            prepared.child_ends.append(write_fd)
        return prepared

    def _mode_for(self, fd: int) -> str:
        mode = self.config.mode
        if mode != "auto":
            return mode
        if os.isatty(fd):
            return "pty" if self.hub.subscriber_count else "inherit"
        return "pipe"

    def _open(self, mode: str, target: int) -> tuple[int, int]:
        if mode == "pipe":
            return os.pipe()
        master, slave = os.openpty()
        if os.isatty(target):
            attrs = termios.tcgetattr(target)
            self._ptys.append((master, target))
            self._copy_winsize(target, master)
        else:
            attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.OPOST  # the bytes pass through as written; our terminal renders
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        return master, slave

    @staticmethod
    def _copy_winsize(source: int, dest: int) -> None:
        try:
            size = fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(dest, termios.TIOCSWINSZ, size)
        except OSError:
            pass

    def sync_winsize(self) -> None:
        """Copy our terminal's size to the app's ptys (on SIGWINCH, before forwarding it)."""
        for master, target in self._ptys:
            self._copy_winsize(target, master)

    def start(self, prepared: PreparedOutput, pid: int) -> list[Channel]:
        """Close the child's ends in this process and start pumping ours."""
        assert self._tg is not None, "OutputCapture.bind() first"
        for fd in prepared.child_ends:
            os.close(fd)
        channels = []
        for name, fd, target in prepared.ours:
            channel = Channel(
                name,
                fd,
                target,
                self.hub,
                self.stats[name],
                max_line=self.config.max_line_bytes,
                pid=pid,
            )
            self._channels.append(channel)
            channels.append(channel)
            self._tg.start_soon(self._pump, channel, name=f"output-{name}")
        return channels

    def abandon(self, prepared: PreparedOutput) -> None:
        """Close both ends after a failed spawn."""
        for fd in prepared.child_ends:
            os.close(fd)
        for _, fd, _ in prepared.ours:
            os.close(fd)
        ours = {fd for _, fd, _ in prepared.ours}
        self._ptys = [(m, t) for m, t in self._ptys if m not in ours]

    async def _pump(self, channel: Channel) -> None:
        try:
            await channel.run()
        finally:
            self._channels.remove(channel)
            self._ptys = [(m, t) for m, t in self._ptys if m != channel.fd]

    async def drain(self, channels: list[Channel], grace: float) -> None:
        """Wait up to ``timeout`` for EOF on ``channels``, then read what is left and close.

        Everything the app wrote before it exited is already in the pipe, so it is never lost;
        ``grace`` only bounds waiting for descendants that still hold the pipe open.
        """
        with anyio.move_on_after(grace):
            for channel in channels:
                await channel.eof.wait()
        for channel in channels:
            channel.scope.cancel()
        for channel in channels:
            await channel.done.wait()

    async def close(self, grace: float) -> None:
        """Drain every channel still open (also those of earlier runs), then end the hub."""
        await self.drain(list(self._channels), grace)
        self.hub.close()
