"""Multiline joining: real Python tracebacks (chained, exception groups) and a real JVM trace
become one group each, interleaved lines pass alone, and held groups flush on time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecar_plugins.logs._multiline import Joiner, MultilineConfig

from sidecar_runtime import ConfigError, Duration
from sidecar_runtime._config import decode_struct

PYTHON_APP = """
import logging, sys, traceback
logging.basicConfig(stream=sys.stderr)
def log(text):
    print(text, file=sys.stderr, flush=True)
def parse(value):
    return int(value)
log("INFO starting")
try:
    try:
        parse("x")
    except ValueError as err:
        raise KeyError("config") from err
except KeyError:
    logging.exception("request failed")
log("INFO still running")
try:
    {}["missing"]
except KeyError:
    try:
        1 / 0
    except ZeroDivisionError:
        traceback.print_exc()
log("INFO next")
try:
    raise ExceptionGroup("many", [ValueError("a"), TypeError("b")])
except ExceptionGroup:
    traceback.print_exc()
log("")
log("INFO done")
raise RuntimeError("fatal: exiting")
"""

# Copied from `java Main.java` (OpenJDK 17): a chained exception with a suppressed one, logged
# between ordinary lines, then an uncaught exception in a thread.
JAVA_OUTPUT = """\
12:00:00.001 INFO  starting
12:00:00.002 ERROR request failed
java.lang.RuntimeException: save failed
\tat Main.save(Main.java:9)
\tat Main.main(Main.java:13)
\tat java.base/jdk.internal.reflect.NativeMethodAccessorImpl.invoke0(Native Method)
\tat java.base/jdk.internal.reflect.NativeMethodAccessorImpl.invoke(\
NativeMethodAccessorImpl.java:77)
\tat java.base/java.lang.reflect.Method.invoke(Method.java:569)
\tat jdk.compiler/com.sun.tools.javac.launcher.Main.main(Main.java:132)
Caused by: java.io.IOException: disk full
\tat Main.write(Main.java:6)
\tat Main.save(Main.java:8)
\t... 8 more
\tSuppressed: java.lang.IllegalStateException: close failed
\t\tat Main$Res.close(Main.java:4)
\t\t... 9 more
12:00:00.003 INFO  still running
Exception in thread "worker-1" java.lang.NullPointerException: Cannot invoke "Object.hashCode()"
\tat Main.lambda$main$0(Main.java:15)
\tat java.base/java.lang.Thread.run(Thread.java:840)
12:00:00.004 INFO  done
"""


def lines_of(text: str) -> list[bytes]:
    return text.encode().split(b"\n")[:-1] if text.endswith("\n") else text.encode().split(b"\n")


def run_all(config: MultilineConfig, lines: list[bytes], batches: list[int] | None = None) -> Any:
    """Feed ``lines`` (in batches of the given sizes), force-flush; groups as (text, count)."""
    joiner = Joiner(config)
    out = []
    i = 0
    for size in batches or [len(lines)]:
        out += joiner.feed(lines[i : i + size], 100.0)
        i += size
    out += joiner.feed(lines[i:], 100.0)
    out += joiner.flush(100.0, force=True)
    assert joiner.pending_lines() == []
    return [(group.decode(), count) for group, count in out]


@pytest.fixture(scope="module")
def python_output() -> str:
    """stderr of a real Python 3.11 process: logging.exception, chained and grouped tracebacks."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PYTHON_APP)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    return done.stderr


