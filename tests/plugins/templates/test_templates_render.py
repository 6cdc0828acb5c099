"""Rendering (Jinja2, strict and sandboxed, with env/file/files/json/yaml), what a render
records for the watcher, and atomic writes of the target. Real files, no event loop."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from sidecar_plugins.templates._render import RenderError, check_syntax, render
from sidecar_plugins.templates._target import Target, WriteError, ownership
from sidecar_plugins.templates._watch import link_chain, plan_sources

from tests.plugins.templates.helpers import ConfigMapVolume


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def fails(source: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(RenderError) as info:
        render(source, {}, environ or {})
    return str(info.value)


def test_env_with_and_without_default(tmp_path: Path) -> None:
    """A missing variable is an error naming it and the line; a default makes it optional."""
    source = write(
        tmp_path / "a.tmpl",
        'port={{ env.PORT | default("8080") }}\nhost={{ env["HOST"] }}\n'
        "{% if env.DEBUG is defined %}debug{% endif %}\n",
    )
    assert render(source, {}, {"HOST": "db"}).text == "port=8080\nhost=db\n"
    assert render(source, {}, {"HOST": "db", "PORT": "1", "DEBUG": ""}).text == (
        "port=1\nhost=db\ndebug"
    )
    assert fails(source) == (
        f"{source}:2: environment variable 'HOST' is not set (use env.HOST | default(...))"
    )


def test_files_configmap_dir_json_yaml_and_vars(tmp_path: Path) -> None:
    """file(), files() (without ..data and dot entries), json(), yaml() and vars all work."""
    volume = ConfigMapVolume(tmp_path / "cm", {"b": "2\n", "a": "1\n"})
    write(tmp_path / "d.json", '{"hosts": ["x", "y"]}')
    write(tmp_path / "d.yaml", "level: debug\n")
    source = write(
        tmp_path / "t.tmpl",
        "{% for k, v in files(cm).items() %}{{ k }}={{ v | trim }}\n{% endfor %}"
        "{{ file(cm ~ '/a') | trim }} {{ json(j).hosts | join(',') }} {{ yaml(y).level }}"
        " {{ region }} {{ file('/nonexistent', default='none') }}\n",
    )
    text = render(
        source,
        {
            "cm": str(volume.root),
            "j": str(tmp_path / "d.json"),
            "y": str(tmp_path / "d.yaml"),
            "region": "eu",
        },
        {},
    ).text
    assert text == "a=1\nb=2\n1 x,y debug eu none\n"


def test_missing_and_bad_sources_are_one_line_errors_with_the_line(tmp_path: Path) -> None:
    """Missing files, bad JSON, syntax errors and sandbox escapes name the file and line."""
    missing = write(tmp_path / "m.tmpl", "a\n{{ file('/nonexistent/x') }}\n")
    assert fails(missing) == (
        f"{missing}:2: file('/nonexistent/x'): no such file (give default= to allow that)"
    )
    write(tmp_path / "bad.json", "{nope")
    bad_json = write(tmp_path / "j.tmpl", "{{ json('" + str(tmp_path / "bad.json") + "') }}")
    assert "j.tmpl:1: json(" in fails(bad_json)
    assert "invalid JSON" in fails(bad_json)
    syntax = write(tmp_path / "s.tmpl", "ok\n\n{% for x in %}\n")
    assert fails(syntax).startswith(f"{syntax}:3: syntax error: ")
    assert check_syntax(syntax) == fails(syntax)
    escape = write(tmp_path / "e.tmpl", "{{ ''.__class__.__mro__ }}")
    assert "e.tmpl:1: access to attribute '__class__' of 'str' object is unsafe" in fails(escape)
    include = write(tmp_path / "i.tmpl", "x\n{% include 'parts/missing.tmpl' %}\n")
    assert "i.tmpl:2: template 'parts/missing.tmpl': no such file" in fails(include)
    binary = tmp_path / "bin"
    binary.write_bytes(b"\xff\xfe")
    undecodable = write(tmp_path / "b.tmpl", "{{ file('" + str(binary) + "') }}")
    assert "not UTF-8 text (byte 0xff at offset 0)" in fails(undecodable)


def test_output_keeps_the_trailing_newline_and_trims_block_lines(tmp_path: Path) -> None:
    """A config file renders as written: blocks leave no blank lines, the last newline stays."""
    source = write(tmp_path / "t.tmpl", "[s]\n{% for i in [1, 2] %}\nk{{ i }}=<&>\n{% endfor %}\n")
    assert render(source, {}, {}).text == "[s]\nk1=<&>\nk2=<&>\n"


def test_render_records_what_it_read_even_when_it_fails(tmp_path: Path) -> None:
    """The template, includes, files and dirs read are recorded, missing ones too."""
    write(tmp_path / "parts" / "p.tmpl", "{{ file(f) }}")
    write(tmp_path / "f", "x")
    source = write(
        tmp_path / "t.tmpl", "{% include 'parts/p.tmpl' %}{{ files(d, default={}) }}{{ env.X }}"
    )
    with pytest.raises(RenderError) as info:
        render(source, {"f": str(tmp_path / "f"), "d": str(tmp_path / "nodir")}, {})
    sources = info.value.sources
    assert set(sources.files) == {source, str(tmp_path / "parts" / "p.tmpl"), str(tmp_path / "f")}
    assert set(sources.dirs) == {str(tmp_path / "nodir")}
    assert not sources.changed()
    (tmp_path / "nodir").mkdir()
    assert sources.changed()


def test_configmap_swap_is_planned_through_its_symlinks(tmp_path: Path) -> None:
    """A key resolves key -> ..data/key -> ..<stamp>/key; the plan watches the mount dir and
    matches the ..data swap; after the swap the chain ends in the new directory."""
    volume = ConfigMapVolume(tmp_path / "cm", {"key": "v1"})
    root = str(volume.root)
    links, final = link_chain(volume.path("key"))
    stamp = os.readlink(volume.root / "..data")
    assert links == [f"{root}/key", f"{root}/..data"]
    assert final == f"{root}/{stamp}/key"
    plan = plan_sources([volume.path("key")], [])
    assert root in plan.dirs
    assert f"{root}/{stamp}" in plan.dirs
    assert plan.matches(f"{root}/..data")
    assert plan.matches(f"{root}/key")
    assert not plan.matches(f"{root}/other")
    assert not plan.matches(f"{root}/..data_tmp")
    volume.update({"key": "v2"})
    _, after = link_chain(volume.path("key"))
    assert after != final
    assert Path(after).read_text() == "v2"


def test_missing_sources_are_watched_through_an_existing_ancestor(tmp_path: Path) -> None:
    """A file that does not exist yet is watched for creation, as are directories to list."""
    plan = plan_sources([str(tmp_path / "later" / "deeper" / "f")], [str(tmp_path / "cm")])
    assert plan.dirs == {str(tmp_path)}
    assert plan.matches(str(tmp_path / "later"))
    assert plan.matches(str(tmp_path / "cm"))
    (tmp_path / "cm").mkdir()
    plan = plan_sources([], [str(tmp_path / "cm")])
    assert str(tmp_path / "cm") in plan.dirs
    assert plan.matches(str(tmp_path / "cm" / "new-key"))


def test_atomic_write_mode_new_inode_and_no_temp_files(tmp_path: Path) -> None:
    """Each write is a new inode renamed into place with the mode; nothing else is left."""
    path = tmp_path / "etc" / "app.ini"
    target = Target(str(path), mode=0o640, uid=None, gid=None)
    target.write(b"one\n")
    first = path.stat()
    target.write(b"two\n")
    second = path.stat()
    assert path.read_bytes() == b"two\n"
    assert target.read() == b"two\n"
    assert stat.S_IMODE(second.st_mode) == 0o640
    assert first.st_ino != second.st_ino
    assert os.listdir(path.parent) == ["app.ini"]


def test_a_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    """While a file is rewritten 60 times, a reader only ever reads one whole version."""
    path = tmp_path / "big.conf"
    versions = [bytes([65 + i]) * 200_000 for i in range(2)]
    target = Target(str(path), mode=None, uid=None, gid=None)
    target.write(versions[0])
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.add(path.read_bytes())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(60):
            target.write(versions[i % 2])
    finally:
        stop.set()
        thread.join(10)
    assert seen
    assert seen <= set(versions)
    assert os.listdir(tmp_path) == ["big.conf"]


def test_failed_writes_leave_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    """A directory in the way or an unusable parent is a one-line error; nothing changes."""
    blocked = tmp_path / "dir"
    (blocked / "inner").mkdir(parents=True)
    with pytest.raises(WriteError, match=f"cannot write {blocked}: it is a directory"):
        Target(str(blocked), mode=None, uid=None, gid=None).write(b"x")
    parent_is_file = tmp_path / "file"
    parent_is_file.write_text("keep")
    with pytest.raises(WriteError, match=r"cannot write .*file/app\.ini: Not a directory"):
        Target(str(parent_is_file / "app.ini"), mode=None, uid=None, gid=None).write(b"x")
    assert parent_is_file.read_text() == "keep"
    assert sorted(os.listdir(tmp_path)) == ["dir", "file"]


def test_new_files_get_0644_and_existing_ones_keep_their_mode(tmp_path: Path) -> None:
    """Without ``mode`` a new target is 0644 and a rewritten one keeps its permissions."""
    path = tmp_path / "a"
    target = Target(str(path), mode=None, uid=None, gid=None)
    target.write(b"1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o600)
    target.write(b"2")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    strict = Target(str(path), mode=0o400, uid=None, gid=None)
    assert strict.fix_metadata() == ["mode 0400"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert strict.fix_metadata() == []


def test_ownership_needs_root_unless_it_is_a_no_op() -> None:
    """Unprivileged: only one's own uid and groups; root: anything, keeping the old owner."""
    assert ownership(None, None, None, euid=1000, groups={1000}) == (-1, -1)
    assert ownership(1000, 1000, None, euid=1000, groups={1000}) == (-1, 1000)
    with pytest.raises(WriteError, match="giving the file to uid 0 needs root"):
        ownership(0, None, None, euid=1000, groups={1000})
    with pytest.raises(WriteError, match="gid 5 needs root or membership"):
        ownership(None, 5, None, euid=1000, groups={1000, 20})
    assert ownership(33, None, None, euid=0, groups={0}) == (33, -1)
    old = os.stat_result((0o100644, 0, 0, 1, 7, 8, 0, 0, 0, 0))
    assert ownership(None, None, old, euid=0, groups={0}) == (7, 8)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_root_writes_with_owner_and_group(tmp_path: Path) -> None:
    """As root the target gets the configured uid and gid, and a rewrite keeps them."""
    path = tmp_path / "owned"
    Target(str(path), mode=0o640, uid=65534, gid=65534).write(b"x")
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o640)
    Target(str(path), mode=None, uid=None, gid=None).write(b"y")
    st = path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o640)
