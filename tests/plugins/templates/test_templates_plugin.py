"""The templates plugin on a real core (``plugin_harness``): rendered before the app starts,
re-rendered on a ConfigMap symlink swap with SIGHUP to a real app, unchanged output doing
nothing, grouped actions, exec and restart hooks, and runtime failures that keep the old file."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from sidecar_plugins.templates import TemplatesPlugin

from sidecar_runtime import PluginError
from sidecar_runtime.testing import PluginHarness, plugin_harness
from tests.conftest import python_app
from tests.plugins.templates.conftest import LogEvents
from tests.plugins.templates.helpers import (
    HUP_APP,
    ConfigMapVolume,
    read_records,
    sample,
    wait_for,
)

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def harness(
    config: dict[str, Any], app: list[str] | None = None
) -> AsyncIterator[PluginHarness]:
    async with plugin_harness(TemplatesPlugin, config, name="templates", app=app) as h:
        yield h


def template(source: Path, target: Path, **extra: Any) -> dict[str, Any]:
    return {"source": str(source), "target": str(target), **extra}


def renders(h: PluginHarness, name: str, result: str) -> float:
    return sample(h.metrics, "sidecar_templates_renders_total", template=name, result=result) or 0


def events(logs: LogEvents, name: str) -> list[dict[str, Any]]:
    return [e for e in logs() if e["event"] == name]


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_configmap_swap_rerenders_and_the_app_reads_the_new_file_on_hup(
    tmp_path: Path,
) -> None:
    """Rendered before the app starts; a kubelet-style ..data swap rewrites the file and the
    app, signalled with SIGHUP, reads the new content."""
    volume = ConfigMapVolume(tmp_path / "cm", {"greeting": "hello\n"})
    source = tmp_path / "app.tmpl"
    source.write_text(f"greeting={{{{ file('{volume.path('greeting')}') | trim }}}}\n")
    target, records = tmp_path / "etc" / "app.ini", tmp_path / "records"
    config = {
        "templates": [template(source, target, name="app", on_change={"signal": "HUP"})],
        "debounce": "20ms",
    }
    async with harness(config, [*HUP_APP, str(target), str(records)]) as h:
        assert target.read_text() == "greeting=hello\n"  # before the app exists
        await h.start_app()
        await wait_for(lambda: read_records(records), what="the app's first read")
        volume.update({"greeting": "bonjour\n"})
        hups = await wait_for(
            lambda: [r for r in read_records(records) if r["event"] == "hup"], what="SIGHUP"
        )
        assert hups[0]["content"] == "greeting=bonjour\n"
        assert read_records(records)[0]["content"] == "greeting=hello\n"
        assert renders(h, "app", "changed") == 2
        action = {"template": "app", "action": "signal", "result": "success"}
        assert sample(h.metrics, "sidecar_templates_actions_total", **action) == 1
        last = sample(h.metrics, "sidecar_templates_last_success_timestamp_seconds", template="app")
        assert last is not None
        assert last > 0


async def test_unchanged_output_writes_nothing_and_signals_nobody(tmp_path: Path) -> None:
    """A source change that does not change the output keeps the file (same inode) and sends
    no signal; the next real change sends exactly one."""
    volume = ConfigMapVolume(tmp_path / "cm", {"used": "1", "unused": "a"})
    source = tmp_path / "t.tmpl"
    source.write_text(f"{{{{ files('{volume.root}').used }}}}\n")
    target, records = tmp_path / "out", tmp_path / "records"
    config = {
        "templates": [template(source, target, name="t", on_change={"signal": "HUP"})],
        "debounce": "20ms",
    }
    async with harness(config, [*HUP_APP, str(target), str(records)]) as h:
        await h.start_app()
        await wait_for(lambda: read_records(records), what="the app's first read")
        inode = target.stat().st_ino
        volume.update({"used": "1", "unused": "b"})
        await wait_for(lambda: renders(h, "t", "unchanged") == 1, what="an unchanged render")
        assert target.stat().st_ino == inode
        volume.update({"used": "2", "unused": "b"})
        await wait_for(lambda: renders(h, "t", "changed") == 2, what="a changed render")
        hups = await wait_for(lambda: [r for r in read_records(records) if r["event"] == "hup"])
        assert [r["content"] for r in hups] == ["2\n"]
        assert os.listdir(tmp_path / "cm")
        assert sorted(os.listdir(tmp_path)) == [
            "cm",
            "out",
            "records",
            "t.tmpl",
        ]


async def test_templates_changed_together_share_one_signal(tmp_path: Path) -> None:
    """Two templates with the same action, changed in one debounce window: one SIGHUP."""
    volume = ConfigMapVolume(tmp_path / "cm", {"v": "1"})
    one, two = tmp_path / "one.tmpl", tmp_path / "two.tmpl"
    one.write_text(f"one={{{{ file('{volume.path('v')}') }}}}\n")
    two.write_text(
        f"two={{{{ file('{volume.path('v')}') }}}} {{{{ files('{volume.root}') | length }}}}\n"
    )
    out1, out2, records = tmp_path / "out1", tmp_path / "out2", tmp_path / "records"
    hup = {"signal": "HUP"}
    config = {
        "templates": [
            template(one, out1, name="one", on_change=hup),
            template(two, out2, name="two", on_change=hup),
        ],
        "debounce": "100ms",
    }
    async with harness(config, [*HUP_APP, str(out2), str(records)]) as h:
        await h.start_app()
        await wait_for(lambda: read_records(records), what="the app's first read")
        volume.update({"v": "2"})
        await wait_for(lambda: renders(h, "one", "changed") == renders(h, "two", "changed") == 2)
        two.write_text("two=last\n")  # only `two` changes now: the second and last SIGHUP
        await wait_for(lambda: renders(h, "two", "changed") == 3)
        hups = await wait_for(
            lambda: [r for r in read_records(records) if r["event"] == "hup"][1:] or None
        )
        all_hups = [r["content"] for r in read_records(records) if r["event"] == "hup"]
        assert all_hups == ["two=2 1\n", "two=last\n"], hups
        for name in ("one", "two"):
            action = {"template": name, "action": "signal", "result": "success"}
            assert sample(h.metrics, "sidecar_templates_actions_total", **action) == (
                1 if name == "one" else 2
            )


async def test_runtime_failures_keep_the_old_file_and_recover(
    tmp_path: Path, log_events: LogEvents
) -> None:
    """A syntax error, then a missing variable: logged with file:line, counted, the old file
    untouched, no temp files, no signal; fixing the template renders again."""
    source = tmp_path / "t.tmpl"
    source.write_text("ok={{ 1 + 1 }}\n")
    target, records = tmp_path / "out" / "t.ini", tmp_path / "records"
    config = {
        "templates": [template(source, target, name="t", on_change={"signal": "HUP"})],
        "debounce": "20ms",
    }
    async with harness(config, [*HUP_APP, str(target), str(records)]) as h:
        await h.start_app()
        await wait_for(lambda: read_records(records), what="the app's first read")
        inode = target.stat().st_ino
        source.write_text("ok\n{% if %}\n")
        await wait_for(lambda: renders(h, "t", "failed") == 1, what="a failed render")
        source.write_text("ok={{ env.NO_SUCH_VARIABLE_X }}\n")
        await wait_for(lambda: renders(h, "t", "failed") == 2, what="a second failure")
        assert target.read_text() == "ok=2\n"
        assert target.stat().st_ino == inode
        assert os.listdir(target.parent) == ["t.ini"]
        source.write_text("ok=fixed\n")
        await wait_for(lambda: renders(h, "t", "changed") == 2, what="the fixed render")
        hups = await wait_for(lambda: [r for r in read_records(records) if r["event"] == "hup"])
        assert [r["content"] for r in hups] == ["ok=fixed\n"]
    failed = events(log_events, "template_render_failed")
    assert [f["reason"] for f in failed] == [
        f"{source}:2: syntax error: Expected an expression, got 'end of statement block'",
        f"{source}:1: environment variable 'NO_SUCH_VARIABLE_X' is not set "
        "(use env.NO_SUCH_VARIABLE_X | default(...))",
    ]
    assert failed[0]["template"] == "t"
    assert failed[0]["target"] == str(target)
    assert failed[0]["level"] == "error"


async def test_a_missing_file_with_a_default_is_watched_until_it_appears(tmp_path: Path) -> None:
    """``file(path, default=...)`` renders the default, and the file's creation re-renders."""
    later = tmp_path / "mount" / "token"
    source = tmp_path / "t.tmpl"
    source.write_text(f"token={{{{ file('{later}', default='none') | trim }}}}\n")
    target = tmp_path / "out"
    config = {"templates": [template(source, target)], "debounce": "20ms"}
    async with harness(config):
        assert target.read_text() == "token=none\n"
        later.parent.mkdir()
        later.write_text("s3cret\n")
        await wait_for(lambda: target.read_text() == "token=s3cret\n", what="the new token")


