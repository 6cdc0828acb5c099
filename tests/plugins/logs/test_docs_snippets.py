"""docs/how-to/ship-logs.md works as written: every TOML block passes ``sidecar-run check``, every
``sidecar-run`` command line parses and checks, and every key, metric and event it names exists.

The page's snippets are owned here, not by ``tests/unit/test_doc_snippets.py``, whose block and
command helpers this module reuses. A block introduced by a line like ``\\`sidecar.toml\\`:`` is
the file of that name when a command names it.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sidecar_plugins.logs import LogsConfig, LogsPlugin
from sidecar_plugins.logs._filters import BUILTIN_RULES
from sidecar_plugins.logs._metrics import METRIC_DOCS

from sidecar_runtime import _commands as commands
from tests.unit.test_doc_snippets import (
    OWNED_ELSEWHERE,
    SHELLS,
    Block,
    Command,
    exercise,
    fenced_blocks,
    invoke,
    shell_commands,
)

ROOT = Path(__file__).resolve().parents[3]
PAGE = ROOT / "docs" / "how-to" / "ship-logs.md"
TEXT = PAGE.read_text(encoding="utf-8")
BLOCKS = fenced_blocks(PAGE)
TOML_BLOCKS = [b for b in BLOCKS if b.lang == "toml"]
COMMANDS = [c for b in BLOCKS if b.lang in SHELLS and b.skip is None for c in shell_commands(b)]
_VAR = re.compile(r"(?<!\$)\$\{(\w+)\}")
#: A block the reader saves under a name: "`sidecar.toml`:", a blank line, the block.
_NAMED = re.compile(r"`([\w./-]+\.toml)`:\n\n```toml\n(.*?)^```", re.MULTILINE | re.DOTALL)
#: Backticked snake_case words (config keys, metrics, events, record fields).
_SNAKE = re.compile(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+)(?:\{[^`]*\})?`")
#: Snake_case words of the page that are not keys or names: record fields, drop reasons, an
#: error kind, Fluentd's input.
_OTHER_WORDS = {
    "parse_error",
    "processor_error",
    "retries_exhausted",
    "http_503",
    "in_forward",
}


def named_files() -> dict[str, str]:
    """The blocks the page asks the reader to save, by file name."""
    return {name: body for name, body in _NAMED.findall(TEXT)}


def _struct_keys(tp: Any, seen: set[type]) -> set[str]:
    """Every field name (as written in config) of the msgspec structs reachable from ``tp``."""
    origin = typing.get_origin(tp)
    if origin is not None or isinstance(tp, types.UnionType):
        return {k for arg in typing.get_args(tp) for k in _struct_keys(arg, seen)}
    if not (isinstance(tp, type) and issubclass(tp, msgspec.Struct)) or tp in seen:
        return set()
    seen.add(tp)
    hints = typing.get_type_hints(tp, include_extras=True)
    keys: set[str] = set()
    for field in msgspec.structs.fields(tp):
        keys.add(field.encode_name)
        keys |= _struct_keys(hints[field.name], seen)
    return keys


def known_names() -> set[str]:
    """Keys of the logs config (nested tables and outputs included), output types, built-in
    redact rules, the plugin's metrics and events."""
    keys = _struct_keys(LogsConfig, set())
    output_types = {
        str(cls.__struct_config__.tag)
        for cls in typing.get_args(typing.get_type_hints(LogsConfig)["outputs"])[1].__args__
    }
    return keys | output_types | set(BUILTIN_RULES) | set(METRIC_DOCS) | set(LogsPlugin.EVENT_DOCS)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory, entered, with the page's named files; no SIDECAR_* vars."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("SIDECAR_")]:
        monkeypatch.delenv(name)
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC"):
        monkeypatch.delenv(name, raising=False)
    for name, body in named_files().items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    return tmp_path


def test_the_page_is_found_and_owned_here() -> None:
    """The page has its blocks and commands, nothing is skipped, the shared snippet test leaves
    it to this module, and the docs index links it."""
    assert len(TOML_BLOCKS) >= 14
    assert len(COMMANDS) >= 2
    assert "sidecar.toml" in named_files()
    assert not [b.line for b in BLOCKS if b.skip]
    assert OWNED_ELSEWHERE["how-to/ship-logs.md"] == "tests/plugins/logs/test_docs_snippets.py"
    assert "(how-to/ship-logs.md)" in (ROOT / "docs" / "index.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=lambda b: f"line{b.line}")
def test_toml_block_passes_check(
    block: Block, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sidecar-run check --config FILE -- true`` accepts the block with no warning, and the
    logs tables it sets are in the resolved config."""
    data = tomllib.loads(block.text)
    for name in _VAR.findall(block.text):
        monkeypatch.setenv(name, f"from-{name.lower()}")
    (workdir / "snippet.toml").write_text(block.text, encoding="utf-8")
    code, out, err = invoke(commands.check, ["--config", "snippet.toml", "--", "true"])
    assert code == 0, err
    assert "warning" not in err, err
    resolved = json.loads(out)
    wanted = data.get("plugins", {}).get("logs")
    if wanted is None:
        assert set(data) <= set(resolved)
        return
    logs = resolved["plugins"]["logs"]
    assert logs["enabled"] is True
    assert set(wanted) <= set(logs)
    assert set(wanted.get("outputs", {})) == set(logs["outputs"])
    assert len(wanted.get("processors", [])) == len(logs["processors"])
    assert len(wanted.get("files", [])) == len(logs["files"])


def test_a_wrong_key_in_a_logs_block_fails(workdir: Path) -> None:
    """The same check refuses a misspelt key of a nested table, naming it."""
    bad = '[plugins.logs.outputs.loki]\ntype = "loki"\nurl = "http://loki:3100"\nlabel = {}\n'
    (workdir / "snippet.toml").write_text(bad, encoding="utf-8")
    code, _, err = invoke(commands.check, ["--config", "snippet.toml", "--", "true"])
    assert code == 2
    assert "plugins.logs.outputs" in err
    assert "label: unknown key" in err


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"line{c.line}")
def test_command_line_checks(
    command: Command, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command's flags parse, and ``check`` in place of the run accepts them (its config
    file is the page's block of that name)."""
    for word in command.words:
        if word.endswith(".toml"):
            assert (workdir / word).exists(), f"{word}: the page does not provide it"
    exercise(command, monkeypatch)


def test_a_bad_log_output_spec_fails(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command with an unknown ``--log-output`` scheme is refused by the same check."""
    (command,) = shell_commands(
        Block("x.md", 1, "sh", "sidecar-run --log-output lokki://x:3100 -- ./app\n", None)
    )
    with pytest.raises(AssertionError, match="lokki"):
        exercise(command, monkeypatch)


def test_every_named_key_metric_and_event_exists() -> None:
    """Each backticked snake_case word of the page is a logs config key, an output type, a
    built-in redact rule, a metric or an event of the plugin (or one of a few other words)."""
    known = known_names() | _OTHER_WORDS
    named = set(_SNAKE.findall(TEXT))
    assert {"buffer_max_bytes", "sidecar_logs_dropped_total", "logs_drained"} <= named
    assert sorted(named - known) == []


def test_the_name_check_catches_a_typo() -> None:
    """A misspelt key is not among the known names."""
    known = known_names()
    assert "spool_max_bytes" in known
    assert "spool_max_byte" not in known
