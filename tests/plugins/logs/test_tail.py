"""The file source: discovery, start positions, rotation (rename, copytruncate, truncation,
deletion), file identity, long and partial lines, problems reported once, checkpoints."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sidecar_plugins.logs._checkpoint as checkpoint_module
import sidecar_plugins.logs._discovery as discovery_module
import sidecar_plugins.logs._tail as tail_module
from sidecar_plugins.logs._checkpoint import CHECKPOINT_EVENT_DOCS, CheckpointStore
from sidecar_plugins.logs._model import Chunk
from sidecar_plugins.logs._tail import TAIL_EVENT_DOCS, TAIL_KEY_DOCS, FileTailer, TailConfig

from sidecar_runtime import ConfigError, Duration
from sidecar_runtime._config import decode_struct
from tests.plugins.logs.helpers import IS_ROOT, Clock, RecordingLog, as_nobody


class Rig:
    """A tailer over ``tmp_path/logs`` with its store in ``tmp_path/state``; restartable."""

    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.logs = tmp_path / "logs"
        self.logs.mkdir(exist_ok=True)
        self.state = tmp_path / "state"
        config.setdefault("paths", [str(self.logs / "*.log")])
        config.setdefault("glob_interval", 0)
        config.setdefault("rotate_wait", 0)
        self.config = TailConfig(**config)
        self.log = RecordingLog()
        self.clock = Clock()
        self.start()

    def start(self) -> None:
        self.store = CheckpointStore(str(self.state), log=self.log)
        self.store.load()
        self.tailer = FileTailer(self.config, self.store, log=self.log, clock=self.clock)

    def restart(self) -> None:
        self.tailer.close()
        self.store.flush()
        self.start()

    def poll(self) -> list[bytes]:
        return lines(self.tailer.poll())

    def read_all(self, *, commit: bool = False) -> list[bytes]:
        """Poll until nothing new (bounded); commit every chunk if asked."""
        out: list[bytes] = []
        for _ in range(1000):
            chunks = self.tailer.poll()
            if not chunks:
                return out
            out += lines(chunks)
            if commit:
                for chunk in chunks:
                    assert chunk.key is not None
                    self.store.commit(chunk.key, chunk.end)
        raise AssertionError("the tailer never ran out of lines")

    def write(self, name: str, data: bytes) -> None:
        with open(self.logs / name, "ab") as fh:
            fh.write(data)


def lines(chunks: list[Chunk]) -> list[bytes]:
    return [line for chunk in chunks for line in chunk.lines]


def open_fds_to(path: Path) -> list[str]:
    """This process's fds that point at ``path`` (deleted or not)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.removesuffix(" (deleted)") == str(path):
                found.append(target)
    return found


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, start_at="head")
    yield r
    r.tailer.close()


# -- config ----------------------------------------------------------------------------------


def test_config_defaults_and_durations() -> None:
    """Fluent Bit's defaults; durations accept "250ms"-style text."""
    config = decode_struct({"paths": ["/var/log/app/*.log"], "poll_interval": "100ms"}, TailConfig)
    assert (config.start_at, config.start_new_at) == ("tail", "head")
    assert config.poll_interval == 0.1
    assert (config.glob_interval, config.rotate_wait) == (1.0, 5.0)
    assert (config.max_line_bytes, config.read_bytes, config.fingerprint_bytes) == (
        32768,
        1 << 20,
        256,
    )


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"paths": []}, "files[0]: paths: expected at least one glob pattern"),
        ({"paths": [""]}, "files[0]: paths[0]: expected a non-empty glob pattern"),
        ({"paths": ["/a"], "exclude": [""]}, "files[0]: exclude[0]: expected a non-empty"),
        ({"paths": ["/a"], "start_at": "middle"}, "files[0].start_at: Invalid enum value 'middle'"),
        ({"paths": ["/a"], "poll_interval": 0}, "files[0]: poll_interval: must be more than 0"),
        ({"paths": ["/a"], "rotate_wait": -1}, "files[0].rotate_wait: invalid duration -1"),
        ({"paths": ["/a"], "max_line_bytes": 0}, "files[0].max_line_bytes: Expected `int` >= 1"),
        ({"paths": ["/a"], "glob": "x"}, "files[0].glob: unknown key"),
        ({}, "Object missing required field `paths`"),
    ],
)
def test_config_errors_name_the_key(table: dict[str, Any], message: str) -> None:
    """Bad tables are one-line errors naming the key."""
    with pytest.raises(ConfigError) as info:
        decode_struct(table, TailConfig, prefix="files[0]")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_every_key_and_event_has_prose() -> None:
    """The reference prose covers every config key and every event name the code logs."""
    assert list(TAIL_KEY_DOCS) == [f.name for f in msgspec.structs.fields(TailConfig)]
    logged = {
        name
        for module in (tail_module, discovery_module, checkpoint_module)
        for name in re.findall(
            r'"((?:log_file|log_path|checkpoint)_[a-z_]+)"', inspect.getsource(module)
        )
    }
    assert logged == set(TAIL_EVENT_DOCS) | set(CHECKPOINT_EVENT_DOCS)