async def test_polling_sees_a_configmap_swap(tmp_path: Path, log_events: LogEvents) -> None:
    """With ``force_polling`` the watcher polls, and still follows the ..data swap."""
    volume = ConfigMapVolume(tmp_path / "cm", {"k": "1"})
    source = tmp_path / "t.tmpl"
    source.write_text(f"{{{{ file('{volume.path('k')}') }}}}")
    target = tmp_path / "out"
    config = {
        "templates": [template(source, target)],
        "debounce": "10ms",
        "force_polling": True,
        "poll_interval": "30ms",
    }
    async with harness(config) as h:
        volume.update({"k": "2"})
        await wait_for(lambda: target.read_text() == "2", what="the polled update")
        volume.update({"k": "3"})
        await wait_for(lambda: target.read_text() == "3", what="a second polled update")
        assert h.info["polling"] is True
        assert h.info["templates"] == [str(target)]
    assert all(e["polling"] for e in events(log_events, "template_watch_started"))


async def test_exec_hooks_run_once_per_window_and_report_failures(
    tmp_path: Path, log_events: LogEvents
) -> None:
    """An exec action shared by two changed templates runs once, through the core; a failing
    hook is logged with its exit status and output, and one that hangs is killed."""
    volume = ConfigMapVolume(tmp_path / "cm", {"v": "1"})
    marker = tmp_path / "hook-runs"
    hook = [
        *python_app("import sys\nopen(sys.argv[1], 'a').write('ran\\n')\nprint('reloaded')"),
        str(marker),
    ]
    failing = python_app("import sys\nprint('config test failed: line 3')\nsys.exit(3)")
    hanging = python_app("import time\ntime.sleep(60)")
    sources = []
    for name in ("a", "b", "c", "d"):
        path = tmp_path / f"{name}.tmpl"
        path.write_text(f"{name}={{{{ file('{volume.path('v')}') }}}}\n")
        sources.append(path)
    config = {
        "templates": [
            template(sources[0], tmp_path / "a.out", name="a", on_change={"exec": hook}),
            template(sources[1], tmp_path / "b.out", name="b", on_change={"exec": hook}),
            template(sources[2], tmp_path / "c.out", name="c", on_change={"exec": failing}),
            template(
                sources[3],
                tmp_path / "d.out",
                name="d",
                on_change={"exec": hanging, "timeout": "300ms"},
            ),
        ],
        "debounce": "50ms",
    }
    async with harness(config) as h:
        assert not marker.exists()  # the first render runs no action
        volume.update({"v": "2"})
        await wait_for(
            lambda: sample(
                h.metrics,
                "sidecar_templates_actions_total",
                template="d",
                action="exec",
                result="failure",
            ),
            what="the hanging hook's timeout",
        )
        assert marker.read_text() == "ran\n"
    succeeded = events(log_events, "template_action_succeeded")
    assert [(e["templates"], e["detail"]) for e in succeeded] == [(["a", "b"], "exit 0: reloaded")]
    failures = {
        tuple(e["templates"]): e["reason"] for e in events(log_events, "template_action_failed")
    }
    assert failures[("c",)] == "exit 3: config test failed: line 3"
    assert failures[("d",)] == "timed out after 0.3s; its process group was killed"


