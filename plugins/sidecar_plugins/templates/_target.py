"""Writing a rendered file atomically, with its mode and owner.

A reader of the target sees the old content or the new one, never a mix and never a partial
file: the data goes to a temporary file in the target's directory (``.NAME.XXXXXX.tmp``),
is owned, chmodded and fsynced, then renamed over the target with ``os.replace``, and the
directory is fsynced so the rename survives a crash. On any failure (disk full, permission,
a directory in the way) the temporary file is removed and the target is left as it was.

The owner changes only when sidecar-run runs as root, or when the change is a no-op (an
unprivileged user may give a file to one of its own groups); anything else is a clear error.
Without ``owner``/``group``, root keeps an existing target's owner and group.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Collection

from ._config import DEFAULT_MODE, format_mode

__all__ = ["Target", "WriteError", "ownership"]


class WriteError(Exception):
    """Raised by :class:`Target` when the target cannot be written; the message is one line."""


def ownership(
    uid: int | None,
    gid: int | None,
    existing: os.stat_result | None,
    *,
    euid: int,
    groups: Collection[int],
) -> tuple[int, int]:
    """The ``(uid, gid)`` to give the new file (``-1``: leave as created), or WriteError.

    ``euid`` and ``groups`` (the effective gid and supplementary groups) describe this process.
    """
    if euid == 0:
        if uid is None and existing is not None:
            uid = existing.st_uid
        if gid is None and existing is not None:
            gid = existing.st_gid
        return (-1 if uid is None else uid, -1 if gid is None else gid)
    if uid is not None and uid != euid:
        msg = (
            f"owner: giving the file to uid {uid} needs root (sidecar-run runs as uid {euid}); "
            "run as root or remove owner"
        )
        raise WriteError(msg)
    if gid is not None and gid not in groups:
        msg = (
            f"group: giving the file to gid {gid} needs root or membership of that group "
            f"(sidecar-run runs as uid {euid}, groups {sorted(groups)})"
        )
        raise WriteError(msg)
    return (-1, -1 if gid is None else gid)


def _process_groups() -> set[int]:
    return {os.getegid(), *os.getgroups()}


class Target:
    """One file that a template renders into."""

    def __init__(self, path: str, *, mode: int | None, uid: int | None, gid: int | None) -> None:
        self.path = path
        self.mode = mode
        self.uid = uid
        self.gid = gid

    def read(self) -> bytes | None:
        """The target's content now; None when it is missing or cannot be read."""
        try:
            with open(self.path, "rb") as fh:
                return fh.read()
        except OSError:
            return None

    def _fail(self, err: OSError, what: str = "write") -> WriteError:
        reason = err.strerror or str(err)
        return WriteError(f"cannot {what} {self.path}: {reason}")

    def _existing(self) -> os.stat_result | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise self._fail(err) from None
        if stat.S_ISDIR(st.st_mode):
            msg = f"cannot write {self.path}: it is a directory"
            raise WriteError(msg)
        return st

    def write(self, data: bytes) -> None:
        """Replace the target with ``data`` atomically (see the module docstring)."""
        existing = self._existing()
        mode = self.mode
        if mode is None:
            mode = stat.S_IMODE(existing.st_mode) if existing is not None else DEFAULT_MODE
        uid, gid = ownership(
            self.uid, self.gid, existing, euid=os.geteuid(), groups=_process_groups()
        )
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, mode=0o755, exist_ok=True)
            fd, temp = tempfile.mkstemp(
                prefix=f".{os.path.basename(self.path)}.", suffix=".tmp", dir=directory
            )
        except OSError as err:
            raise self._fail(err) from None
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if uid != -1 or gid != -1:
                    os.fchown(fd, uid, gid)  # before chmod: chown clears set-id bits
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, self.path)
        except OSError as err:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise self._fail(err) from None
        _fsync_dir(directory)

    def fix_metadata(self) -> list[str]:
        """Give an unchanged target the configured mode and owner; what changed, e.g.
        ``["mode 0600"]``."""
        try:
            st = os.stat(self.path)
        except OSError as err:
            raise self._fail(err, what="read") from None
        changed = []
        uid = -1 if self.uid is None or self.uid == st.st_uid else self.uid
        gid = -1 if self.gid is None or self.gid == st.st_gid else self.gid
        try:
            if uid != -1 or gid != -1:
                ownership(
                    None if uid == -1 else uid,
                    None if gid == -1 else gid,
                    st,
                    euid=os.geteuid(),
                    groups=_process_groups(),
                )
                os.chown(self.path, uid, gid)
                changed.append(
                    f"owner {st.st_uid if uid == -1 else uid}:{st.st_gid if gid == -1 else gid}"
                )
                st = os.stat(self.path)
            if self.mode is not None and stat.S_IMODE(st.st_mode) != self.mode:
                os.chmod(self.path, self.mode)
                changed.append(f"mode {format_mode(self.mode)}")
        except OSError as err:
            raise self._fail(err, what="change the mode or owner of") from None
        return changed


def _fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
