"""The targets of ``bench/metrics.py``: the app trees, the exporters, and scraping them."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

if not __package__:  # run as a script: python bench/x.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import (
    PYTHON,
    rotated,
)

CPU_PCT_MAX = 0.1
CHILDREN = 19
TOUCH_MIB = 4
BATCH = 10
WARMUP = 50
EXPORTER = shutil.which("prometheus-process-exporter") or "/usr/bin/prometheus-process-exporter"
APP_NAME = "mbench-app"  # the comm of the default tree (process-exporter matches on it)
PSS_APP_NAME = "mbench-pss"  # the comm of the app_pss_uss variant's tree
PROMETHEUS_HEADERS = {
    "Accept": (
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
        "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    ),
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/2.53.0",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
}
SIDECAR_DEFAULT = "sidecar-run (default collectors)"
SIDECAR_PSS = "sidecar-run + app_pss_uss"
PE_DEFAULT = "process-exporter (defaults: smaps on)"
PE_NOSMAPS = "process-exporter -gather-smaps=false"
PROM_CLIENT = "prometheus_client ProcessCollector(app pid)"

APP_SOURCE = f"""\
#!{PYTHON}
import os, signal

def touch():
    buf = bytearray({TOUCH_MIB} << 20)
    for i in range(0, len(buf), 4096):
        buf[i] = 1
    return buf

for _ in range({CHILDREN}):
    if os.fork() == 0:
        keep = touch()
        while True:
            signal.pause()
keep = touch()
while True:
    try:
        os.wait()
    except ChildProcessError:
        signal.pause()
"""

EXPORTER_SOURCE = """\
import sys, threading
from prometheus_client import REGISTRY, ProcessCollector, start_http_server

port, app_pid = int(sys.argv[1]), int(sys.argv[2])
ProcessCollector(namespace="app", pid=lambda: app_pid, registry=REGISTRY)
start_http_server(port, addr="127.0.0.1")
threading.Event().wait()
"""


@dataclass
class Target:
    label: str
    argv: list[str]
    env: dict[str, str]
    port: int
    app_name: str | None = None  # set for sidecar-run: the app it supervises
    proc: subprocess.Popen[bytes] | None = None
    ps: Any = None  # psutil.Process of the server
    conn: http.client.HTTPConnection | None = None
    keepalive: list[float] = field(default_factory=list)
    fresh: list[float] = field(default_factory=list)
    conns: int = 0
    wire_bytes: int = 0
    body_bytes: int = 0
    samples: int = 0
    content_type: str = ""
    last_body: bytes = b""
    encoding: str = ""
    scrape_cpu: float = 0.0
    cpu0: float = 0.0
    cpu1: float = 0.0
    vol0: int = 0
    vol1: int = 0
    invol0: int = 0
    invol1: int = 0
    threads: int = 0
    rss: int = 0


def percentile(values: Sequence[float], pct: int) -> float:
    """``pct``-th percentile (linear interpolation between closest ranks)."""
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def scrape(target: Target, *, fresh: bool) -> float:
    """One ``GET /metrics``; its latency in seconds. Records the reply's size and type."""
    if fresh:
        conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    else:
        if target.conn is None:
            target.conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
        conn = target.conn
        if conn.sock is None:
            target.conns += 1  # request() connects (again): the server closed the last one
    began = time.perf_counter()
    conn.request("GET", "/metrics", headers=PROMETHEUS_HEADERS)
    reply = conn.getresponse()
    body = reply.read()
    took = time.perf_counter() - began
    if fresh:
        conn.close()
    if reply.status != 200:
        msg = f"{target.label}: HTTP {reply.status}"
        raise RuntimeError(msg)
    target.wire_bytes = len(body)
    target.encoding = reply.getheader("Content-Encoding") or "identity"
    target.content_type = (reply.getheader("Content-Type") or "").split(";")[0]
    if target.encoding == "gzip":
        body = gzip.decompress(body)
    target.body_bytes = len(body)
    target.last_body = body
    target.samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return took


#: The series that says how many processes of the app a target saw.
_TREE_SIZE = re.compile(
    rb"^(?:sidecar_app_tree_processes|namedprocess_namegroup_num_procs\{[^}]*\}) (\S+)$", re.M
)


def procs_seen(target: Target) -> str:
    """Processes of the app the target reported in its last reply ("1" for the main only)."""
    found = _TREE_SIZE.search(target.last_body)
    if found:
        return f"{float(found.group(1)):g}"
    return "1" if target.label == PROM_CLIENT else "?"


def app_of(server: Any, name: str) -> Any:
    """The app's main process under ``server`` (sidecar-run), or None yet."""
    with contextlib.suppress(psutil.Error):
        for child in server.children():
            if child.name() == name:
                return child
    return None


def wait_tree(target: Target, timeout: float) -> Any:
    """The app's main process once its whole tree (20 processes) is up."""
    assert target.proc is not None
    assert target.app_name is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if target.proc.poll() is not None:
            msg = f"{target.label} exited early with {target.proc.returncode}"
            raise RuntimeError(msg)
        app = app_of(target.ps, target.app_name)
        if app is not None:
            with contextlib.suppress(psutil.Error):
                if len(app.children()) >= CHILDREN:
                    return app
        time.sleep(0.05)
    msg = f"{target.label}: the app tree did not come up within {timeout:g} s"
    raise RuntimeError(msg)


def wait_serving(target: Target, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if target.proc is not None and target.proc.poll() is not None:
            msg = f"{target.label} exited early with {target.proc.returncode}"
            raise RuntimeError(msg)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=5)
            conn.request("GET", "/metrics")
            status = conn.getresponse().status
            conn.close()
        except OSError:
            status = 0
        if status == 200:
            return
        if time.monotonic() > deadline:
            msg = f"{target.label}: /metrics not served within {timeout:g} s (last {status})"
            raise RuntimeError(msg)
        time.sleep(0.1)


def start(target: Target) -> None:
    target.proc = subprocess.Popen(
        target.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=target.env,
    )
    target.ps = psutil.Process(target.proc.pid)


def stop(targets: Sequence[Target], app_groups: Sequence[int]) -> None:
    """Stop every server, then kill what is left of each app's process group."""
    for t in targets:
        if t.conn is not None:
            t.conn.close()
        if t.proc is not None and t.proc.poll() is None:
            t.proc.terminate()
    for t in targets:
        if t.proc is None:
            continue
        try:
            t.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            t.proc.kill()
            t.proc.wait()
    for pgid in app_groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    for pgid in app_groups:  # until the killed processes are gone (reaped by init)
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)


def run_phase(targets: Sequence[Target], per_target: int, *, fresh: bool, keep: bool) -> None:
    """``per_target`` scrapes of each target, in batches of :data:`BATCH`, round-robin."""
    rounds = -(-per_target // BATCH)
    for round_no in range(rounds):
        count = min(BATCH, per_target - round_no * BATCH)
        for t in rotated(targets, round_no):
            for _ in range(count):
                took = scrape(t, fresh=fresh)
                if keep:
                    (t.fresh if fresh else t.keepalive).append(took)