# -- discovery and start -----------------------------------------------------------------------


def test_files_present_at_start_are_tailed_new_ones_read_from_head(tmp_path: Path) -> None:
    """Default: existing files start at their end, files appearing later at their head."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "old.log").write_bytes(b"before 1\nbefore 2\n")
    rig = Rig(tmp_path)
    assert rig.poll() == []
    rig.write("old.log", b"after\n")
    rig.write("new.log", b"first\nsecond\n")
    assert sorted(rig.poll()) == [b"after", b"first", b"second"]
    starts = {Path(e["path"]).name: e["start"] for e in rig.log.named("log_file_opened")}
    assert starts == {"old.log": "tail", "new.log": "head"}
    rig.tailer.close()


def test_start_at_head_and_start_new_at_tail(tmp_path: Path) -> None:
    """Both policies are configurable."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "old.log").write_bytes(b"before\n")
    rig = Rig(tmp_path, start_at="head", start_new_at="tail")
    assert rig.poll() == [b"before"]
    rig.write("new.log", b"existing\n")
    assert rig.poll() == []
    rig.write("new.log", b"later\n")
    assert rig.poll() == [b"later"]
    rig.tailer.close()


def test_tail_start_reads_a_line_being_written_whole(tmp_path: Path) -> None:
    """``tail`` starts after the last complete line, so a half-written line is not split."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_bytes(b"old line\nhalf of a ")
    rig = Rig(tmp_path)
    assert rig.poll() == []
    rig.write("a.log", b"line\n")
    assert rig.poll() == [b"half of a line"]
    rig.tailer.close()


def test_tail_start_inside_an_over_long_line_drops_its_rest(tmp_path: Path) -> None:
    """No newline in the last ``max_line_bytes``: start at the end, drop up to the newline,
    and commit past the dropped bytes so a restart does not emit the fragment."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_bytes(b"ok\n" + b"x" * 100)
    rig = Rig(tmp_path, max_line_bytes=10)
    assert rig.poll() == []
    rig.write("a.log", b"yyy\nnext\n")
    chunks = rig.tailer.poll()
    assert lines(chunks) == [b"next"]
    assert chunks[0].start == 3 + 100 + 4
    assert rig.store.get(chunks[0].key or "") == 3 + 100 + 4
    assert rig.tailer.stats.lines_cut == 0
    rig.tailer.close()


def test_new_files_are_discovered_on_the_glob_interval(tmp_path: Path) -> None:
    """Re-globbing happens every ``glob_interval`` (monotonic), not on every poll."""
    rig = Rig(tmp_path, glob_interval=1.0)
    assert rig.poll() == []
    rig.write("a.log", b"hello\n")
    assert rig.poll() == []
    rig.clock.now += 1.0
    assert rig.poll() == [b"hello"]
    assert rig.tailer.stats.files_watched == 1
    rig.tailer.close()


def test_several_patterns_exclude_and_recursive_globs(tmp_path: Path) -> None:
    """Patterns add up, each file once; excludes match the name (no '/') or the full path."""
    logs = tmp_path / "logs"
    (logs / "deep" / "er").mkdir(parents=True)
    (logs / "skip").mkdir()
    for rel in ("a.log", "b.txt", "c.log.gz", "deep/er/d.log", "skip/e.log", "f.log"):
        (logs / rel).write_bytes(rel.encode() + b"\n")
    rig = Rig(
        tmp_path,
        start_at="head",
        paths=[str(logs / "**" / "*.log*"), str(logs / "*.txt"), str(logs / "a.log")],
        exclude=["*.gz", str(logs / "skip" / "*"), "f.*"],
    )
    assert sorted(rig.poll()) == [b"a.log", b"b.txt", b"deep/er/d.log"]
    rig.tailer.close()


