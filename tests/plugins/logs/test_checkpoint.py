"""The file source's checkpoint store: monotonic commits, atomic flushes, corrupt files set
aside, failing writes retried, stale entries forgotten, the default state directory."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sidecar_plugins.logs._checkpoint import CheckpointStore, default_state_dir

from tests.plugins.logs.helpers import IS_ROOT, Clock, RecordingLog, as_nobody


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can traverse (``tmp_path``'s parents are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="sidecar-ckpt-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def new_store(directory: Path, **kwargs: Any) -> tuple[CheckpointStore, RecordingLog]:
    log = RecordingLog()
    store = CheckpointStore(str(directory), log=log, **kwargs)
    store.load()
    return store, log


def track(store: CheckpointStore, key: str, offset: int = 0, ino: int = 1) -> None:
    store.track(key, path=f"/logs/{key}.log", dev=7, ino=ino, fingerprint="ab" * 8, offset=offset)


def on_disk(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "checkpoints.json").read_bytes())
    return data


def test_commit_is_monotonic_and_ignores_unknown_keys(tmp_path: Path) -> None:
    """Offsets only move forward; commits to keys never tracked (or forgotten) are ignored."""
    store, _ = new_store(tmp_path)
    track(store, "a", offset=10)
    store.commit("a", 50)
    store.commit("a", 30)
    store.commit("b", 99)
    assert store.get("a") == store.committed("a") == 50
    assert store.get("b") is None
    store.forget("a")
    store.commit("a", 70)
    assert store.get("a") is None
    assert (store.stats.commits, store.stats.commits_ignored, store.stats.forgotten) == (2, 2, 1)


def test_flush_round_trips_and_leaves_no_temp_files(tmp_path: Path) -> None:
    """A flush writes every field; a reload sees them; only the document is left in the dir."""
    clock = Clock()
    store, _ = new_store(tmp_path / "state", clock=clock)
    track(store, "a")
    store.commit("a", 1234)
    store.note_scan(clock.now - 5)
    assert store.flush() is True
    assert os.listdir(tmp_path / "state") == ["checkpoints.json"]
    doc = on_disk(tmp_path / "state")
    assert doc["version"] == 1
    assert doc["scanned"] == clock.now - 5
    assert doc["files"]["a"] == {
        "path": "/logs/a.log",
        "dev": 7,
        "ino": 1,
        "fingerprint": "ab" * 8,
        "offset": 1234,
        "updated": clock.now,
    }
    again, log = new_store(tmp_path / "state")
    assert again.get("a") == 1234
    assert again.previous_scan == clock.now - 5
    assert again.find(7, 1, "ab" * 8) == ("a", 1234)
    assert log.events == []


def test_flush_writes_only_when_dirty(tmp_path: Path) -> None:
    """Nothing changed, nothing written; a lower commit does not dirty the store."""
    store, _ = new_store(tmp_path)
    assert store.flush() is False
    assert not (tmp_path / "checkpoints.json").exists()
    track(store, "a", offset=100)
    assert store.flush() is True
    store.commit("a", 50)
    assert store.flush() is False
    assert store.stats.flushes == 1


def test_maybe_flush_honours_the_interval(tmp_path: Path) -> None:
    """The periodic path writes at most once per ``flush_interval``."""
    clock = Clock()
    store, _ = new_store(tmp_path, clock=clock, flush_interval=1.0)
    track(store, "a")
    assert store.maybe_flush() is True
    store.commit("a", 10)
    clock.now += 0.5
    assert store.maybe_flush() is False
    clock.now += 0.6
    assert store.maybe_flush() is True
    assert on_disk(tmp_path)["files"]["a"]["offset"] == 10


def test_scan_time_is_the_earliest_of_the_tailers(tmp_path: Path) -> None:
    """With several tailers on one store, the saved scan time is the oldest latest round."""
    store, _ = new_store(tmp_path)
    first, second = object(), object()
    store.note_scan(100.0, scanner=first)
    store.note_scan(90.0, scanner=second)
    store.note_scan(110.0, scanner=first)
    track(store, "a")
    store.flush()
    assert on_disk(tmp_path)["scanned"] == 90.0


def test_the_first_scan_ever_is_saved(tmp_path: Path) -> None:
    """A store that never recorded a glob round is dirtied by the first one, so a restart knows
    the previous run happened (files created since then are new, not "present at start")."""
    store, _ = new_store(tmp_path)
    store.note_scan(123.0)
    assert store.flush() is True
    again, _ = new_store(tmp_path)
    assert again.previous_scan == 123.0
    again.note_scan(456.0)
    assert not again.dirty


CORRUPT = {
    "bad json": b"{not json",
    "truncated": b'{"version":1,"saved":1.0,"files":{"a":{"path":"/x","dev":1,',
    "empty": b"",
    "wrong shape": b"[1, 2, 3]",
    "wrong type": b'{"version":1,"saved":1.0,"files":{"a":{"path":"/x","dev":1,"ino":2,'
    b'"fingerprint":"f","offset":"ten","updated":1.0}}}',
    "negative offset": b'{"version":1,"saved":1.0,"files":{"a":{"path":"/x","dev":1,"ino":2,'
    b'"fingerprint":"f","offset":-1,"updated":1.0}}}',
    "unknown version": b'{"version":2,"saved":1.0,"files":{}}',
    "binary": bytes(range(256)),
}


@pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
def test_corrupt_file_is_reported_moved_aside_and_replaced(tmp_path: Path, content: bytes) -> None:
    """One event naming the file and reason; the file moves to ``.corrupt-<time>``; the store
    starts empty and the next flush writes a valid document."""
    (tmp_path / "checkpoints.json").write_bytes(content)
    clock = Clock()
    store, log = new_store(tmp_path, clock=clock)
    assert len(store) == 0
    [event] = log.named("checkpoint_file_corrupt")
    assert len(log.events) == 1
    moved = tmp_path / f"checkpoints.json.corrupt-{int(clock.now)}"
    assert event["path"] == str(tmp_path / "checkpoints.json")
    assert event["moved_to"] == str(moved)
    assert event["reason"]
    assert "\n" not in event["reason"]
    assert moved.read_bytes() == content
    assert store.stats.corrupt_files == 1
    assert store.flush() is True
    assert on_disk(tmp_path)["files"] == {}


def test_a_second_corruption_in_the_same_second_keeps_both(tmp_path: Path) -> None:
    """The aside name never overwrites an earlier corrupt file."""
    clock = Clock()
    for content in (b"first", b"second"):
        (tmp_path / "checkpoints.json").write_bytes(content)
        new_store(tmp_path, clock=clock)
    first = tmp_path / f"checkpoints.json.corrupt-{int(clock.now)}"
    second = tmp_path / f"checkpoints.json.corrupt-{int(clock.now)}-2"
    assert (first.read_bytes(), second.read_bytes()) == (b"first", b"second")


def test_a_directory_in_place_of_the_file_is_set_aside(tmp_path: Path) -> None:
    """An unreadable checkpoint path (here a directory) is reported and moved, not a crash."""
    (tmp_path / "checkpoints.json").mkdir()
    store, log = new_store(tmp_path)
    [event] = log.named("checkpoint_file_corrupt")
    assert "directory" in event["reason"].lower()
    track(store, "a")
    assert store.flush() is True
    assert on_disk(tmp_path)["files"]["a"]["offset"] == 0


def test_unreadable_file_is_reported_and_set_aside(open_dir: Path) -> None:
    """A checkpoint file without read permission: one event, moved aside, store empty."""
    state = open_dir / "state"
    state.mkdir()
    (state / "checkpoints.json").write_bytes(b'{"version":1,"saved":1.0,"files":{}}')
    (state / "checkpoints.json").chmod(0o000)
    if IS_ROOT:
        state.chmod(0o777)
        with as_nobody():
            store, log = new_store(state)
    else:
        store, log = new_store(state)
    [event] = log.named("checkpoint_file_corrupt")
    assert event["reason"] == "Permission denied"
    assert "moved_to" in event
    assert len(store) == 0


def test_flush_failure_is_logged_once_and_retried(tmp_path: Path) -> None:
    """An OSError on write (here: the state dir's parent is a file) is counted and logged once,
    the store stays dirty, and the first flush after the cause is gone writes everything."""
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")
    store, log = new_store(blocker / "state")
    track(store, "a")
    store.commit("a", 42)
    assert store.flush() is False
    assert store.flush() is False
    assert store.dirty
    assert store.stats.flush_errors == 2
    [event] = log.named("checkpoint_flush_failed")
    assert event["reason"] == "Not a directory"
    blocker.unlink()
    assert store.flush() is True
    assert on_disk(blocker / "state")["files"]["a"]["offset"] == 42
    assert len(log.named("checkpoint_flush_recovered")) == 1
    assert not store.dirty


def test_flush_into_read_only_directory_leaves_no_temp_file(open_dir: Path) -> None:
    """EACCES on the temp file (read-only state dir) is logged; the old document is intact."""
    state = open_dir / "state"
    store, log = new_store(state)
    track(store, "a")
    store.commit("a", 5)
    assert store.flush()
    store.commit("a", 9)
    state.chmod(0o555)
    try:
        if IS_ROOT:
            with as_nobody():
                assert store.flush() is False
        else:
            assert store.flush() is False
    finally:
        state.chmod(0o755)
    assert log.named("checkpoint_flush_failed")[0]["reason"] == "Permission denied"
    assert os.listdir(state) == ["checkpoints.json"]
    assert on_disk(state)["files"]["a"]["offset"] == 5
    assert store.flush() is True
    assert on_disk(state)["files"]["a"]["offset"] == 9


def test_refresh_forgets_entries_unseen_for_forget_after(tmp_path: Path) -> None:
    """Entries of files no tailer sees expire after ``forget_after``; live ones never do."""
    clock = Clock()
    store, log = new_store(tmp_path, clock=clock, forget_after=100.0)
    track(store, "live")
    track(store, "gone", ino=2)
    store.flush()
    clock.now += 60
    assert store.refresh({"live"}) == []
    clock.now += 50
    assert store.refresh({"live"}) == ["gone"]
    assert store.keys() == ["live"]
    assert log.named("checkpoint_entries_forgotten")[0]["count"] == 1
    clock.now += 500
    assert store.refresh({"live"}) == []
    assert store.flush()
    assert list(on_disk(tmp_path)["files"]) == ["live"]


def test_refresh_of_idle_live_entries_does_not_write_every_time(tmp_path: Path) -> None:
    """A live entry's ``updated`` is rewritten at most every ``forget_after / 8``."""
    clock = Clock()
    store, _ = new_store(tmp_path, clock=clock, forget_after=80.0)
    track(store, "a")
    store.flush()
    clock.now += 5
    store.refresh({"a"})
    dirty_after_5s = store.dirty
    clock.now += 6
    store.refresh({"a"})
    assert (dirty_after_5s, store.dirty) == (False, True)
    entry = store.entry("a")
    assert entry is not None
    assert entry.updated == clock.now


def test_find_drops_stale_entries_of_a_reused_inode(tmp_path: Path) -> None:
    """Same device and inode, another fingerprint: the old file is gone, its entry too."""
    store, _ = new_store(tmp_path)
    store.track("old", path="/l/a", dev=7, ino=3, fingerprint="1111", offset=500)
    store.track("other", path="/l/b", dev=7, ino=4, fingerprint="1111", offset=9)
    assert store.find(7, 3, "2222") is None
    assert "old" not in store
    assert store.find(7, 4, "1111") == ("other", 9)


def test_load_removes_stale_temp_files_only(tmp_path: Path) -> None:
    """A crashed flush's temp file is removed on load once it is old; a fresh one is kept."""
    stale = tmp_path / ".checkpoints.json.abc123.tmp"
    fresh = tmp_path / ".checkpoints.json.def456.tmp"
    other = tmp_path / ".other.json.abc.tmp"
    for path in (stale, fresh, other):
        path.write_bytes(b"{")
    os.utime(stale, (1000.0, 1000.0))
    os.utime(other, (1000.0, 1000.0))
    new_store(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, other.name])


