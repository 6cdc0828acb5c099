"""Real stand-ins for the templates plugin's world: a Kubernetes ConfigMap volume updated the way
the kubelet's AtomicWriter does it, and a fake app that rereads its config file on SIGHUP."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio

from tests.conftest import python_app

T = TypeVar("T")

#: argv + [CONFIG, RECORDS]: reads CONFIG at start and on every SIGHUP, appending one JSON line
#: ``{"event": "start"|"hup", "pid": ..., "content": ...}`` to RECORDS per read.
HUP_APP = python_app(
    """
    import json, os, signal, sys, time
    config, records = sys.argv[1], sys.argv[2]

    def record(event):
        with open(config) as fh:
            content = fh.read()
        with open(records, "a") as fh:
            fh.write(json.dumps({"event": event, "pid": os.getpid(), "content": content}) + "\\n")

    signal.signal(signal.SIGHUP, lambda *_: record("hup"))
    record("start")
    while True:
        time.sleep(3600)
    """
)


class ConfigMapVolume:
    """A directory laid out and updated exactly as the kubelet's AtomicWriter does.

    Files live in a timestamped directory ``..2026_11_26_10_00_00.<n>``; ``..data`` links to it;
    each key is a symlink ``key -> ..data/key``. An update writes a new timestamped directory,
    renames a new ``..data_tmp`` symlink over ``..data`` (the atomic step), fixes the key links
    and removes the old directory.
    """

    def __init__(self, root: Path, payload: dict[str, str]) -> None:
        self.root = root
        self.generation = 0
        root.mkdir(parents=True)
        self.update(payload)

    def path(self, key: str) -> str:
        return str(self.root / key)

    def update(self, payload: dict[str, str]) -> None:
        self.generation += 1
        data = self.root / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        stamp = f"..2026_11_26_10_00_00.{self.generation:09d}"
        (self.root / stamp).mkdir()
        for key, value in payload.items():
            (self.root / stamp / key).write_text(value)
        tmp = self.root / "..data_tmp"
        os.symlink(stamp, tmp)
        os.rename(tmp, data)
        for key in payload:
            if not (self.root / key).is_symlink():
                os.symlink(f"..data/{key}", self.root / key)
        for entry in self.root.iterdir():
            if not entry.name.startswith(".") and entry.name not in payload:
                entry.unlink()
        if old is not None:
            shutil.rmtree(self.root / old)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The fake app's records so far."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def wait_for(check: Callable[[], T | None], seconds: float = 10.0, what: str = "") -> T:
    """Poll ``check`` every 20 ms until it returns something truthy; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            msg = f"timed out waiting for {what or check}"
            raise AssertionError(msg)
        await anyio.sleep(0.02)


def wait_for_sync(check: Callable[[], T | None], seconds: float = 10.0, what: str = "") -> T:
    """:func:`wait_for` for tests without an event loop."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            msg = f"timed out waiting for {what or check}"
            raise AssertionError(msg)
        time.sleep(0.02)


def sample(registry: Any, name: str, **labels: str) -> float | None:
    """One sample's value from a prometheus_client registry, or None."""
    value: float | None = registry.get_sample_value(name, labels)
    return value
