"""Every config and command snippet in docs/ is exercised.

- Every ``toml`` block passes ``sidecar-run check`` (with a command added when it has no
  ``app.command``, and ``${VAR}`` without a default set in the environment).
- Every ``sidecar-run`` command line of a ``console`` or ``sh`` block runs with ``check``
  in place of a run (``demo`` builds its run and hands it to ``check``); ``check``,
  ``systemd-unit``, ``schema`` and ``plugins`` run as written; ``status`` has no sidecar-run to
  ask, so only its arguments are checked. A command whose files the page does not provide is
  parsed only. When the page shows a usage error (exit status 2), the same error must come.
- A snippet that is not meant to pass is marked ``<!-- snippet: skip (reason) -->`` on a line
  before it; the next fenced block is skipped.
- The tutorial is followed for real: its config built step by step and reloaded, its openssl
  commands, its mTLS request and its shutdown order.

Commands run in-process (``sidecar_runtime._commands``), each in a directory holding the
repository's files and what the page asks the reader to create.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from sidecar_runtime import _commands as commands
from sidecar_runtime._cli import _SUBCOMMANDS as SUBCOMMANDS
from sidecar_runtime._cli import parse_run_args
from tests.conftest import ROOT, free_port, running_sidecar

DOCS = ROOT / "docs"
#: Pages whose snippets another test owns.
OWNED_ELSEWHERE = {
    "how-to/ship-logs.md": "tests/plugins/logs/test_docs_snippets.py",
}
SHELLS = {"console", "sh", "shell", "bash"}
_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
_SKIP = re.compile(r"<!-- snippet: skip \((?P<reason>[^)]+)\) -->")
_VAR = re.compile(r"(?<!\$)\$\{(\w+)\}")
_OWN_OPTIONS = {"check": ("--manifest", "--unit"), "systemd-unit": ("--environment-file",)}
_FILE_OPTIONS = ("--config", "--manifest", "--unit")


@dataclass(frozen=True)
class Block:
    """One fenced block of a page."""

    page: str
    line: int
    lang: str
    text: str
    skip: str | None


@dataclass(frozen=True)
class Command:
    """One sidecar-run command line of a shell block, with what the page says comes of it."""

    page: str
    line: int
    words: list[str]
    output: list[str]
    status: int | None


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, with the skip mark that precedes each, if any."""
    page = str(path.relative_to(DOCS))
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    skip: str | None = None
    i = 0
    while i < len(lines):
        mark = _SKIP.search(lines[i])
        if mark:
            skip = mark.group("reason")
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, start = fence.group("indent"), i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i] != f"{indent}```":
            body.append(lines[i].removeprefix(indent))
            i += 1
        blocks.append(Block(page, start + 1, fence.group("lang"), "\n".join(body) + "\n", skip))
        skip = None
        i += 1
    return blocks


def pages() -> list[Path]:
    return [
        p for p in sorted(DOCS.rglob("*.md")) if str(p.relative_to(DOCS)) not in OWNED_ELSEWHERE
    ]


def all_blocks() -> list[Block]:
    return [block for path in pages() for block in fenced_blocks(path)]


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines with backslash continuations joined, and their index in the block."""
    pending, first = "", 0
    for number, raw in enumerate(text.splitlines()):
        if not pending:
            first = number
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        yield first, pending + raw
        pending = ""
    if pending:
        yield first, pending


def _words(command: str) -> list[str] | None:
    """The words of the first simple command, without leading VAR=value, if it runs
    sidecar-run; None otherwise."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    words: list[str] = []
    for token in lexer:
        if token and set(token) <= set(";&|<>"):
            break
        words.append(token)
    while words and (words[0] == "sudo" or re.fullmatch(r"[A-Za-z_]\w*=.*", words[0])):
        words.pop(0)
    if not words or not (words[0] == "sidecar-run" or words[0].endswith("/sidecar-run")):
        return None
    return words


def shell_commands(block: Block) -> list[Command]:
    """The sidecar-run commands of a console or sh block."""
    found: list[Command] = []
    if block.lang == "console":
        lines = block.text.splitlines()
        starts = [i for i, line in enumerate(lines) if line.startswith("$ ")]
        for n, start in enumerate(starts):
            end = starts[n + 1] if n + 1 < len(starts) else len(lines)
            chunk = [lines[start][2:]]
            i = start
            while chunk[-1].rstrip().endswith("\\") and i + 1 < end:
                i += 1
                chunk.append(lines[i])
            (_, command), *_ = _logical_lines("\n".join(chunk))
            words = _words(command)
            if words is None:
                continue
            output = lines[i + 1 : end]
            status = None
            if re.search(r";\s*echo \$\?\s*$", command) and output and output[-1].isdigit():
                status = int(output[-1])
            found.append(Command(block.page, block.line + start + 1, words, output, status))
    else:
        for index, line in _logical_lines(block.text):
            if line.lstrip().startswith("#"):
                continue
            words = _words(line.strip())
            if words is not None:
                found.append(Command(block.page, block.line + index + 1, words, [], None))
    return found