def test_python_tracebacks_are_one_group_each(python_output: str) -> None:
    """Each traceback (with its chained parts) is one group; other lines pass alone, in order."""
    lines = lines_of(python_output)
    groups = run_all(MultilineConfig(mode="python"), lines)
    assert sum(count for _, count in groups) == len(lines)
    assert "\n".join(text for text, _ in groups) == "\n".join(line.decode() for line in lines)
    firsts = [text.split("\n")[0] for text, _ in groups]
    assert firsts == [
        "INFO starting",
        "ERROR:root:request failed",
        "Traceback (most recent call last):",
        "INFO still running",
        "Traceback (most recent call last):",
        "INFO next",
        "  + Exception Group Traceback (most recent call last):",
        "",
        "INFO done",
        "Traceback (most recent call last):",
    ]
    direct, handling, group, final = (groups[i][0] for i in (2, 4, 6, 9))
    assert "The above exception was the direct cause of the following exception:" in direct
    assert direct.startswith("Traceback")
    assert direct.endswith("KeyError: 'config'")
    assert direct.count("Traceback (most recent call last):") == 2
    assert "During handling of the above exception, another exception occurred:" in handling
    assert handling.endswith("ZeroDivisionError: division by zero")
    assert "| ValueError: a" in group
    assert "| TypeError: b" in group
    assert group.split("\n")[-1].strip().startswith("+---")
    assert final.endswith("RuntimeError: fatal: exiting")
    assert all(count == len(text.split("\n")) for text, count in groups)


def test_java_stack_traces_are_one_group_each() -> None:
    """Header, ``at`` frames, ``Caused by``, ``... N more`` and ``Suppressed`` join one group."""
    lines = lines_of(JAVA_OUTPUT)
    groups = run_all(MultilineConfig(mode="java"), lines)
    texts = [text for text, _ in groups]
    assert [t.split("\n")[0] for t in texts] == [
        "12:00:00.001 INFO  starting",
        "12:00:00.002 ERROR request failed",
        "java.lang.RuntimeException: save failed",
        "12:00:00.003 INFO  still running",
        'Exception in thread "worker-1" java.lang.NullPointerException: Cannot invoke '
        '"Object.hashCode()"',
        "12:00:00.004 INFO  done",
    ]
    assert [count for _, count in groups] == [1, 1, 14, 1, 3, 1]
    assert texts[2].endswith("\t\t... 9 more")
    assert "Caused by: java.io.IOException: disk full" in texts[2]


def test_start_pattern_groups_continuation_lines() -> None:
    """With ``start``, a matching line opens a group; lines before the first match pass alone."""
    text = (
        "preamble without a timestamp\n"
        "2024-05-01 12:00:00 ERROR failed\n"
        "  detail one\n"
        "detail two\n"
        "2024-05-01 12:00:01 INFO ok\n"
        "2024-05-01 12:00:02 INFO also ok\n"
        "  tail\n"
    )
    groups = run_all(MultilineConfig(start=r"^\d{4}-\d\d-\d\d "), lines_of(text))
    assert groups == [
        ("preamble without a timestamp", 1),
        ("2024-05-01 12:00:00 ERROR failed\n  detail one\ndetail two", 3),
        ("2024-05-01 12:00:01 INFO ok", 1),
        ("2024-05-01 12:00:02 INFO also ok\n  tail", 2),
    ]


def test_open_group_is_held_until_the_flush_timeout() -> None:
    """A traceback at the end of the output waits ``flush_timeout`` after its last line."""
    joiner = Joiner(MultilineConfig(mode="python", flush_timeout=Duration(2.0)))
    tb = [b"Traceback (most recent call last):", b'  File "x.py", line 1', b"ValueError: bad"]
    assert joiner.feed([b"before", *tb[:2]], 10.0) == [(b"before", 1)]
    assert joiner.feed(tb[2:], 11.0) == []
    assert joiner.pending_lines() == tb
    assert joiner.flush(12.9) == []
    assert joiner.flush(13.0) == [(b"\n".join(tb), 3)]
    assert joiner.pending_lines() == []
    assert joiner.flush(100.0, force=True) == []
    # After a flush the joiner starts afresh: a plain line passes at once.
    assert joiner.feed([b"after"], 20.0) == [(b"after", 1)]


