"""``exit-codes.md``: what sidecar-run exits with, the codes read from the code that sets them."""

from __future__ import annotations

import os
import signal
import tempfile

from sidecar_runtime import _cli, _runtime
from sidecar_runtime._errors import ConfigError, PluginError, SpawnError
from sidecar_runtime._restart import ExitStatus
from sidecar_runtime._spawn import resolve_command

from .markdown import page, table
from .prose import DocsError


def _spawn_code(argv0: str) -> int:
    try:
        resolve_command(argv0, {"PATH": ""})
    except SpawnError as err:
        return err.exit_code
    msg = f"resolve_command({argv0!r}) did not fail"
    raise DocsError(msg)


def render_exit_codes() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        not_found = _spawn_code(os.path.join(tmp, "missing"))
        not_executable = _spawn_code(tmp)
    killed = ExitStatus(signal=int(signal.SIGKILL)).returncode
    termed = ExitStatus(signal=int(signal.SIGTERM)).returncode
    assert ConfigError.exit_code == _cli.EXIT_USAGE
    rows = [
        [
            "the app's code",
            "The app exited and is not started again (`EXITED`), or the restart policy gave up "
            "(`FATAL`): its last exit code. `0` after a clean stop.",
        ],
        [
            "128+N",
            f"The app died of signal N: {termed} for SIGTERM, {killed} for SIGKILL (the stop "
            f"deadline passed), 130 for SIGINT.",
        ],
        [
            str(not_executable),
            "The command was found but cannot be executed (permission, a directory).",
        ],
        [str(not_found), "The command was not found (no such file, not in `PATH`)."],
        [
            str(ConfigError.exit_code),
            "Usage or config error (bad flag, key, value, file, unknown plugin, missing command), "
            f"or a plugin failed to start (`PluginError`, exit {PluginError.exit_code}). One line "
            "on stderr; the app was not started.",
        ],
        [
            str(_runtime.EXIT_CRITICAL_PLUGIN),
            "A plugin marked `critical` failed; the runtime stopped the app gracefully "
            "(`EX_SOFTWARE`).",
        ],
        [
            "130, 143",
            "SIGINT (Ctrl-C) or SIGTERM arrived during start-up, before the app was started "
            "(128+N, as if the app had died of it).",
        ],
        [
            "1",
            "`sidecar-run status` could not reach the admin listener; `sidecar-run check "
            "--strict` printed a warning.",
        ],
    ]
    return page(
        "Exit codes",
        (
            "`sidecar-run` exits with the app's own status, as a shell would report it, so it can "
            "sit in front of any app without changing what callers see. Its own failures use "
            "codes an app rarely uses, and always print one line on stderr."
        ),
        table(["Status", "When"], rows),
        (
            "Under systemd, 143 is not a success by default: add `SuccessExitStatus=143` when "
            "the app dies of SIGTERM instead of exiting 0 (see the "
            "[systemd how-to](../how-to/systemd.md))."
        ),
    )
