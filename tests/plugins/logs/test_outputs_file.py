"""The file output (JSON lines, size rotation like RotatingFileHandler, retryable write errors)
and the stdout/stderr outputs (JSON lines from a worker thread: a full pipe never blocks the
event loop)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest
from sidecar_plugins.logs._delivery import Delivery
from sidecar_plugins.logs._model import Batch, Record
from sidecar_plugins.logs.outputs import FileConfig, RetryLater, make_output
from sidecar_plugins.logs.outputs._file import FileOutput

from sidecar_runtime import Duration

pytestmark = pytest.mark.anyio


class Quiet:
    def bind(self, **_: Any) -> Quiet:
        return self

    def __getattr__(self, _: str) -> Any:
        return lambda *a, **k: None


def records(start: int, count: int, width: int = 20) -> list[Record]:
    return [{"message": f"{i:0{width}d}", "n": i, "time": 1.5} for i in range(start, start + count)]


def read_lines(*paths: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in paths:
        data = path.read_bytes()
        assert data.endswith(b"\n") or not data  # never a cut line at the end of a file
        out.extend(json.loads(line) for line in data.splitlines())
    return out


def backups(path: Path) -> list[Path]:
    """``path.N`` ... ``path.1``: the rotated files, oldest first."""
    found = path.parent.glob(path.name + ".*")
    return sorted(found, key=lambda p: -int(p.suffix[1:]))


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def file_output(path: Path, **keys: Any) -> FileOutput:
    output = make_output("file", FileConfig(path=str(path), **keys), log=Quiet())
    assert isinstance(output, FileOutput)
    return output


async def test_json_lines_appended_in_order(tmp_path: Path) -> None:
    """Each batch is appended as JSON lines; parent directories are created; fsync works."""
    path = tmp_path / "logs" / "app.jsonl"
    output = file_output(path, fsync=True)
    try:
        await output.send(records(0, 3))
        await output.send([{"message": 'ü \n"quoted"', "time": 2.0, "set": {1}}])
    finally:
        await output.close()
    lines = read_lines(path)
    assert lines[:3] == records(0, 3)
    assert lines[3] == {"message": 'ü \n"quoted"', "time": 2.0, "set": [1]}
    assert output.bytes_sent == path.stat().st_size


async def test_rotation_keeps_every_line_whole_and_in_order(tmp_path: Path) -> None:
    """Rotation by size never cuts a line or exceeds max_bytes; with enough backups, all lines
    are there, oldest in the highest-numbered file."""
    path = tmp_path / "app.jsonl"
    output = file_output(path, max_bytes=1000, max_files=100)
    try:
        for i in range(0, 300, 37):  # batches that straddle the rotation points
            await output.send(records(i, 37))
    finally:
        await output.close()
    rotated = backups(path)
    assert len(rotated) == output.rotations > 5
    files = [*rotated, path]
    assert all(p.stat().st_size <= 1000 for p in files)
    assert [r["n"] for r in read_lines(*files)] == list(range(9 * 37))


async def test_rotation_keeps_max_files_backups(tmp_path: Path) -> None:
    """Only max_files backups stay (.1 newest); the oldest are deleted, like RotatingFileHandler."""
    path = tmp_path / "app.jsonl"
    output = file_output(path, max_bytes=500, max_files=2)
    try:
        for i in range(0, 200, 10):
            await output.send(records(i, 10))
    finally:
        await output.close()
    assert names(tmp_path) == ["app.jsonl", "app.jsonl.1", "app.jsonl.2"]
    kept = [r["n"] for r in read_lines(tmp_path / "app.jsonl.2", tmp_path / "app.jsonl.1", path)]
    assert kept == list(range(200 - len(kept), 200))  # the newest lines, contiguous


async def test_max_files_zero_and_a_line_larger_than_max_bytes(tmp_path: Path) -> None:
    """max_files = 0 keeps no backup; a single line larger than max_bytes gets a file alone."""
    path = tmp_path / "app.jsonl"
    output = file_output(path, max_bytes=200, max_files=0)
    try:
        await output.send(records(0, 2))
        await output.send(records(2, 1, width=500))
        await output.send(records(3, 1))
    finally:
        await output.close()
    assert names(tmp_path) == ["app.jsonl"]
    assert [r["n"] for r in read_lines(path)] == [3]


async def test_write_errors_are_retryable_and_leave_no_partial_batch(tmp_path: Path) -> None:
    """An unwritable path raises a retryable error; once fixed, the batch is written once."""
    blocker = tmp_path / "logs"
    blocker.write_text("")  # a file where the directory should be: ENOTDIR/EEXIST
    path = blocker / "app.jsonl"
    output = file_output(path)
    batch = records(0, 3)
    try:
        with pytest.raises(RetryLater) as failed:
            await output.send(batch)
        assert failed.value.kind.startswith("write_E")
        assert str(path) in str(failed.value)
        blocker.unlink()
        await output.send(batch)
    finally:
        await output.close()
    assert read_lines(path) == batch


async def test_reopens_a_file_moved_away_by_logrotate(tmp_path: Path) -> None:
    """If another program renames the file, the next batch goes to a new file at the path."""
    path = tmp_path / "app.jsonl"
    output = file_output(path)
    try:
        await output.send(records(0, 1))
        path.rename(tmp_path / "app.jsonl.old")
        await output.send(records(1, 1))
    finally:
        await output.close()
    assert [r["n"] for r in read_lines(tmp_path / "app.jsonl.old")] == [0]
    assert [r["n"] for r in read_lines(path)] == [1]


async def test_file_output_through_delivery_under_rotation(tmp_path: Path) -> None:
    """Many small pipeline batches through a Delivery: every record once, in order, whole."""
    path = tmp_path / "out.jsonl"
    config = FileConfig(path=str(path), max_bytes=4096, max_files=1000, batch_timeout=Duration(0.0))
    output = make_output("file", config, log=Quiet())
    marks: list[dict[str, int]] = []
    d = Delivery(
        output, config, spool_dir=str(tmp_path / "s"), on_delivered=marks.append, log=Quiet()
    )
    async with anyio.create_task_group() as tg:
        await tg.start(d.run)
        for i in range(0, 2000, 7):
            await d.put(Batch(records(i, 7), {"src": i + 7}))
        with anyio.fail_after(10):
            await d.flush()
        tg.cancel_scope.cancel()
    await output.close()
    assert [r["n"] for r in read_lines(*backups(path), path)] == list(range(2002))
    assert marks[-1] == {"src": 2002}


def test_stdout_full_pipe_does_not_block_the_event_loop(tmp_path: Path) -> None:
    """A child writes 2 MB of JSON lines to a pipe nobody reads yet: its event loop keeps
    ticking meanwhile; once read, every line is there, whole and in order."""
    code = textwrap.dedent(
        """
        import sys
        import anyio
        from sidecar_plugins.logs.outputs import StdoutConfig, make_output

        async def main():
            out = make_output("stdout", StdoutConfig(), log=None)
            await out.open()

            async def ticker():
                while True:
                    sys.stderr.write("tick\\n")
                    sys.stderr.flush()
                    await anyio.sleep(0.01)

            async with anyio.create_task_group() as tg:
                tg.start_soon(ticker)
                await out.send([{"message": "x" * 1000, "n": i} for i in range(2000)])
                tg.cancel_scope.cancel()
            sys.stderr.write("sent\\n")
            await out.close()

        anyio.run(main)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert child.stderr is not None
        assert child.stdout is not None
        ticks = 0
        while ticks < 10:  # the loop runs while stdout (64 KiB pipe) is full
            line = child.stderr.readline()
            assert line, "the child exited early"
            assert line == b"tick\n"
            ticks += 1
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    lines = out.splitlines()
    assert [json.loads(line)["n"] for line in lines] == list(range(2000))
    assert err.endswith(b"sent\n")
    assert child.returncode == 0


