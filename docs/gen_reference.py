"""Generate ``docs/reference/*.md`` from the code, so the reference cannot drift.

    python docs/gen_reference.py           rewrite the reference pages
    python docs/gen_reference.py --check   exit 1 and list the pages that are stale

Facts (flags, keys, types, defaults, states, edges, signals, routes, exit codes, log events) are
read from the code. The one-line prose for each fact lives in the tables of
``docs/refgen/prose.py``; a fact without prose, or prose for a fact that no longer exists, stops
the generator with a message that says which table to edit. Run it after changing the CLI, the
config structs, the state table, the signal policy, ``/status`` or a log event.

This file is the entry point; each page is rendered by its own module of ``docs/refgen``. It also
refreshes the generated blocks of hand-written pages (``docs/refgen/sections.py``), such as the
state diagram in ``docs/explanation/lifecycle.md``.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

if not __package__:  # run as a script: python docs/gen_reference.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import sidecar_runtime
from docs.refgen.cli import render_cli
from docs.refgen.config import render_config
from docs.refgen.endpoints import render_endpoints
from docs.refgen.events import PACKAGES, render_events
from docs.refgen.exit_codes import render_exit_codes
from docs.refgen.markdown import GENERATED, REFERENCE, ROOT, page
from docs.refgen.plugins import builtin_plugins
from docs.refgen.prose import (
    EVENT_DOCS,
    KEY_DOCS,
    NOT_HANDLED_DOCS,
    STATE_DOCS,
    STATUS_DOCS,
    DocsError,
)
from docs.refgen.sections import render_blocks
from docs.refgen.signals import render_signals
from docs.refgen.states import render_states

__all__ = [
    "EVENT_DOCS",
    "GENERATED",
    "KEY_DOCS",
    "NOT_HANDLED_DOCS",
    "PACKAGES",
    "PAGES",
    "REFERENCE",
    "ROOT",
    "STATE_DOCS",
    "STATUS_DOCS",
    "DocsError",
    "main",
    "render_all",
    "render_cli",
    "render_config",
    "render_endpoints",
    "render_events",
    "render_exit_codes",
    "render_signals",
    "render_states",
    "stale_pages",
]

PAGES: dict[str, Callable[[], str]] = {
    "cli.md": render_cli,
    "config.md": render_config,
    "endpoints.md": render_endpoints,
    "events.md": render_events,
    "exit-codes.md": render_exit_codes,
    "signals.md": render_signals,
    "states.md": render_states,
}


def render_all() -> dict[Path, str]:
    """Every reference page, by path. A built-in plugin may add pages of its own through a
    ``reference_pages()`` classmethod returning ``{file name: markdown}`` (e.g. its metrics)."""
    assert sidecar_runtime.__version__
    pages = {REFERENCE / name: render() for name, render in PAGES.items()}
    for cls in builtin_plugins().values():
        extra = getattr(cls, "reference_pages", None)
        if extra is not None:
            for name, text in extra().items():
                title, _, body = text.strip().partition("\n")
                pages[REFERENCE / name] = page(title.lstrip("# "), body)
    pages.update(render_blocks())  # generated blocks in hand-written pages (docs/refgen/sections)
    return pages


def stale_pages(pages: Mapping[Path, str]) -> list[Path]:
    """The pages whose file differs from what the code generates now."""
    return [
        p for p, text in pages.items() if not p.exists() or p.read_text(encoding="utf-8") != text
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is stale")
    parser.add_argument("--diff", action="store_true", help="with --check: show the differences")
    args = parser.parse_args(argv)
    try:
        pages = render_all()
    except DocsError as err:
        sys.stderr.write(f"gen_reference: {err}\n")
        return 2
    stale = stale_pages(pages)
    if args.check:
        for path in stale:
            sys.stderr.write(f"stale: {path.relative_to(ROOT)}\n")
            if args.diff:
                old = path.read_text(encoding="utf-8").splitlines(True) if path.exists() else []
                sys.stderr.writelines(difflib.unified_diff(old, pages[path].splitlines(True)))
        if stale:
            sys.stderr.write("run: python docs/gen_reference.py\n")
        return 1 if stale else 0
    REFERENCE.mkdir(parents=True, exist_ok=True)
    for path in stale:
        path.write_text(pages[path], encoding="utf-8")
        sys.stdout.write(f"wrote {path.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
