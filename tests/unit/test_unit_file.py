"""``sidecar-run systemd-unit``: units that ``systemd-analyze verify`` accepts without a word,
settings derived from the config, exact quoting, ``check --unit``, and the notify protocol of
the generated unit run as systemd would run it."""

from __future__ import annotations

import contextlib
import getpass
import io
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar_runtime._cli import main
from sidecar_runtime._config import load_config
from sidecar_runtime._envcheck import parse_timespan
from sidecar_runtime._timing import recovery_seconds, stop_budget
from sidecar_runtime._unit import quote_argument
from tests.conftest import ROOT, child_env, free_port, python_app, run_sidecar

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")
SLEEPER = python_app("import time\ntime.sleep(60)")


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-process CLI sees no SIDECAR_* or systemd variables of the test runner."""
    for name in list(os.environ):
        if name.startswith("SIDECAR_") or name in ("NOTIFY_SOCKET", "WATCHDOG_USEC"):
            monkeypatch.delenv(name)


def cli(*args: str) -> Result:
    """``sidecar-run ARGS`` through the real entry point, in this process (fast)."""
    out, err = io.StringIO(), io.StringIO()
    code: object = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exit:
            code = exit.code
    assert isinstance(code, int)
    return Result(code, out.getvalue(), err.getvalue())


def generate(args: Sequence[str]) -> str:
    """``sidecar-run systemd-unit ARGS``: the unit text; fails the test on any error output."""
    result = cli("systemd-unit", *args)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    return result.stdout


def settings(unit: str) -> dict[str, list[str]]:
    """Every ``Key=value`` of a unit (all sections), in order, comments skipped."""
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def one(unit: str, key: str) -> str:
    (value,) = settings(unit)[key]
    return value


def verify(unit: str, directory: Path, name: str = "app.service") -> None:
    """``systemd-analyze verify``: any output at all (a warning) fails the test."""
    assert ANALYZE is not None
    path = directory / name
    path.write_text(unit, encoding="utf-8")
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", "--generators=no", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", ""), unit


def split_command_line(line: str) -> list[str]:
    """A command line as systemd reads it (systemd.syntax(7), systemd.service(5)).

    ``%%`` → ``%`` on the whole line; words split on whitespace, double-quoted words with C
    escapes; then ``$$`` → ``$`` in each word. Anything else this generator never writes (a
    lone ``%`` or ``$``, a single quote, an unknown escape) fails.
    """
    assert not re.search(r"%[^%]", line.replace("%%", "")), line
    line = line.replace("%%", "\0pct\0")
    words, i = [], 0
    while i < len(line):
        if line[i].isspace():
            i += 1
            continue
        word = ""
        if line[i] == '"':
            i += 1
            while line[i] != '"':
                if line[i] == "\\":
                    code = line[i + 1]
                    if code == "x":
                        word += chr(int(line[i + 2 : i + 4], 16))
                        i += 4
                        continue
                    word += {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r"}[code]
                    i += 2
                    continue
                word += line[i]
                i += 1
            i += 1
            assert i == len(line) or line[i].isspace(), line
        else:
            while i < len(line) and not line[i].isspace():
                assert line[i] not in "\"'\\", line
                word += line[i]
                i += 1
        assert not re.search(r"\$[^$]", word.replace("$$", "")), word
        words.append(word.replace("$$", "$").replace("\0pct\0", "%"))
    return words


def exec_start(unit: str) -> list[str]:
    return split_command_line(one(unit, "ExecStart"))


# -- what the unit says -----------------------------------------------------------------------


def test_defaults_make_a_notify_service_that_stops_inside_its_timeout(tmp_path: Path) -> None:
    """Type=notify, NotifyAccess=main, KillMode=mixed, TimeoutStopSec above the worst-case stop,
    the stop signal's death a success, and ExecStart with absolute paths."""
    config = tmp_path / "sidecar.toml"
    config.write_text('[stop]\ntimeout = "20s"\nsignal = "QUIT"\n', encoding="utf-8")
    unit = generate(["--config", str(config), "--", "sleep", "60"])
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") == "main"
    assert one(unit, "KillMode") == "mixed"
    assert one(unit, "KillSignal") == "SIGTERM"
    budget = stop_budget(load_config(config))
    assert budget > 20
    assert parse_timespan(one(unit, "TimeoutStopSec")) >= budget + 5
    assert one(unit, "SuccessExitStatus") == str(128 + signal.SIGQUIT)
    assert "WatchdogSec" not in settings(unit)  # no liveness probe
    argv = exec_start(unit)
    assert os.path.isabs(argv[0])
    assert os.access(argv[0], os.X_OK)
    assert argv[1:] == ["--config", str(config), "--", shutil.which("sleep"), "60"]
    assert one(unit, "SyslogIdentifier") == "sleep"
    assert "NoNewPrivileges" in settings(unit)
    assert one(unit, "ProtectHome") == "read-only"
    assert one(unit, "WantedBy") == "multi-user.target"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--restart", "never"], "on-failure"),
        (["--restart", "on-failure"], "on-abnormal"),
        (["--restart", "always"], "on-abnormal"),
    ],
)
def test_restart_settings_leave_restarts_to_one_owner(flags: list[str], expected: str) -> None:
    """systemd restarts the app only when sidecar-run's own policy is never; otherwise it
    restarts only a sidecar-run that crashed, was killed or missed the watchdog."""
    unit = generate([*flags, "--max-restarts", "4", "--restart-delay", "2s", "--", "sleep", "9"])
    assert one(unit, "Restart") == expected
    assert one(unit, "RestartSec") == "2s"
    if expected == "on-failure":
        assert one(unit, "StartLimitBurst") == "5"  # max_restarts + 1 starts
        assert int(one(unit, "StartLimitIntervalSec")) == 5 * (10 + 2)
    else:
        assert "StartLimitBurst" not in settings(unit)