def test_relative_patterns_are_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative glob is resolved against the cwd at start; sources are absolute paths."""
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "r.log").write_bytes(b"rel\n")
    monkeypatch.chdir(tmp_path)
    rig = Rig(tmp_path, start_at="head", paths=["logs/*.log"])
    monkeypatch.chdir("/")
    chunks = rig.tailer.poll()
    assert lines(chunks) == [b"rel"]
    assert chunks[0].source == str(tmp_path / "logs" / "r.log")
    rig.tailer.close()


def test_symlinked_files_are_followed(tmp_path: Path) -> None:
    """Kubernetes-style symlinks to the real log file are tailed through the link."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "c.log").write_bytes(b"one\n")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "c.log").symlink_to(real / "c.log")
    rig = Rig(tmp_path, start_at="head")
    assert rig.poll() == [b"one"]
    with open(real / "c.log", "ab") as fh:
        fh.write(b"two\n")
    assert rig.poll() == [b"two"]
    rig.tailer.close()


# -- chunks ------------------------------------------------------------------------------------


def test_chunk_offsets_and_keys(rig: Rig) -> None:
    """A chunk carries the path, the checkpoint key, the offset of its first line and the
    offset just past its last newline; binary bytes pass through untouched."""
    rig.write("a.log", b"alpha\n\xff\xfe\x00bin\n")
    rig.write("a.log", b"gamma\nparti")
    [chunk] = rig.tailer.poll()
    st = os.stat(rig.logs / "a.log")
    assert chunk.source == str(rig.logs / "a.log")
    assert chunk.key is not None
    assert chunk.key.startswith(f"{st.st_dev}:{st.st_ino}:")
    assert chunk.lines == [b"alpha", b"\xff\xfe\x00bin", b"gamma"]
    assert (chunk.start, chunk.end, dict(chunk.cut)) == (0, 19, {})
    assert chunk.time > 0
    rig.write("a.log", b"al\n")
    [chunk] = rig.tailer.poll()
    assert (chunk.lines, chunk.start, chunk.end) == ([b"partial"], 19, 27)


def test_partial_line_waits_for_its_newline(rig: Rig) -> None:
    """Only complete lines are emitted, however the bytes arrive."""
    rig.write("a.log", b"first\n")
    assert rig.poll() == [b"first"]
    for piece in (b"ab", b"cd", b"ef"):
        rig.write("a.log", piece)
        assert rig.poll() == []
    rig.write("a.log", b"\n")
    assert rig.poll() == [b"abcdef"]


def test_read_bytes_bounds_each_file_per_poll(tmp_path: Path) -> None:
    """A busy file cannot starve a quiet one: each poll reads at most ``read_bytes`` per file."""
    rig = Rig(tmp_path, start_at="head", read_bytes=100)
    rig.write("busy.log", b"".join(b"busy %04d\n" % i for i in range(100)))
    rig.write("quiet.log", b"quiet\n")
    chunks = rig.tailer.poll()
    by_file = {Path(c.source).name: c for c in chunks}
    assert by_file["quiet.log"].lines == [b"quiet"]
    assert by_file["busy.log"].lines == [b"busy %04d" % i for i in range(10)]
    rest = rig.read_all()
    assert rest == [b"busy %04d" % i for i in range(10, 100)]
    rig.tailer.close()


def test_long_lines_are_cut_across_reads(tmp_path: Path) -> None:
    """A line over ``max_line_bytes`` keeps its head, records its length in ``cut`` and the
    rest is skipped up to its newline even when that spans many reads; it is counted."""
    rig = Rig(tmp_path, start_at="head", max_line_bytes=10, read_bytes=8)
    rig.write("a.log", b"short\n" + b"L" * 35 + b"\n" + b"exactly10!\nend\n")
    chunks: list[Chunk] = []
    for _ in range(50):
        chunks += rig.tailer.poll()
    assert lines(chunks) == [b"short", b"L" * 10, b"exactly10!", b"end"]
    cut_chunk = next(c for c in chunks if b"L" * 10 in c.lines)
    assert dict(cut_chunk.cut) == {cut_chunk.lines.index(b"L" * 10): 35}
    assert rig.tailer.stats.lines_cut == 1
    assert chunks[-1].end == os.path.getsize(rig.logs / "a.log")
    rig.tailer.close()