async def test_restart_action_restarts_the_app_which_reads_the_new_file(tmp_path: Path) -> None:
    """``restart = true``: the core stops the app gracefully and starts a new process."""
    source = tmp_path / "t.tmpl"
    source.write_text("v=1\n")
    target, records = tmp_path / "out", tmp_path / "records"
    config = {
        "templates": [template(source, target, name="t", on_change={"restart": True})],
        "debounce": "20ms",
    }
    async with harness(config, [*HUP_APP, str(target), str(records)]) as h:
        first = await h.start_app()
        await wait_for(lambda: read_records(records), what="the app's first read")
        source.write_text("v=2\n")
        starts = await wait_for(
            lambda: [r for r in read_records(records) if r["event"] == "start"][1:] or None,
            what="a second start",
        )
        assert starts[0]["content"] == "v=2\n"
        assert starts[0]["pid"] != first
        assert h.app.statistics().restarts == 1


async def test_a_failing_first_render_fails_the_start(tmp_path: Path) -> None:
    """Before ``started()``: the plugin's start fails with the template and the reason."""
    good, bad = tmp_path / "good.tmpl", tmp_path / "bad.tmpl"
    good.write_text("fine\n")
    bad.write_text("a\nb={{ env.NO_SUCH_VARIABLE_X }}\n")
    config = {
        "templates": [
            template(good, tmp_path / "good.out"),
            template(bad, tmp_path / "bad.out", name="bad"),
        ]
    }
    with pytest.raises(PluginError) as info:
        async with harness(config):
            pass
    assert str(info.value) == (
        f"plugin 'templates' failed to start: template 'bad' ({bad} -> {tmp_path}/bad.out): "
        f"{bad}:2: environment variable 'NO_SUCH_VARIABLE_X' is not set "
        "(use env.NO_SUCH_VARIABLE_X | default(...))"
    )
    assert not (tmp_path / "bad.out").exists()


async def test_signal_to_an_app_that_is_not_running_is_skipped(tmp_path: Path) -> None:
    """A change while the app is not running is written; the signal is skipped (counted)."""
    source = tmp_path / "t.tmpl"
    source.write_text("1")
    config = {
        "templates": [template(source, tmp_path / "out", name="t", on_change={"signal": "HUP"})],
        "debounce": "10ms",
    }
    async with harness(config) as h:
        source.write_text("2")
        await wait_for(
            lambda: sample(
                h.metrics,
                "sidecar_templates_actions_total",
                template="t",
                action="signal",
                result="skipped",
            ),
            what="a skipped signal",
        )
        assert (tmp_path / "out").read_text() == "2"
        await anyio.lowlevel.checkpoint()