def test_watchdog_covers_one_restart_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WatchdogSec= exists with a liveness probe; half of it outlasts a restart in place."""
    config = tmp_path / "sidecar.toml"
    config.write_text(
        '[restart]\ndelay = "3s"\nmax_delay = "5s"\nstart_seconds = "2s"\n'
        '[stop]\ntimeout = "12s"\n',
        encoding="utf-8",
    )
    flags = ["--config", str(config), "--probe", "liveness=tcp://127.0.0.1:9"]
    unit = generate([*flags, "--", "sleep", "9"])
    watchdog = parse_timespan(one(unit, "WatchdogSec"))
    recovery = recovery_seconds(load_config(config))
    assert recovery == 12 + 3 + 2  # graceful stop, first backoff step, start_seconds
    assert recovery < watchdog / 2 < recovery * 1.2 + 1
    crash_loop = tmp_path / "crash.toml"
    crash_loop.write_text('[restart]\nmax_delay = "40s"\n', encoding="utf-8")
    long_backoff = generate(["--config", str(crash_loop), *flags[2:], "--", "x"])
    assert parse_timespan(one(long_backoff, "WatchdogSec")) / 2 > 40  # a crash loop's backoff
    assert "WatchdogSec" not in settings(generate(["--probe", "readiness=tcp://h:9", "--", "x"]))
    monkeypatch.setenv("SIDECAR_PLUGINS__HEALTH__WATCHDOG", "false")
    here = cli("systemd-unit", "--probe", "liveness=tcp://h:9", "--", "x")
    assert "WatchdogSec" in here.stdout  # this shell's SIDECAR_* variables are not the unit's
    assert "SIDECAR_PLUGINS__HEALTH__WATCHDOG is set here but not in the unit" in here.stderr
    monkeypatch.delenv("SIDECAR_PLUGINS__HEALTH__WATCHDOG")
    config.write_text("[plugins.health]\nwatchdog = false\n", encoding="utf-8")
    assert "WatchdogSec" not in settings(generate([*flags, "--", "x"]))


def test_unit_options_and_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--uid, --gid, --working-directory, --environment-file, --reload-signal, --name and a
    unix admin socket under /run become their settings, paths made absolute."""
    config = tmp_path / "app.toml"
    config.write_text('[plugins.admin]\nlisten = "unix:/run/shop/admin.sock"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    unit = generate(
        [
            "--name", "shop.service", "--uid", "shop", "--gid", "shop",
            "--working-directory", "srv", "--environment-file=-env/shop",
            "--description", "Shop at 100%", "--config", "app.toml", "--", "./bin/shop",
        ]
    )  # fmt: skip
    assert unit.startswith("# shop.service, generated by")
    assert one(unit, "User") == "shop"
    assert one(unit, "Group") == "shop"
    assert one(unit, "WorkingDirectory") == str(tmp_path / "srv")
    assert one(unit, "EnvironmentFile") == f"-{tmp_path / 'env/shop'}"
    assert one(unit, "Description") == "Shop at 100%%"
    assert one(unit, "RuntimeDirectory") == "shop"
    assert one(unit, "ExecReload") == "/bin/kill -s SIGHUP $MAINPID"  # reloads its config
    assert exec_start(unit)[1:] == ["--config", str(config), "--", "./bin/shop"]  # in WorkingDir
    home = generate(["--working-directory", "/home/shop", "--reload-signal", "none", "--", "x"])
    assert "ProtectHome" not in settings(home)
    assert "ExecReload" not in settings(home)