def test_force_flush_emits_held_group_and_blank_lines() -> None:
    """Blank lines held after an exception line come out after its group, each alone (and are
    held no longer than ``max_lines`` of them)."""
    joiner = Joiner(MultilineConfig(mode="python"))
    lines = [b"Traceback (most recent call last):", b"  frame", b"KeyError: 'k'", b"", b""]
    assert joiner.feed(lines, 1.0) == []
    assert joiner.pending_lines() == lines
    assert joiner.flush(1.0, force=True) == [(b"\n".join(lines[:3]), 3), (b"", 1), (b"", 1)]
    assert joiner.feed([b"", b"next"], 2.0) == [(b"", 1), (b"next", 1)]
    many = Joiner(MultilineConfig(mode="python", max_lines=3))
    out = many.feed([*lines[:3], b"", b"", b"", b""], 3.0)
    assert out == [(b"\n".join(lines[:3]), 3), (b"", 1), (b"", 1), (b"", 1), (b"", 1)]
    assert many.pending_lines() == []


def test_max_lines_and_max_bytes_split_a_group() -> None:
    """A group stops at ``max_lines``/``max_bytes``; the rest continues in the next group."""
    frames = [b"Traceback (most recent call last):"] + [b"  frame %d" % i for i in range(9)]
    groups = run_all(MultilineConfig(mode="python", max_lines=4), [*frames, b"E: x", b"next"])
    assert [c for _, c in groups] == [4, 4, 3, 1]
    assert groups[2][0].endswith("E: x")
    big = [b"start " + b"a" * 40, b" " + b"b" * 40, b" " + b"c" * 40]
    groups = run_all(MultilineConfig(start="^start", max_bytes=90), big)
    assert groups == [((big[0] + b"\n" + big[1]).decode(), 2), (big[2].decode(), 1)]


def test_python_exception_line_ends_the_group() -> None:
    """After ``ExcType: msg`` an unindented line is a new record; indented notes still join; a
    cut-off traceback ends where the next one starts."""
    lines = [
        b"Traceback (most recent call last):",
        b'  File "app.py", line 3, in <module>',
        b"ValueError: bad value",
        b"  note: indented detail",
        b"INFO next request",
        b"Traceback (most recent call last):",
        b"  frame",
        b"KeyError: 'x'",
        b"Traceback (most recent call last):",
        b"  frame",
        b"TypeError: y",
        b"Traceback (most recent call last):",
        b"  cut off here",
        b"Traceback (most recent call last):",
        b"  frame",
        b"OSError: z",
    ]
    groups = run_all(MultilineConfig(mode="python"), lines)
    assert [c for _, c in groups] == [4, 1, 3, 3, 2, 3]


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from(["python", "java", "start"]),
    cuts=st.lists(st.integers(min_value=0, max_value=8), max_size=12),
)
def test_any_batching_gives_the_same_groups(mode: str, cuts: list[int]) -> None:
    """However lines are split into feeds, the groups are the same and no line is lost."""
    config = MultilineConfig(start=r"^\d\d:\d\d") if mode == "start" else MultilineConfig(mode=mode)
    lines = lines_of(JAVA_OUTPUT) + lines_of(
        "Traceback (most recent call last):\n  f\nKeyError: 'k'\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        "Traceback (most recent call last):\n  g\nValueError: v\n\nplain\n"
    )
    whole = run_all(config, lines)
    assert run_all(config, lines, cuts) == whole
    assert sum(c for _, c in whole) == len(lines)
    assert "\n".join(t for t, _ in whole) == b"\n".join(lines).decode()


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({}, "exactly one of start"),
        ({"mode": "python", "start": "^x"}, "exactly one of start"),
        ({"start": "("}, "start: invalid regex '('"),
        ({"mode": "go"}, "mode: expected one of python, java, got 'go'"),
        ({"mode": "java", "flush_timeout": "0s"}, "flush_timeout: must be more than 0"),
        ({"mode": "java", "max_lines": 1}, "Expected `int` >= 2"),
    ],
)
def test_bad_config_is_one_keyed_line(table: dict[str, Any], expected: str) -> None:
    """Bad multiline tables fail with the key path and what is wrong."""
    with pytest.raises(ConfigError) as caught:
        decode_struct(table, MultilineConfig, prefix=".plugins.logs.stream_multiline")
    message = str(caught.value)
    assert "plugins.logs.stream_multiline" in message
    assert expected in message
    assert "\n" not in message
