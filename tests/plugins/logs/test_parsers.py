"""Parsers: json, logfmt, regex and plain on real lines; failures keep the raw line, flagged."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sidecar_plugins.logs._parsers import Parse, parse_configs, parse_logfmt
from sidecar_plugins.logs._processors import ProcessorConfig, run_chain_batch

from sidecar_runtime import ConfigError
from sidecar_runtime._config import decode_struct


def parser(spec: Any) -> Parse:
    """The parse step of a ``parse = ...`` value, decoded as the config loader would."""
    config = decode_struct({"parse": spec}, ProcessorConfig)
    assert config.parse is not None
    return Parse("parse", parse_configs(config.parse))


def record(message: str, **extra: Any) -> dict[str, Any]:
    return {"message": message, "time": 1.5, "stream": "stdout", **extra}


def test_json_object_merges_and_takes_its_message() -> None:
    """Fields merge into the record; ``msg`` becomes ``message``; the read time stays."""
    line = '{"level":"info","msg":"request handled","status":200,"took":1.25,"tags":["a"]}'
    out = parser("json")(record(line))
    assert out == {
        "message": "request handled",
        "time": 1.5,
        "stream": "stdout",
        "level": "info",
        "status": 200,
        "took": 1.25,
        "tags": ["a"],
    }


def test_json_without_message_key_keeps_raw_line() -> None:
    """An object with neither ``message`` nor ``msg`` leaves the raw line in ``message``."""
    line = '  {"event": "login", "user": "ann"}'
    out = parser("json")(record(line))
    assert out is not None
    assert out["message"] == line
    assert out["event"] == "login"
    assert "parse_error" not in out


def test_json_never_overwrites_pipeline_keys() -> None:
    """``time``/``stream``/``offset`` from the line get a trailing underscore."""
    line = '{"message":"m","time":"2024-05-01T00:00:00Z","stream":"x","offset":3,"msg":"other"}'
    out = parser("json")(record(line))
    assert out is not None
    assert (out["time"], out["stream"]) == (1.5, "stdout")
    assert (out["time_"], out["stream_"], out["offset_"]) == ("2024-05-01T00:00:00Z", "x", 3)
    assert (out["message"], out["msg"]) == ("m", "other")


def test_json_message_that_is_not_a_string_becomes_json_text() -> None:
    """A structured ``message`` value is kept as its JSON text (``message`` is always a str)."""
    out = parser("json")(record('{"message": {"a": [1, 2]}}'))
    assert out is not None
    assert out["message"] == '{"a":[1,2]}'


@pytest.mark.parametrize(
    "line",
    [
        "[1, 2, 3]",
        "42",
        '"a string"',
        "null",
        "{not json}",
        '{"unterminated": "',
        "",
        "plain text line",
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 10_000 + "1" + "}" * 10_000,
        "{\ufffd\ufffd}",
    ],
    ids=[
        "array",
        "number",
        "string",
        "null",
        "invalid",
        "truncated",
        "empty",
        "text",
        "deep",
        "deep-object",
        "replacement-chars",
    ],
)
def test_json_failures_keep_the_line_and_flag_it(line: str) -> None:
    """Non-objects and invalid JSON: the record is unchanged but for ``parse_error``."""
    out = parser("json")(record(line))
    assert out == {**record(line), "parse_error": "json"}


def test_json_edge_values() -> None:
    """Huge strings, ints beyond 64 bits, U+FFFD from invalid UTF-8 and duplicate keys."""
    big = "x" * 2_000_000
    out = parser("json")(record(json.dumps({"message": big, "n": 12345678901234567890123})))
    assert out is not None
    assert out["message"] == big
    assert out["n"] == 12345678901234567890123
    out = parser("json")(record('{"msg": "caf\ufffd", "k": 1, "k": 2}'))
    assert out is not None
    assert (out["message"], out["k"]) == ("caf\ufffd", 2)


def test_json_target_raw_key_and_types() -> None:
    """``target`` nests the fields, ``raw_key`` keeps the line, ``types`` converts strings."""
    line = '{"msg": "hi", "status": "503", "ok": "false", "took": "x"}'
    step = parser(
        {
            "format": "json",
            "target": "app",
            "raw_key": "raw",
            "types": {"status": "int", "ok": "bool", "took": "float"},
        }
    )
    out = step(record(line))
    assert out is not None
    assert out["message"] == line
    assert out["raw"] == line
    assert out["app"] == {"msg": "hi", "status": 503, "ok": False, "took": "x"}


def test_logfmt_line() -> None:
    """Quoted values with escapes, bare keys (true), empty values and stray characters."""
    line = (
        'ts=2024-05-01T12:00:00Z level=warn msg="disk \\"almost\\" full\\n(95%)" path=/var '
        'retry empty= quoted="" caf\u00e9=cr\u00e8me \tuni="\\u00e9t\\u00e9" = junk'
    )
    out = parser("logfmt")(record(line))
    assert out == {
        "message": 'disk "almost" full\n(95%)',
        "time": 1.5,
        "stream": "stdout",
        "ts": "2024-05-01T12:00:00Z",
        "level": "warn",
        "path": "/var",
        "retry": True,
        "empty": "",
        "quoted": "",
        "caf\u00e9": "cr\u00e8me",
        "uni": "\u00e9t\u00e9",
        "junk": True,
    }


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("a=1 a=2", {"a": "2"}),
        ('k="tab\\there" go="\\x41\\q"', {"k": "tab\there", "go": "Aq"}),
        ('path="C:\\\\dir"', {"path": "C:\\dir"}),
        ("only bare words here", None),
        ('msg="unterminated', None),
        ('a=b"c', None),
        ("", None),
    ],
)
def test_logfmt_edge_cases(line: str, expected: dict[str, Any] | None) -> None:
    """Duplicates (last wins), Go escapes, and lines that are not logfmt (``None``)."""
    assert parse_logfmt(line) == expected


def test_logfmt_failure_flags_record() -> None:
    """A line with no ``key=value`` pair is kept as it is, flagged ``logfmt``."""
    out = parser("logfmt")(record("Starting server"))
    assert out == {**record("Starting server"), "parse_error": "logfmt"}


def test_regex_named_groups_become_fields() -> None:
    """Named groups become fields (``message`` replaces the line); absent optional groups do not."""
    step = parser(
        {
            "format": "regex",
            "pattern": r"^(?P<ip>\S+) \S+ \S+ \[(?P<when>[^\]]+)\] \"(?P<method>\w+) (?P<path>\S+)"
            r"[^\"]*\" (?P<status>\d{3}) (?P<size>\d+|-)(?: \"(?P<referer>[^\"]*)\")?",
            "types": {"status": "int"},
        }
    )
    line = '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326'
    out = step(record(line))
    assert out == {
        **record(line),
        "ip": "127.0.0.1",
        "when": "10/Oct/2000:13:55:36 -0700",
        "method": "GET",
        "path": "/apache_pb.gif",
        "status": 200,
        "size": "2326",
    }
    assert step(record("garbage")) == {**record("garbage"), "parse_error": "regex"}
    step = parser({"format": "regex", "pattern": r"^(?P<level>[A-Z]+) (?P<message>.*)"})
    assert step(record("WARN low disk")) == {**record("low disk"), "level": "WARN"}


def test_plain_and_fallback_lists() -> None:
    """``plain`` adds nothing; a list tries formats in order; all failing names each one."""
    assert parser("plain")(record("x=1")) == record("x=1")
    step = parser(["json", "logfmt"])
    assert step(record('{"a": 1}')) == {**record('{"a": 1}'), "a": 1}
    assert step(record("a=1")) == {**record("a=1"), "a": "1"}
    assert step(record("hello")) == {**record("hello"), "parse_error": "json,logfmt"}
    assert parser(["json", "plain"])(record("hello")) == record("hello")


def test_other_field_and_missing_field() -> None:
    """``field`` parses another string field; a missing or non-string field is a failure."""
    step = parser({"format": "json", "field": "log"})
    out = step(record("m", log='{"message": "inner", "x": 1}'))
    assert out is not None
    assert (out["message"], out["x"]) == ("inner", 1)
    assert step(record("m"))["parse_error"] == "json"  # type: ignore[index]
    assert step(record("m", log=5))["parse_error"] == "json"  # type: ignore[index]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("xml", "unknown format 'xml' (use json, logfmt or plain"),
        ("regex", "unknown format 'regex'"),
        ([], "expected a format or a list of formats"),
        ({"format": "regex"}, "pattern: required with format 'regex'"),
        ({"format": "json", "pattern": "(?P<a>x)"}, "pattern: required with format 'regex'"),
        ({"format": "regex", "pattern": "(x"}, "pattern: invalid regex '(x'"),
        ({"format": "regex", "pattern": "x+"}, "needs named groups"),
        ({"format": "yaml"}, "format: expected one of json, logfmt, regex, plain, got 'yaml'"),
        ({"format": "json", "target": "time"}, "target/raw_key: message, time"),
        ({"format": "json", "types": {"a": "date"}}, "Invalid enum value 'date'"),
        ({"format": "json", "extra": 1}, "unknown key"),
    ],
)
def test_bad_parse_config(spec: Any, expected: str) -> None:
    """Bad ``parse`` values are one line saying what is wrong."""
    with pytest.raises(ConfigError) as caught:
        decode_struct({"parse": spec}, ProcessorConfig, prefix=".plugins.logs.processors[0]")
    message = str(caught.value)
    assert expected in message
    assert "plugins.logs.processors[0]" in message
    assert "\n" not in message


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=10,
)


_JSON = parser("json")
_EITHER = parser(["json", "logfmt"])


@settings(max_examples=150, deadline=None)
@given(text=st.text())
def test_parsers_never_raise_on_any_text(text: str) -> None:
    """Any text through json, logfmt or both: a record comes back, never an exception."""
    out = _EITHER(record(text))
    assert out is not None
    assert out["time"] == 1.5
    if "parse_error" in out:
        assert out["parse_error"] == "json,logfmt"
        assert parse_logfmt(text) is None


@settings(max_examples=100, deadline=None)
@given(value=_json_values)
def test_json_parser_on_any_json(value: Any) -> None:
    """Any JSON value: objects are merged (never raising), everything else is flagged."""
    text = msgspec.json.encode(value).decode()
    out = _JSON(record(text))
    assert out is not None
    if isinstance(value, dict):
        assert "parse_error" not in out
        assert isinstance(out["message"], str)
    else:
        assert out["parse_error"] == "json"


_keys = st.text(
    st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs"), blacklist_characters='="'),
    min_size=1,
)


@settings(max_examples=100, deadline=None)
@given(fields=st.dictionaries(_keys, st.text(st.characters(codec="utf-8")), min_size=1))
def test_logfmt_round_trip(fields: dict[str, str]) -> None:
    """What a logfmt writer quotes (JSON-style escapes) parses back to the same fields."""
    line = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in fields.items())
    assert parse_logfmt(line) == fields


def test_chain_runs_the_same_parse_as_a_direct_call() -> None:
    """The chain's fast path for one format gives what calling the step gives."""
    step = parser("json")
    lines = ['{"msg": "a", "n": 1}', "not json", '{"time": 5}']
    kept, dropped = run_chain_batch([step], [record(line) for line in lines])
    assert dropped == {}
    assert kept == [step(record(line)) for line in lines]
    assert [r.get("parse_error") for r in kept] == [None, "json", None]