@needs_analyze
def test_systemd_analyze_verify_accepts_every_variant(tmp_path: Path) -> None:
    """systemd-analyze verify prints nothing for units from the example configs and flags."""
    env_file = tmp_path / "env"
    env_file.write_text("A=1\n", encoding="utf-8")
    variants = [
        ["--", "sleep", "60"],
        ["--config", str(ROOT / "config" / "systemd.toml")],
        ["--config", str(ROOT / "config" / "kubernetes.yaml"), "--", "sleep", "1"],
        ["--restart", "never", "--max-restarts", "unlimited", "--", "sleep", "1"],
        ["--probe", "liveness=http://127.0.0.1:8080/live", "--restart", "always", "--", "x"],
        [
            "--uid", getpass.getuser(), "--working-directory", str(tmp_path),
            "--environment-file", str(env_file), "--reload-signal", "USR2",
            "--stop-signal", "INT", "--", "sleep", "60",
        ],
    ]  # fmt: skip
    for number, flags in enumerate(variants):
        verify(generate(flags), tmp_path, f"variant{number}.service")


NASTY = [
    "two words", "50%", "%n", "$HOME", "${X}", "$$", ";", "a;b", 'say "hi"', "it's", "\\",
    "tab\there", "line\nbreak", "", "ünïcode", "\\;", "trailing\\", "\x1b[0m", "#not", "-x",
]  # fmt: skip


@needs_analyze
def test_arguments_survive_systemd_quoting(tmp_path: Path) -> None:
    """Arguments with spaces, %, $, quotes, backslashes, ; and control characters come back
    exactly, and systemd-analyze verify accepts the line without a warning."""
    unit = generate(["--", "sleep", *NASTY])
    assert exec_start(unit)[-len(NASTY) :] == NASTY
    verify(unit, tmp_path)


@given(st.text(st.characters(blacklist_characters="\x00"), max_size=20))
def test_quote_argument_round_trip(arg: str) -> None:
    """Any argument without NUL is read back by systemd's rules as itself."""
    assert split_command_line(quote_argument(arg)) == [arg]


@needs_analyze
def test_executable_path_with_spaces_and_percent(tmp_path: Path) -> None:
    """The program path is quoted so that systemd finds the very file (verify checks it)."""
    odd = tmp_path / "my tools 100%; $x"
    odd.mkdir()
    program = odd / "sidecar-run"
    program.write_text("#!/bin/sh\n", encoding="utf-8")
    program.chmod(0o755)
    unit = generate(["--executable", str(program), "--", "sleep", "1"])
    assert one(unit, "ExecStart").startswith(f'"{str(program).replace("%", "%%")}" ')
    verify(unit, tmp_path)


