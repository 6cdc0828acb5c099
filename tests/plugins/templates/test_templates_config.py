"""``[plugins.templates]`` is decoded strictly: each mistake is one line naming its key, and
``sidecar-run check`` exits 2 on it before anything starts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sidecar_plugins.templates import TemplatesConfig, TemplatesPlugin
from sidecar_plugins.templates._config import parse_mode

from sidecar_runtime import ConfigError
from sidecar_runtime._config import decode_struct
from tests.conftest import run_sidecar


@pytest.fixture
def source(tmp_path: Path) -> str:
    path = tmp_path / "app.ini.tmpl"
    path.write_text("port={{ env.PORT | default('8080') }}\n")
    return str(path)


def decode(table: dict[str, Any]) -> TemplatesConfig:
    return decode_struct(table, TemplatesConfig, prefix=".plugins.templates")


def error(table: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        decode(table)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_a_valid_table_decodes_with_defaults(source: str, tmp_path: Path) -> None:
    """Durations, signal names, modes, owners and vars decode; defaults fill the rest."""
    config = decode(
        {
            "templates": [
                {
                    "source": source,
                    "target": str(tmp_path / "out" / "app.ini"),
                    "mode": "0640",
                    "owner": 0,
                    "group": "0",
                    "vars": {"workers": 4, "hosts": ["a", "b"]},
                    "on_change": {"signal": "hup"},
                },
                {
                    "source": source,
                    "target": str(tmp_path / "b.ini"),
                    "on_change": {"exec": ["true"], "timeout": "2s"},
                },
            ],
            "debounce": "50ms",
        }
    )
    first, second = config.templates
    assert first.mode_bits == 0o640
    assert first.uid == 0
    assert first.gid == 0
    assert first.on_change is not None
    assert first.on_change.describe() == "signal HUP"
    assert second.on_change is not None
    assert second.on_change.timeout == 2.0
    assert second.label == str(tmp_path / "b.ini")
    assert config.debounce == 0.05
    assert config.force_polling is False


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({}, "plugins.templates: templates: no templates to render"),
        ({"templates": []}, "plugins.templates: templates: no templates to render"),
        (
            {"templates": [{"source": "/nonexistent/app.tmpl", "target": "/tmp/x"}]},
            "plugins.templates.templates[0]: source: no such file '/nonexistent/app.tmpl'",
        ),
        (
            {"templates": [{"source": "SRC", "target": "T", "on_change": {"signal": "HUPP"}}]},
            "plugins.templates.templates[0].on_change.signal: value 'HUPP' is not a valid signal",
        ),
        (
            {"templates": [{"source": "SRC", "target": "T", "mode": "rw-r--r--"}]},
            'plugins.templates.templates[0]: mode: expected octal permissions like "0640"',
        ),
        (
            {"templates": [{"source": "SRC", "target": "T", "mode": 644}]},
            'mode: 644 is read as a decimal number; write the mode as a string: "0644"',
        ),
        (
            {"templates": [{"source": "SRC", "target": "T", "owner": "no-such-user-xyz"}]},
            "templates[0]: owner: unknown user 'no-such-user-xyz' on this machine",
        ),
        (
            {"templates": [{"source": "SRC", "target": "T", "vars": {"env": "x"}}]},
            "templates[0]: vars: 'env' would hide the built-in 'env'",
        ),
        (
            {"templates": [{"source": "SRC", "target": "T", "on_change": {}}]},
            "on_change: give exactly one of signal, exec or restart (found: none)",
        ),
        (
            {"templates": [{"source": "SRC", "target": "T", "on_change": {"exec": []}}]},
            "on_change.exec: expected a command as a list",
        ),
        (
            {
                "templates": [
                    {"source": "SRC", "target": "T", "on_change": {"signal": 1, "restart": True}}
                ]
            },
            "(found: signal, restart)",
        ),
        (
            {
                "templates": [
                    {
                        "source": "SRC",
                        "target": "T",
                        "on_change": {"restart": True, "timeout": "1s"},
                    }
                ]
            },
            "on_change.timeout: only exec actions take a timeout",
        ),
        (
            {"templates": [{"source": "SRC", "target": "T", "colour": "red"}]},
            "plugins.templates.templates[0].colour: unknown key",
        ),
        (
            {"templates": [{"source": "SRC", "target": "T"}], "poll_interval": "1ms"},
            "plugins.templates: poll_interval: must be at least 10ms",
        ),
    ],
)
def test_bad_tables_are_one_line_errors_naming_the_key(
    table: dict[str, Any], expected: str, source: str, tmp_path: Path
) -> None:
    """Each mistake names the key path and what is wrong."""
    for entry in table.get("templates", []):
        entry["source"] = source if entry["source"] == "SRC" else entry["source"]
        entry["target"] = str(tmp_path / "t.ini") if entry["target"] == "T" else entry["target"]
    assert expected in error(table)


def test_two_templates_with_one_target_are_refused(source: str, tmp_path: Path) -> None:
    """The same file written by two templates (even spelled differently) is an error."""
    target = tmp_path / "app.ini"
    other = tmp_path / "." / "sub" / ".." / "app.ini"
    (tmp_path / "sub").mkdir()
    text = error(
        {
            "templates": [
                {"source": source, "target": str(target)},
                {"source": source, "target": str(other), "name": "second"},
            ]
        }
    )
    assert (
        f"plugins.templates: templates[1].target: '{other}' is also the target of templates[0]"
        in text
    )


def test_targets_that_are_directories_or_sources_are_refused(source: str, tmp_path: Path) -> None:
    """A directory as target, or a template overwriting a template, never starts."""
    assert "target: " in error({"templates": [{"source": source, "target": str(tmp_path)}]})
    assert "is the template itself" in error({"templates": [{"source": source, "target": source}]})
    other = tmp_path / "other.tmpl"
    other.write_text("x")
    text = error(
        {
            "templates": [
                {"source": source, "target": str(tmp_path / "a")},
                {"source": str(other), "target": source},
            ]
        }
    )
    assert "templates[1].target" in text
    assert "the source of templates[0]" in text


def test_modes_read_as_people_write_them() -> None:
    """Octal strings with or without 0/0o, and small ints (TOML 0o640) are modes."""
    assert parse_mode("0640") == parse_mode("640") == parse_mode("0o640") == 0o640
    assert parse_mode("4755") == 0o4755
    assert parse_mode(0o600) == 0o600
    for bad in ("0800", "64", "99999", True, 70000):
        with pytest.raises(ValueError, match=r"mode|octal"):
            parse_mode(bad)


def test_check_warns_about_syntax_errors(source: str, tmp_path: Path) -> None:
    """``sidecar-run check`` points at a template that does not parse, with its line."""
    broken = tmp_path / "broken.tmpl"
    broken.write_text("ok\n{% if %}\n")
    config = decode(
        {
            "templates": [
                {"source": source, "target": str(tmp_path / "a")},
                {"source": str(broken), "target": str(tmp_path / "b")},
            ]
        }
    )
    warnings = TemplatesPlugin.check_warnings(config)
    assert len(warnings) == 1
    assert warnings[0].startswith(f"templates[1] ({broken}): {broken}:2: syntax error:")


def test_check_command_exits_2_with_the_key(source: str, tmp_path: Path) -> None:
    """The real command: a bad mode is one line on stderr naming the key, exit 2."""
    config = tmp_path / "sidecar.toml"
    config.write_text(
        "[app]\ncommand = ['true']\n[plugins.templates]\n"
        f"templates = [{{ source = '{source}', target = '{tmp_path}/x', mode = 'abc' }}]\n"
    )
    result = run_sidecar(["check", "--config", str(config)], cwd=os.getcwd())
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert "plugins.templates.templates[0]: mode: expected octal permissions" in lines[0]
