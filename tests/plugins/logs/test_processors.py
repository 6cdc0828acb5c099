"""The processor chain: config tables → named processors, custom ones by module path or entry
point, drops counted by name, and failing processors that never stop the pipeline."""

from __future__ import annotations

import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import structlog
from sidecar_plugins.logs._processors import (
    ProcessorConfig,
    build_chain,
    chain_errors,
    run_chain,
    run_chain_batch,
)
from structlog.testing import capture_logs

from sidecar_runtime import ConfigError
from sidecar_runtime._config import decode_struct


class Logs(msgspec.Struct, forbid_unknown_fields=True):
    """Just the ``processors`` key of ``[plugins.logs]``, for decoding tests."""

    processors: list[ProcessorConfig] = []


def configs(*tables: dict[str, Any]) -> list[ProcessorConfig]:
    data = {"processors": list(tables)}
    return decode_struct(data, Logs, prefix=".plugins.logs").processors


def chain(*tables: dict[str, Any], log: Any = None) -> list[Any]:
    return build_chain(configs(*tables), log=log)


def rec(message: str = "m", **fields: Any) -> dict[str, Any]:
    return {"message": message, "time": 1.0, "stream": "stdout", **fields}


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Write importable modules into a directory on sys.path; forget them afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, code: str) -> Path:
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(code))
        written.append(name)
        return path

    yield write
    for name in written:
        sys.modules.pop(name, None)


PROCS = """
    def tag(record):
        record["tagged"] = True
        return record

    def drop_all(record):
        return None

    def make_prefixer(prefix, field="message"):
        def prefix_it(record):
            record[field] = prefix + record[field]
            return record
        prefix_it.name = "prefixer"
        return prefix_it

    class Counter:
        name = "counter"
        def __init__(self, start=0):
            self.seen = start
        def __call__(self, record):
            self.seen += 1
            record["seq"] = self.seen
            return record

    def explode_on_boom(record):
        if "boom" in record["message"]:
            raise ValueError("boom in " + record["message"])
        return record

    def not_a_record(record):
        return "oops"

    def bad_factory(**options):
        raise RuntimeError("no database")

    def make_constant():
        return 42

    CONSTANT = 42
"""


def test_toml_config_runs_end_to_end() -> None:
    """A TOML processors list decodes, builds and processes a batch: parse, level, drops,
    redaction; the kept records stay in order, drops are counted per processor name."""
    text = """
    [[plugins.logs.processors]]
    parse = ["json", "plain"]

    [[plugins.logs.processors]]
    level = {from_message = true}

    [[plugins.logs.processors]]
    drop = {field = "level", in = ["debug", "trace"]}

    [[plugins.logs.processors]]
    name = "healthz"
    drop = {field = "path", matches = '^/healthz'}

    [[plugins.logs.processors]]
    redact = ["password_kv"]

    [[plugins.logs.processors]]
    enrich = {fields = {service = "api"}}
    """
    tree = tomllib.loads(textwrap.dedent(text))
    steps = chain(*tree["plugins"]["logs"]["processors"])
    assert [s.name for s in steps] == ["parse", "level", "drop", "healthz", "redact", "enrich"]
    records = [
        rec('{"level": "DEBUG", "msg": "cache miss"}'),
        rec('{"level": "info", "msg": "ok", "path": "/healthz"}'),
        rec("WARNING: login failed password=hunter2"),
        rec('{"severity": "ERROR", "msg": "db down"}'),
    ]
    kept, dropped = run_chain_batch(steps, records)
    assert dropped == {"drop": 1, "healthz": 1}
    assert kept == [
        rec("WARNING: login failed password=***", level="warn", service="api"),
        rec("db down", severity="ERROR", level="error", service="api"),
    ]


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({}, "exactly one of parse, enrich, redact, drop, keep, level, timestamp, custom "
             "(found: none)"),
        ({"parse": "json", "level": True}, "(found: parse, level)"),
        ({"parse": "json", "options": {}}, "options: only custom processors take options"),
        ({"level": False}, "level: false does nothing"),
        ({"timestamp": "time"}, "timestamp: field: expected field names other than 'time'"),
        ({"level": True, "name": "has space"}, "name: use 1-100 letters"),
        ({"grep": "x"}, "unknown key"),
    ],
)  # fmt: skip
def test_table_shape_errors(table: dict[str, Any], expected: str) -> None:
    """A table with no kind, two kinds or stray keys is one line naming it."""
    with pytest.raises(ConfigError) as caught:
        configs({"level": True}, table)
    message = str(caught.value)
    assert message.startswith("config: plugins.logs.processors[1]")
    assert expected in message


def test_custom_function_and_factories(modules: Any) -> None:
    """``module:function`` is the processor; with ``options`` or a class, a factory; a ``name``
    attribute names it unless the table does."""
    modules("procs_a", PROCS)
    steps = chain(
        {"custom": "procs_a:tag"},
        {"custom": "procs_a:make_prefixer", "options": {"prefix": "> "}},
        {"custom": "procs_a:Counter"},
        {"custom": "procs_a:Counter", "options": {"start": 10}, "name": "second"},
    )
    assert [s.name for s in steps] == ["procs_a:tag", "prefixer", "counter", "second"]
    kept, dropped = run_chain_batch(steps, [rec("a"), rec("b")])
    assert dropped == {}
    assert kept == [
        rec("> a", tagged=True, seq=11),
        rec("> b", tagged=True, seq=12),
    ]  # the factory ran once per processor: counters continue across records