@needs_analyze
def test_hardening_lowers_the_exposure_score(tmp_path: Path) -> None:
    """systemd-analyze security rates the unit lower than the same unit without hardening."""
    assert ANALYZE is not None
    unit = generate(["--", "sleep", "60"])
    plain = re.sub(r"\n# Hardening.*?\n\n", "\n\n", unit, flags=re.DOTALL)
    assert "NoNewPrivileges" not in plain

    def exposure(text: str, name: str) -> float:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        result = subprocess.run(
            [ANALYZE, "security", "--offline=true", "--no-pager", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
        assert match, result.stdout + result.stderr
        return float(match.group(1))

    assert exposure(unit, "hardened.service") < exposure(plain, "plain.service") - 2


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stop-timeout", "soon", "--", "x"], "invalid duration 'soon'"),
        (["--config", "missing.toml", "--", "x"], "missing.toml: config file not found"),
        (["--name", "a b", "--", "x"], "a unit name takes"),
        (["--reload-signal", "BOGUS", "--", "x"], "not a valid signal name"),
        (["--executable", "bin/sidecar-run", "--", "x"], "the path is not absolute"),
        (["--executable", '/opt/"x"/sidecar-run', "--", "x"], "contains '\"'"),
        (["--uid", "", "--", "x"], "--uid: '' is not a valid user or group name"),
        (["--gid", "web admins", "--", "x"], "--gid: 'web admins' is not a valid user"),
        ([], "no command to run"),
    ],
)
def test_bad_input_prints_no_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    """A bad config, flag or value: exit 2, one line on stderr, no unit on stdout."""
    monkeypatch.chdir(tmp_path)
    result = cli("systemd-unit", *args)
    assert (result.returncode, result.stdout) == (2, "")
    assert len(result.stderr.splitlines()) == 1
    assert message in result.stderr


def test_bad_config_file_key_prints_no_unit(tmp_path: Path) -> None:
    """An unknown key in the file is reported with its path before any unit is printed,
    by the real command too."""
    config = tmp_path / "bad.toml"
    config.write_text('[stop]\ntimeout = "10s"\ntimout = "5s"\n', encoding="utf-8")
    result = run_sidecar(["systemd-unit", "--config", str(config), "--", "x"])
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr.decode() == f"sidecar-run: {config}: stop.timout: unknown key\n"


# -- check --unit -----------------------------------------------------------------------------


def check(*args: str) -> Result:
    return cli("check", *args)


def warnings(result: Result) -> list[str]:
    prefix = "sidecar-run check: warning: "
    return [line.removeprefix(prefix) for line in result.stderr.splitlines() if prefix in line]


def test_generated_unit_passes_check(tmp_path: Path) -> None:
    """A unit generated from a config draws no warning from ``check --unit`` with it."""
    flags = ["--probe", "liveness=tcp://127.0.0.1:9", "--restart", "on-failure"]
    path = tmp_path / "app.service"
    path.write_text(generate([*flags, "--", "sleep", "1"]), encoding="utf-8")
    result = check(*flags, "--unit", str(path), "--strict")
    assert result.returncode == 0, result.stderr
    assert warnings(result) == []


def test_check_unit_names_each_conflict(tmp_path: Path) -> None:
    """Type, KillMode, a short TimeoutStopSec, a watchdog nobody feeds or one shorter than a
    restart in place, and Restart= on top of sidecar-run's own policy are each one warning;
    --strict makes them exit 1."""
    path = tmp_path / "old.service"
    path.write_text(
        "[Service]\nExecStart=/usr/bin/sidecar-run -- app\nTimeoutStopSec=1min 5s\n"
        "WatchdogSec=10\nRestart=on-failure\n",
        encoding="utf-8",
    )
    live = ["--probe", "liveness=tcp://127.0.0.1:9", "--stop-timeout", "60s"]
    result = check(*live, "--restart", "always", "--unit", str(path))
    assert result.returncode == 0
    found = warnings(result)
    assert [w.split(": ")[1].split("=")[0] for w in found] == [
        "Type",
        "KillMode",
        "TimeoutStopSec",
        "WatchdogSec",
        "Restart",
    ]
    assert "use TimeoutStopSec=77" in found[2]
    assert "shorter than a restart of the app in place (62s)" in found[3]
    assert check(*live, "--unit", str(path), "--strict").returncode == 1
    no_health = check("--no-plugins", "--unit", str(path))
    assert any("nothing sends WATCHDOG=1" in w for w in warnings(no_health))