def test_long_line_inside_a_big_read_is_found(rig: Rig) -> None:
    """With a large ``max_line_bytes`` and big reads, an over-long line mid-chunk is still cut."""
    config = msgspec.structs.replace(rig.config, max_line_bytes=1000)
    rig.tailer.close()
    rig.tailer = FileTailer(config, rig.store, log=rig.log, clock=rig.clock)
    short = [b"line %05d" % i for i in range(2000)]
    long = b"Z" * 4321
    rig.write("a.log", b"\n".join([*short[:1000], long, *short[1000:]]) + b"\n")
    [chunk] = rig.tailer.poll()
    assert len(chunk.lines) == 2001
    assert chunk.lines[1000] == b"Z" * 1000
    assert dict(chunk.cut) == {1000: 4321}


def test_partial_line_longer_than_max_is_cut_when_it_ends(tmp_path: Path) -> None:
    """The unterminated part of an over-long line is held at ``max_line_bytes`` at most."""
    rig = Rig(tmp_path, start_at="head", max_line_bytes=4)
    rig.write("a.log", b"abcdefgh")
    assert rig.poll() == []
    rig.write("a.log", b"ij\nk\n")
    [chunk] = rig.tailer.poll()
    assert (chunk.lines, dict(chunk.cut)) == ([b"abcd", b"k"], {0: 10})
    rig.tailer.close()


def test_pending_file_waits_for_its_first_line(tmp_path: Path) -> None:
    """A file with neither a complete first line nor ``fingerprint_bytes`` is not emitted from;
    a first line longer than ``fingerprint_bytes`` identifies it by its first bytes."""
    rig = Rig(tmp_path, start_at="head", fingerprint_bytes=16)
    rig.write("a.log", b"short")
    rig.write("b.log", b"0123456789abcdef0123")
    assert rig.poll() == []
    assert [w["pending"] for w in rig.tailer.watched()] == [True, False]
    rig.write("a.log", b" line\n")
    rig.write("b.log", b"\n")
    assert sorted(rig.poll()) == [b"0123456789abcdef0123", b"short line"]
    rig.tailer.close()


# -- rotation ----------------------------------------------------------------------------------


def test_rename_rotation_reads_the_old_file_to_its_end(rig: Rig) -> None:
    """Lines written to the old file after the last poll and after the rename are read before
    it is released; the new file is read from its head."""
    rig.write("app.log", b"1\n2\n")
    assert rig.poll() == [b"1", b"2"]
    rig.write("app.log", b"3\n")
    with open(rig.logs / "app.log", "ab", buffering=0) as old:
        os.rename(rig.logs / "app.log", rig.logs / "app.old")
        old.write(b"4\n")
        rig.write("app.log", b"5\n")
    assert rig.poll() == [b"3", b"4", b"5"]
    assert rig.tailer.stats.rotations == 1
    assert rig.tailer.stats.files_released == 1
    assert open_fds_to(rig.logs / "app.old") == []
    [released] = rig.log.named("log_file_released")
    assert released["reason"] == "rotated"


def test_rotated_file_is_kept_for_rotate_wait(tmp_path: Path) -> None:
    """A file renamed away stays open ``rotate_wait`` so an app that reopens late loses
    nothing; then it is read to its end and released with its unterminated last line."""
    rig = Rig(tmp_path, start_at="head", rotate_wait=5.0)
    rig.write("app.log", b"a\n")
    assert rig.poll() == [b"a"]
    os.rename(rig.logs / "app.log", rig.logs / "app.old")
    assert rig.poll() == []
    with open(rig.logs / "app.old", "ab", buffering=0) as old:
        rig.clock.now += 4
        old.write(b"late\nunterminated")
        assert rig.poll() == [b"late"]
        assert len(open_fds_to(rig.logs / "app.old")) == 2
        rig.clock.now += 1
        assert rig.poll() == [b"unterminated"]
    assert open_fds_to(rig.logs / "app.old") == []
    rig.tailer.close()


