"""Generated blocks inside hand-written pages, such as the state diagram in the lifecycle page.

A block sits between ``<!-- generated: NAME -->`` and ``<!-- /generated -->`` on lines of their
own; everything between them is replaced by ``BLOCKS[NAME]()``. The prose around it stays hand
written, so an explanation can show a diagram that cannot drift from the code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from .markdown import ROOT
from .prose import DocsError
from .states import state_diagram

__all__ = ["BLOCKS", "PAGES", "render_blocks", "splice"]

#: What each block name is generated from.
BLOCKS: dict[str, Callable[[], str]] = {
    "states-diagram": state_diagram,
}
#: The hand-written pages that carry generated blocks.
PAGES = [ROOT / "docs" / "explanation" / "lifecycle.md"]

_BLOCK = re.compile(
    r"^<!-- generated: (?P<name>[\w-]+) -->\n(?P<body>.*?)^<!-- /generated -->$",
    re.MULTILINE | re.DOTALL,
)
_OPENING = re.compile(r"^<!-- generated: ([\w-]+) -->$", re.MULTILINE)


def splice(text: str, where: str) -> str:
    """``text`` with the body of every generated block replaced by its current content."""
    opened = _OPENING.findall(text)
    found = [m.group("name") for m in _BLOCK.finditer(text)]
    if opened != found:
        msg = f"{where}: a '<!-- generated: NAME -->' block has no '<!-- /generated -->' line"
        raise DocsError(msg)
    unknown = sorted(set(found) - BLOCKS.keys())
    if unknown:
        msg = f"{where}: unknown generated block {', '.join(unknown)} (known: {', '.join(BLOCKS)})"
        raise DocsError(msg)

    def fill(match: re.Match[str]) -> str:
        name = match.group("name")
        return f"<!-- generated: {name} -->\n{BLOCKS[name]().strip()}\n<!-- /generated -->"

    return _BLOCK.sub(fill, text)


def render_blocks() -> dict[Path, str]:
    """Every page of :data:`PAGES` with its generated blocks brought up to date."""
    pages = {}
    for path in PAGES:
        where = str(path.relative_to(ROOT))
        text = path.read_text(encoding="utf-8")
        if not _OPENING.search(text):
            msg = f"{where}: expected at least one '<!-- generated: NAME -->' block"
            raise DocsError(msg)
        pages[path] = splice(text, where)
    return pages
