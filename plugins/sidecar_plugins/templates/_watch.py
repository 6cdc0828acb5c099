"""Watching what templates read: which directories to watch, which events matter, the watcher.

Kubernetes updates a ConfigMap or Secret volume by a symlink swap: the files are written into a
new ``..2026_11_26_10_00_00.123`` directory, a ``..data_tmp`` symlink to it is renamed over
``..data``, and each key (``app.conf -> ..data/app.conf``) now resolves into the new directory.
Watching the file's own inode would miss that. So every path a render read is resolved link by
link (:func:`link_chain`), and the *parent directory* of the path and of each symlink met on the
way is watched, non-recursively; an event on the path, on one of those symlinks or on the final
file is relevant (:class:`WatchPlan`). A missing path is watched through its nearest existing
ancestor, so its creation is seen. The plan is recomputed after every batch of events, since a
swap changes where the links point.

The watcher is watchfiles' Rust backend (inotify through the ``notify`` crate), or its polling
backend with ``force_polling``, or automatically when inotify cannot be used (no inotify, out of
watches or instances). It is driven directly (``RustNotify``) rather than through ``awatch``:
that tells when the watches are in place (so a change made while the watcher restarted can be
checked for) and stops within ``step`` of a cancellation instead of at a timeout.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import Any, NamedTuple

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

__all__ = ["WatchPlan", "Watcher", "link_chain", "merge_dirs", "plan_sources"]

#: As the kernel's limit on symlinks in one path resolution (ELOOP).
_MAX_LINKS = 40
#: How long watchfiles groups raw events before handing them over (ms); the plugin debounces.
_STEP_MS = 50
_RETRY_INITIAL = 1.0
_RETRY_MAX = 30.0


def link_chain(path: str) -> tuple[list[str], str]:
    """The symlinks met while resolving ``path`` (each named inside a real directory), and the
    path it resolves to. Missing components end the resolution there."""
    links: list[str] = []
    pending = os.path.abspath(path)
    for _ in range(_MAX_LINKS):
        parts = [p for p in pending.split(os.sep) if p]
        current = os.sep
        for index, part in enumerate(parts):
            candidate = os.path.join(current, part)
            if os.path.islink(candidate):
                try:
                    target = os.readlink(candidate)
                except OSError:
                    return links, candidate
                links.append(candidate)
                pending = os.path.normpath(os.path.join(current, target, *parts[index + 1 :]))
                break
            current = candidate
        else:
            return links, pending
    return links, pending


def _ancestors(path: str) -> list[str]:
    found = []
    parent = os.path.dirname(path)
    while parent and parent != path:
        found.append(parent)
        path, parent = parent, os.path.dirname(parent)
    return found


def _watchable(directory: str) -> str:
    """``directory`` if it exists, else its nearest existing ancestor; resolved."""
    while not os.path.isdir(directory):
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return os.path.realpath(directory)


class WatchPlan(NamedTuple):
    """What to watch for one template and which events concern it."""

    dirs: frozenset[str]
    paths: frozenset[str]
    parents: frozenset[str]

    def matches(self, path: str) -> bool:
        """Whether an event on ``path`` may change what the template renders."""
        return path in self.paths or os.path.dirname(path) in self.parents


def plan_sources(files: Iterable[str], dirs: Iterable[str]) -> WatchPlan:
    """The plan for a render that read ``files`` and listed ``dirs`` (absolute paths)."""
    watch: set[str] = set()
    paths: set[str] = set()
    parents: set[str] = set()
    for path, listed in [*((f, False) for f in files), *((d, True) for d in dirs)]:
        links, final = link_chain(path)
        paths.update(links)
        paths.add(final)
        paths.update(_ancestors(final))
        for step in [*links, final]:
            watch.add(_watchable(os.path.dirname(step)))
        if listed:
            parents.add(final)
            if os.path.isdir(final):
                watch.add(os.path.realpath(final))
    return WatchPlan(frozenset(watch), frozenset(paths), frozenset(parents))


def merge_dirs(plans: Iterable[WatchPlan]) -> frozenset[str]:
    """Every directory that some plan watches."""
    merged: set[str] = set()
    for plan in plans:
        merged |= plan.dirs
    return frozenset(merged)


class Watcher:
    """Runs watchfiles over a set of directories and sends each batch of changed paths.

    An empty batch means "plan again": a directory vanished before it could be watched.
    ``polling`` turns true for good when notifications cannot be used.
    """

    def __init__(self, *, force_polling: bool, poll_interval: float, log: Any) -> None:
        self.polling = force_polling
        self.poll_ms = max(1, round(poll_interval * 1000))
        self.log = log
        self._limiter = anyio.CapacityLimiter(1)

    async def run(
        self,
        dirs: frozenset[str],
        send: MemoryObjectSendStream[frozenset[str]],
        *,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Watch ``dirs`` until cancelled; ``started()`` once the watches are in place."""
        from watchfiles._rust_notify import RustNotify

        delay = _RETRY_INITIAL
        started = False
        while True:
            try:
                notify = RustNotify(sorted(dirs), False, self.polling, self.poll_ms, False, True)
            except FileNotFoundError:
                if not started:
                    task_status.started()
                await send.send(frozenset())
                return
            except (OSError, RuntimeError) as err:
                reason = " ".join(str(err).split()) or type(err).__name__
                if not self.polling:
                    self.polling = True
                    self.log.warning(
                        "template_watch_polling", reason=reason, poll_interval=self.poll_ms / 1000
                    )
                    continue
                self.log.error("template_watch_failed", reason=reason, retry_in=delay)
                if not started:
                    started = True
                    task_status.started()
                await anyio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
                continue
            with notify:
                if not started:
                    task_status.started()
                await self._follow(notify, send)
                return

    async def _follow(self, notify: Any, send: MemoryObjectSendStream[frozenset[str]]) -> None:
        stop = threading.Event()

        async def stop_on_cancel() -> None:
            try:
                await anyio.sleep_forever()
            finally:
                stop.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_cancel)
            while not stop.is_set():
                result = await anyio.to_thread.run_sync(
                    notify.watch, _STEP_MS, _STEP_MS, 0, stop, limiter=self._limiter
                )
                if isinstance(result, set) and result:
                    await send.send(frozenset(path for _, path in result))
            tg.cancel_scope.cancel()