def all_commands() -> list[Command]:
    return [
        command
        for block in all_blocks()
        if block.lang in SHELLS and block.skip is None
        for command in shell_commands(block)
    ]


# -- what a page asks the reader to create ---------------------------------------------------------


def tutorial_config() -> str:
    """``tutorial/sidecar.toml`` as the tutorial builds it: its TOML blocks, in order."""
    blocks = fenced_blocks(DOCS / "tutorial" / "ten-minutes.md")
    return "\n".join(b.text for b in blocks if b.lang == "toml" and b.skip is None)


def configmap_entry() -> str:
    """``sidecar.yaml`` as the Kubernetes how-to has the reader save it from the ConfigMap."""
    text = (ROOT / "config" / "kubernetes" / "configmap.yaml").read_text(encoding="utf-8")
    entry: str = yaml.safe_load(text)["data"]["sidecar.yaml"]
    return entry


PAGE_FILES: dict[str, dict[str, Callable[[], str]]] = {
    "tutorial/ten-minutes.md": {"tutorial/sidecar.toml": tutorial_config},
    "how-to/kubernetes.md": {"sidecar.yaml": configmap_entry},
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with the repository's files, entered; no SIDECAR_* environment."""
    for entry in ("config", "docs", "plugins", "sidecar_runtime", "README.md", "Dockerfile"):
        (tmp_path / entry).symlink_to(ROOT / entry)
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("SIDECAR_")]:
        monkeypatch.delenv(name)
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def provide(page: str, where: Path) -> None:
    for name, make in PAGE_FILES.get(page, {}).items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(make(), encoding="utf-8")


def invoke(function: Callable[[list[str]], int], argv: list[str]) -> tuple[int, str, str]:
    """Call a subcommand in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = function(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    return code, out.getvalue(), err.getvalue()


# -- TOML blocks -----------------------------------------------------------------------------------


TOML_BLOCKS = [b for b in all_blocks() if b.lang == "toml"]


def test_the_snippets_are_found() -> None:
    """The docs have TOML blocks and sidecar-run commands to check, including this work's pages,
    and every skip mark gives a reason and stands before a block."""
    assert len(TOML_BLOCKS) >= 10
    pages_with_commands = {c.page for c in all_commands()}
    assert {"tutorial/ten-minutes.md", "how-to/kubernetes.md", "how-to/compose.md"} <= (
        pages_with_commands
    )
    for path in pages():
        text = path.read_text(encoding="utf-8")
        marks = text.count("<!-- snippet: skip")
        assert marks == len(_SKIP.findall(text)), f"{path}: a skip mark without (reason)"
        assert marks == sum(1 for b in fenced_blocks(path) if b.skip), f"{path}: a stray mark"


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=lambda b: f"{b.page}:{b.line}")
def test_toml_block_passes_check(
    block: Block, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The block is valid TOML (skipped ones too) and ``sidecar-run check`` accepts it as a
    config file."""
    data = tomllib.loads(block.text)
    if block.skip:
        pytest.skip(block.skip)
    provide(block.page, workdir)
    for name in _VAR.findall(block.text):
        monkeypatch.setenv(name, f"from-{name.lower()}")
    (workdir / "snippet.toml").write_text(block.text, encoding="utf-8")
    argv = ["--config", "snippet.toml"]
    if not data.get("app", {}).get("command"):
        argv += ["--", "true"]
    code, out, err = invoke(commands.check, argv)
    assert code == 0, err
    resolved = json.loads(out)
    for section, table in data.items():
        if section != "plugins" and isinstance(table, dict):
            assert set(table) <= set(resolved[section]), section
    assert set(data.get("plugins", {})) <= set(resolved["plugins"])


# -- commands --------------------------------------------------------------------------------------


COMMANDS = all_commands()


def _missing_files(words: list[str]) -> list[str]:
    """Files the command names that are not there to read."""
    missing = []
    for i, word in enumerate(words[:-1]):
        if word in _FILE_OPTIONS and not Path(words[i + 1]).exists():
            missing.append(words[i + 1])
    return missing


