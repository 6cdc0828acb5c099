"""The documentation site builds with ``mkdocs build --strict``: no broken link or anchor, and
every page under docs/ in the nav of mkdocs.yml."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

pytest.importorskip("mkdocs", reason="mkdocs is not installed")


def nav_pages(nav: object) -> list[str]:
    """Every page file named in an mkdocs nav, depth first."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def test_nav_has_the_diataxis_sections_and_every_page() -> None:
    """Tutorial, How-to, Reference and Explanation, in that order; each page exactly once."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    sections = [next(iter(item)) for item in config["nav"]]
    assert sections == ["Home", "Tutorial", "How-to guides", "Reference", "Explanation"]
    pages = nav_pages(config["nav"])
    assert len(pages) == len(set(pages))
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert set(pages) == on_disk


@pytest.mark.slow
def test_mkdocs_build_strict_has_no_warning(tmp_path: Path) -> None:
    """``mkdocs build --strict`` succeeds and logs no WARNING (links, anchors, omitted pages)."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not re.search(r"^WARNING", output, re.MULTILINE), output
    assert (tmp_path / "site" / "how-to" / "systemd" / "index.html").is_file()
    assert not list((tmp_path / "site").rglob("*.py"))  # the generator is not published