def test_rotated_name_matching_the_glob_is_not_read_twice(tmp_path: Path) -> None:
    """``app.log`` → ``app.log.1`` with ``app.log*``: the same inode, same key, read once."""
    rig = Rig(tmp_path, start_at="head", paths=[str(tmp_path / "logs" / "app.log*")])
    rig.write("app.log", b"1\n2\n")
    [chunk] = rig.tailer.poll()
    os.rename(rig.logs / "app.log", rig.logs / "app.log.1")
    rig.write("app.log.1", b"3\n")
    rig.write("app.log", b"4\n")
    chunks = rig.tailer.poll()
    assert lines(chunks) == [b"3", b"4"]
    assert chunks[0].key == chunk.key
    assert chunks[0].source == str(rig.logs / "app.log.1")
    assert rig.store.get(chunk.key or "") == 0, "noticing a rename commits nothing"
    assert rig.read_all() == []
    assert rig.tailer.stats.rotations == 1
    assert rig.tailer.stats.files_released == 0
    rig.tailer.close()


def test_released_file_found_again_resumes_where_it_was_read(rig: Rig) -> None:
    """A file renamed away (released) and back is not re-read from its older checkpoint."""
    rig.write("app.log", b"1\n2\n")
    assert rig.poll() == [b"1", b"2"]
    os.rename(rig.logs / "app.log", rig.logs / "app.old")
    assert rig.poll() == []
    assert rig.tailer.stats.files_released == 1
    os.rename(rig.logs / "app.old", rig.logs / "app.log")
    rig.write("app.log", b"3\n")
    assert rig.poll() == [b"3"]


def test_copytruncate_reads_the_new_content_from_zero(rig: Rig) -> None:
    """Same inode, size below the offset: a truncation, counted, read from 0 under a new key
    (the old key is forgotten so late acks for it cannot move the new checkpoint)."""
    rig.write("app.log", b"one\ntwo\n")
    [before] = rig.tailer.poll()
    shutil.copy(rig.logs / "app.log", rig.logs / "app.log.1")
    os.truncate(rig.logs / "app.log", 0)
    rig.write("app.log", b"3\n")
    [after] = rig.tailer.poll()
    assert (after.lines, after.start, after.end) == ([b"3"], 0, 2)
    assert after.key != before.key
    assert before.key not in rig.store
    rig.store.commit(before.key or "", 8)
    assert rig.store.get(after.key or "") == 0
    assert rig.tailer.stats.truncations == 1
    [event] = rig.log.named("log_file_truncated")
    assert (event["offset"], event["size"]) == (8, 2)


