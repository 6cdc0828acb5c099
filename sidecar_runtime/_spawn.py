"""The spawn API: start a process in its own session with a clean slate.

Every process the runtime or a plugin starts goes through :func:`spawn`, so that the reaper knows
its pid before it can exit. The child gets its own session and process group, an empty signal
mask, default dispositions for every signal (Python ignores SIGPIPE and SIGXFSZ; the child must
not inherit that), the caller's umask and rlimits, and no descriptor the runtime opened itself
(Python opens them close-on-exec). ``os.posix_spawn`` is used unless a user, group or working
directory switch needs ``fork``/``exec``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import warnings
from collections.abc import Mapping, Sequence

import msgspec

from ._errors import SpawnError

__all__ = ["SpawnRequest", "resolve_command", "spawn"]

_DEFAULT_SIGNALS = sorted(
    {int(s) for s in signal.valid_signals()} - {int(signal.SIGKILL), int(signal.SIGSTOP)}
)


class SpawnRequest(msgspec.Struct, frozen=True):
    """What to start. ``stdin``/``stdout``/``stderr``: ``None`` inherits the runtime's own."""

    argv: Sequence[str]
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    uid: int | None = None
    gid: int | None = None
    groups: Sequence[int] | None = None
    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None
    close_stdin: bool = False


def resolve_command(argv0: str, env: Mapping[str, str], cwd: str | None = None) -> str:
    """Find ``argv0`` as ``execvp`` would; raise :class:`SpawnError` (127/126) otherwise."""
    if "/" in argv0:
        path = argv0 if cwd is None or os.path.isabs(argv0) else os.path.join(cwd, argv0)
        if not os.path.exists(path):
            msg = f"{argv0}: command not found (no such file)"
            raise SpawnError(msg, exit_code=127, errno=errno.ENOENT)
        if os.path.isdir(path):
            msg = f"{argv0}: is a directory, not an executable"
            raise SpawnError(msg, exit_code=126, errno=errno.EISDIR)
        if not os.access(path, os.X_OK):
            msg = f"{argv0}: permission denied (not executable)"
            raise SpawnError(msg, exit_code=126, errno=errno.EACCES)
        return path
    denied = None
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", argv0)
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            denied = candidate
    if denied is not None:
        msg = f"{argv0}: permission denied ({denied} is not executable)"
        raise SpawnError(msg, exit_code=126, errno=errno.EACCES)
    msg = f"{argv0}: command not found in PATH"
    raise SpawnError(msg, exit_code=127, errno=errno.ENOENT)


def _exec_error(argv0: str, err: OSError) -> SpawnError:
    code = 127 if err.errno == errno.ENOENT else 126
    reason = os.strerror(err.errno) if err.errno else str(err)
    return SpawnError(f"{argv0}: cannot execute: {reason}", exit_code=code, errno=err.errno)


def spawn(request: SpawnRequest) -> int:
    """Start ``request`` and return its pid. It leads a new session and process group.

    Must be called from the thread that owns the reaper, with no ``await`` between this call and
    registering the pid with the reaper.
    """
    if not request.argv:
        msg = "no command to run"
        raise SpawnError(msg, exit_code=127)
    env = dict(os.environ if request.env is None else request.env)
    path = resolve_command(request.argv[0], env, request.cwd)
    if request.cwd is None and request.uid is None and request.gid is None:
        return _posix_spawn(path, request, env)
    return _fork_exec(path, request, env)


def _file_actions(request: SpawnRequest) -> list[tuple[int, ...]]:
    actions: list[tuple[int, ...]] = []
    if request.close_stdin:
        actions.append((os.POSIX_SPAWN_CLOSE, 0))
    for target, fd in ((0, request.stdin), (1, request.stdout), (2, request.stderr)):
        if fd is not None:
            actions.append((os.POSIX_SPAWN_DUP2, fd, target))
    return actions


def _posix_spawn(path: str, request: SpawnRequest, env: dict[str, str]) -> int:
    try:
        return os.posix_spawn(
            path,
            list(request.argv),
            env,
            file_actions=_file_actions(request),
            setsid=True,
            setsigmask=(),
            setsigdef=_DEFAULT_SIGNALS,
        )
    except OSError as err:
        raise _exec_error(request.argv[0], err) from None


def _fork_exec(path: str, request: SpawnRequest, env: dict[str, str]) -> int:
    """fork/exec for what posix_spawn cannot do (cwd, uid/gid). Exec errors come back by pipe."""
    read_end, write_end = os.pipe()  # both close-on-exec
    with warnings.catch_warnings():
        # Python 3.12+ warns that fork() in a threaded process may deadlock; the child only
        # makes async-signal-safe system calls before exec.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, reported through the pipe
        try:
            os.close(read_end)
            os.setsid()
            for sig in _DEFAULT_SIGNALS:
                with contextlib.suppress(OSError, ValueError):
                    signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            for target, fd in ((0, request.stdin), (1, request.stdout), (2, request.stderr)):
                if fd is not None:
                    os.dup2(fd, target)
            if request.close_stdin:
                os.close(0)
            if request.cwd is not None:
                os.chdir(request.cwd)
            if request.gid is not None:
                os.setgroups(list(request.groups or [request.gid]))
                os.setgid(request.gid)
            if request.uid is not None:
                os.setuid(request.uid)
            os.execve(path, list(request.argv), env)  # noqa: S606 - exec is the point
        except OSError as err:
            os.write(write_end, str(err.errno or 0).encode())
        finally:
            os._exit(127)
    os.close(write_end)
    try:
        data = b""
        while chunk := os.read(read_end, 64):
            data += chunk
    finally:
        os.close(read_end)
    if data:
        os.waitpid(pid, 0)  # reap the failed child here: it never ran the command
        code = int(data)
        if request.cwd is not None and code == errno.ENOENT and not os.path.isdir(request.cwd):
            msg = f"working directory {request.cwd!r}: no such directory"
            raise SpawnError(msg, exit_code=127, errno=code)
        raise _exec_error(request.argv[0], OSError(code, os.strerror(code)))
    return pid
