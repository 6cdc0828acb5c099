"""The docs match the code: fresh reference pages, every flag and key documented, working links,
the README's two quick-start commands, and a plugin how-to whose code runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path

import msgspec
import pytest
from sidecar_plugins.admin import AdminConfig

from sidecar_runtime._cli import build_run_parser
from sidecar_runtime._config import Config

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
QUICK_START = [
    "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/sidecar-run demo",
    "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' && .venv/bin/python -m pytest",
]
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_DOC_FILE = re.compile(
    r"`([\w./-]+\.(?:py|toml))`:\n\n```(?:python|toml)\n(.*?)^```", re.MULTILINE | re.DOTALL
)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child command, without SIDECAR_* or pytest variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SIDECAR_", "PYTEST_")) and k != "NOTIFY_SOCKET"
    }
    env.update(extra)
    return env


def sections(markdown: str) -> dict[str, str]:
    """Level-2 sections of a Markdown page by heading text."""
    found = {}
    for part in re.split(r"^## ", markdown, flags=re.MULTILINE)[1:]:
        title, _, body = part.partition("\n")
        found[title.strip()] = body
    return found


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def markdown_files() -> list[Path]:
    """README.md and every page under docs/."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def test_reference_is_up_to_date() -> None:
    """``python docs/gen_reference.py --check`` finds no stale page in docs/reference."""
    result = subprocess.run(
        [sys.executable, str(DOCS / "gen_reference.py"), "--check", "--diff"],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_run_flag_is_in_the_cli_reference() -> None:
    """Each option string of ``build_run_parser()`` appears in docs/reference/cli.md."""
    text = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    flags = [o for a in build_run_parser()._actions for o in a.option_strings]
    assert flags
    missing = [flag for flag in flags if f"`{flag}`" not in text]
    assert not missing


def _struct_keys(struct: type[msgspec.Struct]) -> list[str]:
    return list(struct.__struct_fields__)


def test_every_config_key_is_in_the_config_reference() -> None:
    """Each field of the config structs has a row in its section of config.md."""
    pages = sections((DOCS / "reference" / "config.md").read_text(encoding="utf-8"))
    expected: dict[str, list[str]] = {"Top level": []}
    hints = typing.get_type_hints(Config)
    for name in Config.__struct_fields__:
        tp = hints[name]
        if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
            expected[f"`[{name}]`"] = _struct_keys(tp)
        else:
            expected["Top level"].append(name)
    expected["`[plugins.<name>]`"] = ["enabled", "critical"]
    expected["`[plugins.admin]`"] = _struct_keys(AdminConfig)
    missing = [
        f"{section}: {key}"
        for section, keys in expected.items()
        for key in keys
        if f"| `{key}` |" not in pages.get(section, "")
    ]
    assert not missing


def test_readme_quick_start_has_exactly_the_two_commands() -> None:
    """The quick start holds the demo and the test commands, one per code block, nothing else."""
    text = README.read_text(encoding="utf-8")
    quick_start = sections(text)["Quick start"]
    blocks = [block.strip() for block in _FENCE.findall(quick_start)]
    assert blocks == QUICK_START
    for command in QUICK_START:
        assert text.count(command) == 1


def test_relative_links_resolve() -> None:
    """Every relative link in README.md and docs/ names an existing file and heading."""
    broken = []
    for page in markdown_files():
        for target in _LINK.findall(page.read_text(encoding="utf-8")):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path_part, _, anchor = target.partition("#")
            path = (page.parent / path_part).resolve() if path_part else page
            if not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
                continue
            if anchor and path.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
                if anchor not in {slug(h) for h in headings}:
                    broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken


@pytest.mark.slow
def test_plugin_howto_code_runs(tmp_path: Path) -> None:
    """The how-to's plugin passes its own tests and loads through its entry point."""
    howto = (DOCS / "how-to" / "write-a-plugin.md").read_text(encoding="utf-8")
    files = dict(_DOC_FILE.findall(howto))
    assert {"pyproject.toml", "lc.toml", "tests/test_linecount.py"} <= files.keys()
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    project = tomllib.loads(files["pyproject.toml"])["project"]
    entry_points = project["entry-points"]["sidecar_runtime.plugins"]
    assert entry_points == {"linecount": "sidecar_linecount:LineCountPlugin"}

    # Install the entry point without pip: a .dist-info directory on the path is enough.
    dist_info = tmp_path / "site" / "sidecar_linecount-0.1.0.dist-info"
    dist_info.mkdir(parents=True)
    metadata = f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    (dist_info / "METADATA").write_text(metadata, encoding="utf-8")
    lines = [f"{name} = {value}" for name, value in entry_points.items()]
    (dist_info / "entry_points.txt").write_text(
        "[sidecar_runtime.plugins]\n" + "\n".join(lines) + "\n", encoding="utf-8"
    )
    env = clean_env(PYTHONPATH=os.pathsep.join([str(tmp_path / "src"), str(tmp_path / "site")]))

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr

    check = subprocess.run(
        [sys.executable, "-m", "sidecar_runtime", "check", "--config", "lc.toml"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    plugin = json.loads(check.stdout)["plugins"]["linecount"]
    assert plugin == {
        "enabled": True,
        "critical": False,
        "pattern": "ERROR|FATAL",
        "buffer": 1024,
        "summary_file": "/tmp/linecount.json",
    }