def test_truncation_with_regrowth_to_the_same_size_is_detected(rig: Rig) -> None:
    """Truncated and rewritten to exactly the old size between two polls: only the mtime
    changed, and the first bytes no longer match, so the new content is read from 0."""
    rig.write("app.log", b"old first\nold  two\n")
    assert rig.poll() == [b"old first", b"old  two"]
    path = rig.logs / "app.log"
    before = os.stat(path)
    with open(path, "r+b") as fh:
        fh.truncate(0)
        fh.write(b"new first\nnew  two\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert os.stat(path).st_size == before.st_size
    assert rig.poll() == [b"new first", b"new  two"]
    assert rig.tailer.stats.truncations == 1


def test_truncation_with_regrowth_past_the_offset_is_detected(rig: Rig) -> None:
    """Truncated and rewritten beyond the old offset between two polls: the first bytes no
    longer match the fingerprint, so the new content is read from 0."""
    rig.write("app.log", b"old first\n")
    assert rig.poll() == [b"old first"]
    with open(rig.logs / "app.log", "r+b") as fh:
        fh.truncate(0)
        fh.write(b"new 1\nnew 2\nnew 3\n")
    assert rig.poll() == [b"new 1", b"new 2", b"new 3"]
    assert rig.tailer.stats.truncations == 1


def test_same_first_line_after_truncation_gets_a_new_key(rig: Rig) -> None:
    """A truncated file that starts with the same line again is a new generation key."""
    rig.write("app.log", b"HEADER\nbody one\n")
    [first] = rig.tailer.poll()
    os.truncate(rig.logs / "app.log", 0)
    rig.write("app.log", b"HEADER\n")
    [second] = rig.tailer.poll()
    assert second.lines == [b"HEADER"]
    assert second.key == f"{first.key}:2"


def test_truncation_to_empty_then_growth(rig: Rig) -> None:
    """Truncated to zero: pending until a first line arrives, then read from 0."""
    rig.write("app.log", b"x\ny\n")
    rig.poll()
    os.truncate(rig.logs / "app.log", 0)
    assert rig.poll() == []
    rig.write("app.log", b"z\n")
    assert rig.poll() == [b"z"]


def test_deleted_file_is_read_to_its_end_and_its_fd_released(rig: Rig) -> None:
    """nlink 0: read what is left, then close the fd (no deleted file kept open) and forget its
    checkpoint."""
    rig.write("app.log", b"a\n")
    [chunk] = rig.tailer.poll()
    rig.write("app.log", b"b\n")
    assert len(open_fds_to(rig.logs / "app.log")) == 1
    os.unlink(rig.logs / "app.log")
    assert rig.poll() == [b"b"]
    assert open_fds_to(rig.logs / "app.log") == []
    assert chunk.key not in rig.store
    assert rig.log.named("log_file_released")[0]["reason"] == "deleted"
    assert rig.tailer.stats.files_watched == 0


def test_reused_inode_with_another_first_line_is_a_new_file(tmp_path: Path) -> None:
    """A file deleted while the sidecar is down and its inode reused by a new file: the stale
    checkpoint does not apply, the new file is read from offset 0."""
    rig = Rig(tmp_path, start_at="head")
    rig.write("a.log", b"alpha 1\nalpha 2\nalpha 3\n")
    assert len(rig.read_all(commit=True)) == 3
    inode = os.stat(rig.logs / "a.log").st_ino
    rig.tailer.close()
    rig.store.flush()
    spare = tmp_path / "spare"
    spare.mkdir()
    os.unlink(rig.logs / "a.log")
    for n in range(200):
        candidate = spare / f"f{n}.log"
        candidate.write_bytes(b"beta 1\nbeta 2\nbeta 3\nbeta 4\n")
        if os.stat(candidate).st_ino == inode:
            os.rename(candidate, rig.logs / "b.log")
            break
    else:
        pytest.skip("the file system did not reuse the inode")
    rig.start()
    assert rig.read_all() == [b"beta 1", b"beta 2", b"beta 3", b"beta 4"]
    assert len(rig.store) == 1
    rig.tailer.close()


# -- restarts ----------------------------------------------------------------------------------


def test_resume_from_checkpoint_repeats_only_uncommitted_lines(tmp_path: Path) -> None:
    """After a restart, a file resumes at its committed offset, even with ``start_at=tail``."""
    rig = Rig(tmp_path)
    rig.write("a.log", b"")
    rig.poll()
    rig.write("a.log", b"1\n2\n")
    [first] = rig.tailer.poll()
    rig.store.commit(first.key or "", first.end)
    rig.write("a.log", b"3\n4\n")
    assert rig.poll() == [b"3", b"4"]
    assert rig.tailer.lag() == {str(rig.logs / "a.log"): 4}
    rig.restart()
    rig.write("a.log", b"5\n")
    assert rig.poll() == [b"3", b"4", b"5"]
    assert rig.log.named("log_file_opened")[-1]["start"] == "checkpoint"
    rig.tailer.close()


def test_new_file_tracked_before_any_ack_resumes_after_restart(tmp_path: Path) -> None:
    """A file found while running is checkpointed at its start at once: a restart before the
    first ack reads it from there, not from the tail."""
    rig = Rig(tmp_path)
    rig.poll()
    rig.write("new.log", b"1\n2\n")
    assert rig.poll() == [b"1", b"2"]
    rig.restart()
    assert rig.poll() == [b"1", b"2"]
    rig.tailer.close()


def test_a_fresh_state_dir_is_saved_at_the_first_glob_round(tmp_path: Path) -> None:
    """So a crash before the first periodic flush restarts as a second run, not a first."""
    rig = Rig(tmp_path)
    rig.write("a.log", b"")
    rig.poll()
    document = json.loads((rig.state / "checkpoints.json").read_bytes())
    assert document["scanned"] > 0
    assert len(document["files"]) == 0
    rig.tailer.close()


def test_file_created_while_down_is_read_from_head(tmp_path: Path) -> None:
    """Rotated while the sidecar was down: the renamed file resumes from its checkpoint and the
    new file, created after the last glob round, is read from its head despite ``tail``."""
    rig = Rig(tmp_path, paths=[str(tmp_path / "logs" / "app.log*")])
    rig.write("app.log", b"")
    rig.poll()
    rig.write("app.log", b"1\n")
    rig.read_all(commit=True)
    rig.write("app.log", b"2\n")
    rig.restart()
    rig.tailer.close()
    os.rename(rig.logs / "app.log", rig.logs / "app.log.1")
    rig.write("app.log", b"3\n")
    rig.start()
    assert sorted(rig.poll()) == [b"2", b"3"]
    rig.tailer.close()


def test_untracked_old_file_after_restart_follows_start_at(tmp_path: Path) -> None:
    """A file unchanged since before the previous run's last glob round (e.g. a newly added
    pattern) is not "new": ``start_at`` applies."""
    rig = Rig(tmp_path, paths=[str(tmp_path / "logs" / "a.log")])
    rig.write("a.log", b"a\n")
    rig.write("b.log", b"old b\n")
    rig.poll()
    rig.restart()
    rig.tailer.close()
    document = json.loads((rig.state / "checkpoints.json").read_bytes())
    document["scanned"] = os.stat(rig.logs / "b.log").st_ctime + 10
    (rig.state / "checkpoints.json").write_text(json.dumps(document))
    rig.config = msgspec.structs.replace(rig.config, paths=[str(rig.logs / "*.log")])
    rig.start()
    assert rig.poll() == []
    rig.write("b.log", b"new b\n")
    assert rig.poll() == [b"new b"]
    rig.tailer.close()


def test_checkpoint_past_the_end_means_truncated_while_down(tmp_path: Path) -> None:
    """A file smaller than its checkpoint was truncated while down: read from 0, counted."""
    rig = Rig(tmp_path, start_at="head")
    rig.write("a.log", b"first line\nsecond line\n")
    rig.read_all(commit=True)
    rig.restart()
    rig.tailer.close()
    with open(rig.logs / "a.log", "r+b") as fh:
        fh.truncate(11)
    rig.start()
    assert rig.poll() == [b"first line"]
    assert rig.tailer.stats.truncations == 1
    rig.tailer.close()


def test_tailers_sharing_a_store_keep_each_others_entries(tmp_path: Path) -> None:
    """Entries expire only when no tailer sees their file for ``forget_after``."""
    (tmp_path / "logs").mkdir()
    wall = [1_700_000_000.0]
    mono = Clock()
    log = RecordingLog()
    store = CheckpointStore(
        str(tmp_path / "state"), log=log, forget_after=40, clock=lambda: wall[0]
    )
    store.load()
    tailers = [
        FileTailer(
            TailConfig(
                paths=[str(tmp_path / "logs" / name)], glob_interval=Duration(0), start_at="head"
            ),
            store,
            log=log,
            clock=mono,
        )
        for name in ("a.log", "b.log")
    ]
    for name in ("a.log", "b.log"):
        (tmp_path / "logs" / name).write_bytes(name.encode() + b"\n")
    for _ in range(30):
        for tailer in tailers:
            tailer.poll()
        wall[0] += 10
        mono.now += 10
    assert sorted(e.path for k in store if (e := store.entry(k))) == [
        str(tmp_path / "logs" / "a.log"),
        str(tmp_path / "logs" / "b.log"),
    ]
    tailers[1].close()
    for _ in range(10):
        tailers[0].poll()
        wall[0] += 10
        mono.now += 10
    assert [e.path for k in store if (e := store.entry(k))] == [str(tmp_path / "logs" / "a.log")]
    tailers[0].close()


def test_drain_reads_to_the_end_and_finishes_released_files(tmp_path: Path) -> None:
    """drain(): everything up to the end; a rotated-away file gives its unterminated last
    line, a file still in place keeps it for after the restart."""
    rig = Rig(tmp_path, start_at="head", rotate_wait=60, read_bytes=4)
    rig.write("app.log", b"a\n")
    rig.write("other.log", b"x\n")
    rig.poll()
    rig.write("app.log", b"bb\ncc\ntail-of-old")
    rig.write("other.log", b"yy\nzz\npartial")
    os.rename(rig.logs / "app.log", rig.logs / "app.old")
    drained = rig.tailer.drain()
    assert sorted(lines(drained)) == [b"bb", b"cc", b"tail-of-old", b"yy", b"zz"]
    assert open_fds_to(rig.logs / "app.old") == []
    assert len(open_fds_to(rig.logs / "other.log")) == 1
    rig.tailer.close()
    assert open_fds_to(rig.logs / "other.log") == []


def test_drain_is_bounded(rig: Rig) -> None:
    """``max_bytes`` caps what one drain reads; the rest waits for the checkpoint."""
    rig.write("a.log", b"".join(b"%05d\n" % i for i in range(1000)))
    first = lines(rig.tailer.drain(max_bytes=600))
    assert len(first) == 100
    assert lines(rig.tailer.drain())[0] == b"00100"


# -- problems ----------------------------------------------------------------------------------


def test_directory_and_fifo_matching_the_glob_are_skipped_once(rig: Rig) -> None:
    """Neither blocks nor crashes; one warning each, however many polls; counted."""
    (rig.logs / "dir.log").mkdir()
    os.mkfifo(rig.logs / "fifo.log")
    rig.write("ok.log", b"fine\n")
    for _ in range(3):
        rig.poll()
    skipped = {Path(e["path"]).name: e["reason"] for e in rig.log.named("log_path_skipped")}
    assert skipped == {
        "dir.log": "not a regular file (directory)",
        "fifo.log": "not a regular file (FIFO)",
    }
    assert rig.tailer.stats.files_skipped == 2
    rig.write("ok.log", b"still\n")
    assert rig.poll() == [b"still"]


def test_dangling_symlink_is_reported_once_as_vanished(rig: Rig) -> None:
    """A path that disappears between glob and open (here a dangling link) is logged once."""
    (rig.logs / "gone.log").symlink_to(rig.logs / "nowhere")
    for _ in range(3):
        rig.poll()
    assert [Path(e["path"]).name for e in rig.log.named("log_file_vanished")] == ["gone.log"]
    assert rig.tailer.stats.files_vanished == 1


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can traverse (``tmp_path``'s parents are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="sidecar-tail-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_unreadable_file_is_reported_once_until_it_changes(open_dir: Path) -> None:
    """EACCES: one warning and one count however many polls; readable again → tailed."""
    rig = Rig(open_dir, start_at="head")
    rig.logs.chmod(0o755)
    rig.state.mkdir(mode=0o777)
    rig.state.chmod(0o777)
    rig.write("secret.log", b"hidden\n")
    (rig.logs / "secret.log").chmod(0o000)
    runner = as_nobody if IS_ROOT else contextlib.nullcontext
    with runner():
        for _ in range(3):
            assert rig.poll() == []
    [event] = rig.log.named("log_file_unreadable")
    assert (Path(event["path"]).name, event["reason"]) == ("secret.log", "Permission denied")
    assert rig.tailer.stats.read_errors == 1
    (rig.logs / "secret.log").chmod(0o644)
    with runner():
        assert rig.poll() == [b"hidden"]
    rig.tailer.close()


def test_stats_totals_and_watched(rig: Rig) -> None:
    """The counters under the names the plugin exports; a status snapshot of open files."""
    rig.write("a.log", b"x" * 30 + b"\n")
    config = msgspec.structs.replace(rig.config, max_line_bytes=10)
    rig.tailer.close()
    rig.tailer = FileTailer(config, rig.store, log=rig.log, clock=rig.clock)
    rig.poll()
    totals = rig.tailer.stats_totals()
    assert totals["watched"] == 1
    assert (totals["lines"], totals["cut"], totals["bytes"]) == (1, 1, 31)
    assert {"rotation", "truncation", "released", "read_error"} <= set(totals)
    [watched] = rig.tailer.watched()
    assert (watched["offset"], watched["pending"], watched["gone"]) == (31, False, False)