def test_check_unit_bad_files_are_one_line(tmp_path: Path) -> None:
    """A missing or unreadable unit, or a bad time span, is exit 2 with one line."""
    bad = tmp_path / "bad.service"
    bad.write_text("[Service]\nTimeoutStopSec=soon\n", encoding="utf-8")
    for path, message in [
        (tmp_path / "none.service", "file not found"),
        (bad, "TimeoutStopSec=: invalid time span 'soon'"),
    ]:
        result = check("--unit", str(path))
        assert (result.returncode, result.stdout) == (2, "")
        assert len(result.stderr.splitlines()) == 1
        assert message in result.stderr


def test_parse_timespan() -> None:
    """systemd's time spans: bare seconds, units, compound values, infinity."""
    assert parse_timespan("90") == 90
    assert parse_timespan("1min 30s") == 90
    assert parse_timespan("1h2m") == 3720
    assert parse_timespan("250ms") == 0.25
    assert parse_timespan("infinity") == math.inf
    for bad in ("", "soon", "5 parsecs", "-1s"):
        with pytest.raises(ValueError, match="time span"):
            parse_timespan(bad)


# -- the unit's notify protocol, run as systemd runs it -----------------------------------------

#: Serves TCP on argv[1] (the liveness target) until the file argv[2] appears: then it closes
#: the port and waits to be stopped (liveness fails; the core restarts it).
_LIVE_APP = """
import os, socket, sys, time
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
end = time.monotonic() + 60  # never outlive a failed test by more than a minute
while not os.path.exists(sys.argv[2]) and time.monotonic() < end:
    time.sleep(0.02)
if os.path.exists(sys.argv[2]):
    os.unlink(sys.argv[2])
server.close()
time.sleep(max(end - time.monotonic(), 0))
"""


def datagrams(sock: socket.socket, until: str, log: list[tuple[float, str]], limit: float) -> None:
    """Append (time, line) for every line received until ``until`` arrives."""
    deadline = time.monotonic() + limit
    while True:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            data = sock.recv(4096).decode()
        except TimeoutError:
            pytest.fail(f"no {until!r} within {limit}s: {[m for _, m in log]}")
        now = time.monotonic()
        log += [(now, line) for line in data.splitlines()]
        if until in data.splitlines():
            return


def times(log: list[tuple[float, str]], line: str, since: float = 0.0) -> list[float]:
    return [t for t, m in log if m == line and t >= since]