async def test_stderr_output_writes_json_lines(capfd: pytest.CaptureFixture[str]) -> None:
    """type = stderr writes JSON lines to file descriptor 2."""
    from sidecar_plugins.logs.outputs import StderrConfig

    output = make_output("stderr", StderrConfig(), log=Quiet())
    await output.open()
    try:
        await output.send(records(0, 2))
    finally:
        await output.close()
    err = capfd.readouterr().err
    assert [json.loads(line) for line in err.splitlines()] == records(0, 2)


def test_stdout_closed_pipe_rejects() -> None:
    """A stdout whose reader is gone (EPIPE) rejects batches instead of retrying forever."""
    code = textwrap.dedent(
        """
        import os, signal, sys
        import anyio
        from sidecar_plugins.logs.outputs import Rejected, StdoutConfig, make_output

        async def main():
            out = make_output("stdout", StdoutConfig(), log=None)
            await out.open()
            try:
                await out.send([{"message": "lost"}])
            except Rejected as err:
                sys.stderr.write(f"rejected {err.kind}\\n")
            await out.close()

        r, w = os.pipe()
        os.dup2(w, 1)
        os.close(r)
        os.close(w)
        anyio.run(main)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=30, check=False
    )
    assert result.stderr.decode().strip().endswith("rejected write_EPIPE")