def test_bad_name_is_rejected() -> None:
    """The document name is a plain file name."""
    with pytest.raises(ValueError, match="name: expected a plain file name"):
        CheckpointStore("/tmp", log=RecordingLog(), name="a/b.json")


def test_entries_encode_with_msgspec(tmp_path: Path) -> None:
    """The document is msgspec JSON with the documented entry fields."""
    store, _ = new_store(tmp_path)
    track(store, "k", offset=3)
    store.flush()
    decoded = msgspec.json.decode((tmp_path / "checkpoints.json").read_bytes())
    assert set(decoded["files"]["k"]) == {"path", "dev", "ino", "fingerprint", "offset", "updated"}


def test_default_state_dir_prefers_the_environment(tmp_path: Path) -> None:
    """``$STATE_DIRECTORY`` wins over everything."""
    env = {"STATE_DIRECTORY": str(tmp_path / "mine"), "HOME": str(tmp_path)}
    assert default_state_dir(env, system_dir=str(tmp_path / "sys")) == str(tmp_path / "mine")


def test_default_state_dir_uses_the_system_dir_when_writable(tmp_path: Path) -> None:
    """A writable (or creatable) system directory is used."""
    env = {"HOME": str(tmp_path / "home")}
    assert default_state_dir(env, system_dir=str(tmp_path / "sys")) == str(tmp_path / "sys")
    (tmp_path / "sys").mkdir()
    assert default_state_dir(env, system_dir=str(tmp_path / "sys")) == str(tmp_path / "sys")


def test_default_state_dir_falls_back_to_the_user_dir(tmp_path: Path) -> None:
    """No writable system dir: ``$XDG_STATE_HOME`` (absolute only) or ``~/.local/state``."""
    unusable = str(tmp_path / "file" / "sys")
    (tmp_path / "file").write_bytes(b"")
    xdg = {"XDG_STATE_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path / "home")}
    assert default_state_dir(xdg, system_dir=unusable) == str(tmp_path / "xdg" / "sidecar-run")
    relative = {"XDG_STATE_HOME": "rel", "HOME": str(tmp_path / "home")}
    assert default_state_dir(relative, system_dir=unusable) == str(
        tmp_path / "home" / ".local" / "state" / "sidecar-run"
    )