@pytest.mark.slow
def test_generated_unit_speaks_the_notify_protocol(tmp_path: Path) -> None:
    """ExecStart= run with NOTIFY_SOCKET, WATCHDOG_USEC=WatchdogSec and WATCHDOG_PID, as systemd
    does: READY=1, STATUS=, WATCHDOG=1 at half the interval, a restart in place inside half
    of it, pings again after it, STOPPING=1 on SIGTERM, and a status systemd counts as success."""
    port, trigger = free_port(), tmp_path / "fail-liveness"
    config = tmp_path / "sidecar.toml"
    config.write_text(
        f"""
        [restart]
        policy = "always"
        delay = "100ms"
        max_delay = "200ms"
        start_seconds = "100ms"
        [stop]
        timeout = "300ms"
        [plugins.health]
        [[plugins.health.probes]]
        kind = "liveness"
        tcp = "127.0.0.1:{port}"
        period = "50ms"
        timeout = "40ms"
        failure_threshold = 2
        """.replace("\n        ", "\n"),
        encoding="utf-8",
    )
    unit = generate(
        ["--config", str(config), "--", *python_app(_LIVE_APP), str(port), str(trigger)]
    )
    assert one(unit, "Type") == "notify"
    watchdog = parse_timespan(one(unit, "WatchdogSec"))
    assert watchdog == 2.0  # twice (recovery 0.5 s + margin 0.5 s)
    path = str(tmp_path / "notify.sock")
    env = child_env(NOTIFY_SOCKET=path, WATCHDOG_USEC=str(int(watchdog * 1e6)))
    env.pop("SIDECAR_CONFIG", None)
    log: list[tuple[float, str]] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        # systemd sets WATCHDOG_PID to the main process: a shell that execs keeps its pid.
        proc = subprocess.Popen(
            ["sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh", *exec_start(unit)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            datagrams(sock, "READY=1", log, 15)
            ready = times(log, "READY=1")[0]
            assert times(log, "STATUS=app running")[0] <= ready
            # Pings come every watchdog/2; the waits allow for a loaded test machine.
            datagrams(sock, "WATCHDOG=1", log, 3 * watchdog)
            datagrams(sock, "WATCHDOG=1", log, 3 * watchdog)
            trigger.touch()
            datagrams(sock, "STATUS=app stopping", log, 10)
            datagrams(sock, "STATUS=app running", log, 10)
            stopping = times(log, "STATUS=app stopping")[0]
            running = times(log, "STATUS=app running", since=stopping)[0]
            assert running - stopping < watchdog  # systemd would not fire during the restart
            datagrams(sock, "WATCHDOG=1", log, 3 * watchdog)  # pings resume
            proc.send_signal(signal.SIGTERM)
            datagrams(sock, "STOPPING=1", log, 10)
            status = proc.wait(timeout=parse_timespan(one(unit, "TimeoutStopSec")))
        finally:
            if proc.poll() is None:  # a failure: stop it gracefully, so the app goes too
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.communicate(timeout=10)
    successes = {0, *map(int, one(unit, "SuccessExitStatus").split())}
    assert status in successes
    assert "READY=1" not in [m for t, m in log if t > ready]


# -- docs/how-to/systemd.md ---------------------------------------------------------------------

HOWTO = ROOT / "docs" / "how-to" / "systemd.md"


def fenced(markdown: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", markdown, re.MULTILINE | re.DOTALL)


def test_howto_unit_is_what_its_command_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The how-to's command, run on config/systemd.toml from that virtual environment, prints
    exactly the unit the how-to shows; and its ``check --unit`` example prints its warning."""
    text = HOWTO.read_text(encoding="utf-8")
    (command,) = [b for b in fenced(text, "sh") if "systemd-unit" in b]
    words = shlex.split(command.replace("\\\n", " ").partition("|")[0])
    args = words[words.index("systemd-unit") + 1 :]
    shown = "/etc/legacy-app/sidecar.toml"
    config = tmp_path / "sidecar.toml"
    shutil.copy(ROOT / "config" / "systemd.toml", config)
    args[args.index(shown)] = str(config)
    executable = str(Path(words[words.index("systemd-unit") - 1]))
    unit = generate([*args, "--executable", executable]).replace(str(config), shown)
    (ini,) = fenced(text, "ini")
    assert unit == ini

    (console,) = fenced(text, "console")
    prompt, *printed = console.splitlines()
    check_words = shlex.split(prompt.removeprefix("$ ").partition(">")[0])
    assert check_words[:2] == ["sidecar-run", "check"]
    monkeypatch.chdir(tmp_path)
    unit_file = check_words[check_words.index("--unit") + 1]
    Path(unit_file).write_text(unit.replace("Restart=on-abnormal", "Restart=on-failure"))
    check_args = [str(config) if w == shown else w for w in check_words[2:]]
    result = cli("check", *check_args)
    assert result.returncode == 1  # --strict
    assert result.stderr.splitlines() == printed