def _parse_only(subcommand: str, argv: list[str]) -> None:
    """Parse the arguments as the subcommand does, without reading any file (SystemExit 2 on a
    usage error)."""
    if subcommand == "check":
        own = argparse.ArgumentParser(prog="sidecar-run check", add_help=False)
        own.add_argument("--manifest", action="append", default=[])
        own.add_argument("--unit", action="append", default=[])
        own.add_argument("--strict", action="store_true")
    elif subcommand == "systemd-unit":
        own = commands._unit_parser()
    else:
        own = argparse.ArgumentParser(add_help=False)
    _, rest, command = commands._own_options(own, argv)
    prog = "sidecar-run" if subcommand == "run" else f"sidecar-run {subcommand}"
    parse_run_args(commands._with_command(rest, command), prog=prog)


def exercise(command: Command, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run one documented command as the module docstring says; AssertionError or SystemExit
    when it does not do what the page shows."""
    argv = command.words[1:]
    subcommand = argv[0] if argv and argv[0] in SUBCOMMANDS else "run"
    if subcommand != "run":
        argv = argv[1:]
    if _missing_files(argv):
        _parse_only(subcommand, argv)
        return
    if subcommand == "status":
        code, _, err = invoke(commands.status, [*argv, "--timeout", "0.2"])
        assert code in (0, 1), err  # 1: nothing listens there; 2 would be a usage error
        return
    if subcommand == "demo":
        for name in ("LEGACY_APP_PORT", "LEGACY_APP_EXIT_AFTER"):
            monkeypatch.setenv(name, "")
        monkeypatch.setattr(commands, "run", commands.check)
        code, _, err = invoke(commands.demo, argv)
        assert code == 0, err
        return
    function = {
        "run": commands.check,
        "check": commands.check,
        "systemd-unit": commands.systemd_unit,
        "schema": commands.schema,
        "plugins": commands.plugins,
    }[subcommand]
    code, _, err = invoke(function, argv)
    if command.status == 2:
        shown = [line for line in command.output if line.startswith("sidecar-run")]
        got = [line.replace("sidecar-run check:", "sidecar-run:") for line in err.splitlines()]
        assert code == 2
        assert shown
        assert shown[-1] in got, err
        return
    warnings = [line for line in command.output if "warning:" in line]
    assert code == (1 if warnings and "--strict" in argv else 0), err
    for line in warnings:
        assert line in err.splitlines()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"{c.page}:{c.line}")
def test_command_runs_as_documented(
    command: Command, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command's arguments are accepted, and what it does (with ``check`` for a run)
    succeeds, or fails with the usage error the page shows."""
    provide(command.page, workdir)
    exercise(command, monkeypatch)


def _console(text: str) -> Command:
    (command,) = shell_commands(Block("test.md", 1, "console", text, None))
    return command


@pytest.mark.parametrize(
    ("text", "raised"),
    [
        ("$ sidecar-run --restart sometimes -- true\n", AssertionError),
        ("$ sidecar-run --config missing.toml --bogus -- true\n", SystemExit),
        ("$ sudo sidecar-run systemd-unit --config /no/such.toml --nme x -- true\n", SystemExit),
        (
            "$ sidecar-run --admin off -- true; echo $?\nsidecar-run: error: other\n2\n",
            AssertionError,
        ),
        (
            "$ sidecar-run check --config config/minimal.toml --strict\nwarning: made up\n",
            AssertionError,
        ),
    ],
)
def test_a_wrong_snippet_fails(
    text: str, raised: type[BaseException], workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad flag or value, in a run, or parsed only; a usage error or warning the page shows
    but the command does not give: each fails the check."""
    with pytest.raises(raised):
        exercise(_console(text), monkeypatch)


def test_toml_block_with_a_wrong_key_fails(workdir: Path) -> None:
    """A config snippet with a misspelt key is refused by the same check."""
    (workdir / "snippet.toml").write_text("[restart]\npolicy = 'allways'\n", encoding="utf-8")
    code, _, err = invoke(commands.check, ["--config", "snippet.toml", "--", "true"])
    assert code == 2
    assert "restart.policy" in err


# -- the tutorial, followed ------------------------------------------------------------------------


def _http(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path)
        reply = conn.getresponse()
        return reply.status, reply.read().decode()
    finally:
        conn.close()


def _until(check: Callable[[], bool], what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _reload(admin: int) -> None:
    status, body = _http(admin, "/reload", "POST")
    assert status == 200, body
    assert json.loads(body)["ok"] is True, body


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_the_tutorial_works_step_by_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tutorial's config, appended block by block and reloaded after each, gives probes,
    metrics, JSON logs without probe noise, HTTPS that needs a client certificate (made by its
    openssl commands), and the shutdown order it shows."""
    page = DOCS / "tutorial" / "ten-minutes.md"
    blocks = fenced_blocks(page)
    steps = [b.text for b in blocks if b.lang == "toml"]
    (openssl,) = [b.text for b in blocks if b.lang == "sh" and "openssl" in b.text]
    (shutdown,) = [b.text for b in blocks if b.lang == "text" and "shutdown_started" in b.text]
    (tmp_path / "sidecar_runtime").symlink_to(ROOT / "sidecar_runtime")
    made = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", openssl],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    ports = {"8080": free_port(), "8443": free_port()}
    admin = free_port()

    def localized(text: str) -> str:
        for port, free in ports.items():
            text = text.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free}")
            text = text.replace(f'"{port}"', f'"{free}"')
        return text

    config = tmp_path / "tutorial" / "sidecar.toml"
    config.write_text(localized(steps[0]), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    argv = ["--config", "tutorial/sidecar.toml", "--admin", f"127.0.0.1:{admin}"]
    with running_sidecar(argv) as proc:
        _until(lambda: _http(admin, "/readyz")[0] == 200, "the app to be ready")
        for step in steps[1:]:
            with config.open("a", encoding="utf-8") as file:
                file.write("\n" + localized(step))
            _reload(admin)
        _until(
            lambda: "health/readiness-http ok" in _http(admin, "/readyz?verbose")[1],
            "the readiness probe",
        )
        assert "health/liveness-tcp ok" in _http(admin, "/livez?verbose")[1]
        tls = tmp_path / "tutorial" / "tls"
        client = ssl.create_default_context(cafile=str(tls / "ca.crt"))
        client.load_cert_chain(str(tls / "client.crt"), str(tls / "client.key"))
        proxy = ports["8443"]
        _until(lambda: _https_ok(client, proxy), "the proxy")
        anonymous = ssl.create_default_context(cafile=str(tls / "ca.crt"))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _https_ok(anonymous, proxy)
        assert _http(ports["8080"], "/health") == (200, "ok\n")  # a line the logs drop
        _until(lambda: "sidecar_logs_dropped_total{" in _http(admin, "/metrics")[1], "a drop")
        metrics = _http(admin, "/metrics")[1]
        assert 'sidecar_proxy_requests_total{code_class="2xx"' in metrics
        assert "sidecar_app_ready 1.0" in metrics
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    events = [json.loads(line)["event"] for line in err.decode().splitlines() if line[:1] == "{"]
    shown = [line.split()[0] for line in shutdown.splitlines() if line.strip()]
    position = events.index(shown[0])
    for name in shown[1:]:
        assert name in events[position + 1 :], (shown, events[position:])
        position = events.index(name, position + 1)
    records = [
        json.loads(line)
        for line in (tmp_path / "tutorial/logs/app.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert any('"GET / HTTP/1.1" 200' in r["message"] for r in records), records
    assert not any("GET /health " in r["message"] for r in records)


def _https_ok(context: ssl.SSLContext, port: int) -> bool:
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=5)
    try:
        conn.request("GET", "/")
        reply = conn.getresponse()
        return reply.status == 200 and reply.read() == b"hello from a legacy app\n"
    finally:
        conn.close()


# -- generated blocks in hand-written pages --------------------------------------------------------


def test_lifecycle_state_diagram_is_generated_from_the_state_table() -> None:
    """The lifecycle page's diagram is what docs/refgen makes from ``_state.TRANSITIONS`` now:
    every edge, with its reason, and nothing else."""
    from docs.refgen.sections import render_blocks
    from sidecar_runtime import _state

    page = DOCS / "explanation" / "lifecycle.md"
    assert render_blocks()[page] == page.read_text(encoding="utf-8")
    (diagram,) = [b.text for b in fenced_blocks(page) if b.lang == "mermaid"]
    edges = {line.strip() for line in diagram.splitlines() if ": " in line}
    assert edges == {
        f"{a.value} --> {b.value}: {why}" for (a, b), why in _state.TRANSITIONS.items()
    }


def test_a_stale_or_broken_generated_block_is_caught() -> None:
    """An outdated block body is replaced; an unknown or unclosed block is an error."""
    from docs.refgen.prose import DocsError
    from docs.refgen.sections import splice

    stale = "a\n<!-- generated: states-diagram -->\nold\n<!-- /generated -->\nb\n"
    fresh = splice(stale, "x.md")
    assert "old" not in fresh
    assert "STOPPED --> STARTING: spawned" in fresh
    assert splice(fresh, "x.md") == fresh
    with pytest.raises(DocsError, match="unknown generated block"):
        splice("<!-- generated: nope -->\n<!-- /generated -->\n", "x.md")
    with pytest.raises(DocsError, match="no '<!-- /generated -->'"):
        splice("<!-- generated: states-diagram -->\n", "x.md")