def test_custom_drop_is_counted_by_its_name(modules: Any) -> None:
    """A custom processor returning None drops the record under its name."""
    modules("procs_b", PROCS)
    steps = chain({"custom": "procs_b:drop_all", "name": "sampler"})
    assert run_chain(steps, rec()) == (None, "sampler")
    assert run_chain_batch(steps, [rec(), rec()]) == ([], {"sampler": 2})


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz' (ModuleNotFoundError: "
         "No module named 'no_such_module_xyz')"),
        ("procs_broken:f", "cannot import module 'procs_broken' (SyntaxError: "),
        ("procs_c:missing", "module 'procs_c' has no attribute 'missing'"),
        ("procs_c:CONSTANT", "'procs_c:CONSTANT' is not callable (it is a int)"),
        ("procs_c:", "expected 'module:function' or an entry point name, got 'procs_c:'"),
        ("a b:c", "expected 'module:function'"),
        ("no-such-entry-point",
         "no entry point 'no-such-entry-point' in group sidecar_runtime.log_processors"),
    ],
)  # fmt: skip
def test_bad_references_are_config_errors(modules: Any, ref: str, expected: str) -> None:
    """Bad references fail when the config is decoded, naming the table and the key."""
    modules("procs_c", PROCS)
    modules("procs_broken", "def f(:\n")
    with pytest.raises(ConfigError) as caught:
        configs({"level": True}, {"parse": "json"}, {"custom": ref})
    message = str(caught.value)
    assert message.startswith("config: plugins.logs.processors[2]: custom: ")
    assert expected in message
    assert "\n" not in message


def test_factory_failures_name_the_key(modules: Any) -> None:
    """A factory that raises or returns a non-callable fails the build with the key path."""
    modules("procs_d", PROCS)
    with pytest.raises(ConfigError) as caught:
        chain({"custom": "procs_d:make_prefixer", "options": {"wrong": 1}})
    assert str(caught.value).startswith(
        "plugins.logs.processors[0].custom: procs_d:make_prefixer(**options) failed (TypeError: "
    )
    with pytest.raises(ConfigError, match=r"RuntimeError: no database"):
        chain({"level": True}, {"custom": "procs_d:bad_factory", "options": {}})
    with pytest.raises(ConfigError, match=r"returned a int, not a callable"):
        chain({"custom": "procs_d:make_constant", "options": {}})


def test_entry_point_lookup(tmp_path: Path, modules: Any) -> None:
    """``custom = "<name>"`` loads an entry point of group sidecar_runtime.log_processors."""
    modules("procs_ep", PROCS)
    dist = tmp_path / "fake_log_procs-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-log-procs\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[sidecar_runtime.log_processors]\n"
        "tagger = procs_ep:tag\n"
        "prefix = procs_ep:make_prefixer\n"
        "broken = procs_ep_missing:thing\n"
    )
    steps = chain({"custom": "tagger"}, {"custom": "prefix", "options": {"prefix": "#"}})
    assert [s.name for s in steps] == ["tagger", "prefixer"]
    assert run_chain(steps, rec("x")) == (rec("#x", tagged=True), None)
    with pytest.raises(ConfigError) as caught:
        configs({"custom": "broken"})
    assert "entry point 'broken' (procs_ep_missing:thing) cannot be loaded" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        configs({"custom": "taggr"})
    assert "(installed: broken, prefix, tagger; or write 'module:function')" in str(caught.value)


def test_failing_processor_never_stops_the_pipeline(modules: Any) -> None:
    """A raising processor: the record goes on flagged (later redaction still applies), the
    error is counted per processor and logged once."""
    modules("procs_e", PROCS)
    with capture_logs() as logs:
        steps = chain(
            {"custom": "procs_e:explode_on_boom", "name": "fragile"},
            {"redact": {"pattern": "secret"}},
            log=structlog.get_logger(),
        )
        kept, dropped = run_chain_batch(
            steps, [rec("boom secret"), rec("fine secret"), rec("boom again")]
        )
    assert dropped == {}
    assert kept == [
        rec("boom ***", processor_error="fragile"),
        rec("fine ***"),
        rec("boom again", processor_error="fragile"),
    ]
    assert chain_errors(steps) == {"fragile": 2}
    assert len(logs) == 1
    event = logs[0]
    assert (event["event"], event["log_level"], event["processor"]) == (
        "log_processor_failed",
        "error",
        "fragile",
    )
    assert event["error"] == "ValueError: boom in boom secret"
    assert isinstance(event["exc_info"], ValueError)


def test_processor_returning_garbage_is_an_error(modules: Any) -> None:
    """A processor returning something that is not a dict or None counts as failed."""
    modules("procs_f", PROCS)
    steps = chain({"custom": "procs_f:not_a_record"}, {"custom": "procs_f:tag"})
    assert run_chain(steps, rec()) == (
        rec(processor_error="procs_f:not_a_record", tagged=True),
        None,
    )
    assert chain_errors(steps) == {"procs_f:not_a_record": 1}


def test_plain_callables_in_a_chain() -> None:
    """Callables not built here work too; their ``__name__`` is the drop reason."""

    def only_errors(record: dict[str, Any]) -> dict[str, Any] | None:
        return record if record.get("level") == "error" else None

    def explode(record: dict[str, Any]) -> dict[str, Any] | None:
        raise KeyError("x")

    with capture_logs() as logs:
        kept, dropped = run_chain_batch(
            [explode, only_errors], [rec(level="error"), rec()], log=structlog.get_logger()
        )
    assert kept == [rec(level="error", processor_error="explode")]
    assert dropped == {"only_errors": 1}
    assert [e["processor"] for e in logs] == ["explode", "explode"]
