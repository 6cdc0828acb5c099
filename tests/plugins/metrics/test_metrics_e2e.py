"""The metrics plugin through the real command, and scraped by a real Prometheus server."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import child_env, free_port, python_app, run_sidecar
from tests.conftest import running_sidecar as sidecar
from tests.plugins.metrics.metrics_fakes import OM_ACCEPT, OM_CT, samples, value

#: A fake app's own /metrics, served from a thread: ``PORT`` and ``DELAY`` are filled in.
APP_SERVER = """
import http.server, threading, time

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (b"# HELP http_requests_total Requests.\\n# TYPE http_requests_total counter\\n"
                b"http_requests_total{code=\\"200\\"} 7\\n")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

def serve():
    time.sleep(DELAY)
    http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()

threading.Thread(target=serve, daemon=True).start()
"""


def get(url: str, accept: str | None = None) -> tuple[int, str, bytes]:
    """GET ``url``: status, content type and body (4xx/5xx included)."""
    assert url.startswith("http://127.0.0.1:"), url
    headers = {"Accept": accept} if accept else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback http only
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:  # noqa: S310 - as above
            return reply.status, reply.headers.get("Content-Type", ""), reply.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def wait_for(
    url: str, proc: subprocess.Popen[bytes], done: Callable[[bytes], bool], timeout: float = 15
) -> bytes:
    """GET ``url`` every 100 ms until ``done(body)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "sidecar-run exited early"
        try:
            status, _, body = get(url)
            if status == 200 and done(body):
                return body
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} never got there"
        time.sleep(0.1)


def port_free(port: int) -> bool:
    """Whether 127.0.0.1:``port`` can be bound now."""
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.slow
def test_no_file_serves_metrics_with_adopted_orphans() -> None:
    """With no file /metrics is on 127.0.0.1:9901 and counts a daemon the app double-forked."""
    app = python_app(
        """
        import os, time
        pid = os.fork()
        if pid == 0:
            if os.fork() == 0:
                time.sleep(60)
                os._exit(0)
            os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(60)
        """
    )
    port, flags = 9901, []
    if not port_free(port):  # a developer's sidecar-run, or another test: keep the default config
        port = free_port()
        flags = ["--admin", f"127.0.0.1:{port}"]
    url = f"http://127.0.0.1:{port}/metrics"
    with sidecar([*flags, "--", *app]) as proc:
        body = wait_for(url, proc, lambda b: value(b, "sidecar_app_tree_processes") == 2)
        assert value(body, "sidecar_plugin_state", plugin="metrics", state="running") == 1
        status, content_type, om = get(url, OM_ACCEPT)
        assert status == 200
        assert content_type == OM_CT
        assert value(om, "sidecar_app_tree_processes", OM_CT) == 2


@pytest.mark.slow
def test_app_metrics_flag_merges_and_logs_failure_once(tmp_path: Path) -> None:
    """``--app-metrics URL`` merges the app's series; failing, then recovering, logs once each."""
    admin, app_port = free_port(), free_port()
    app = python_app(
        APP_SERVER.replace("PORT", str(app_port)).replace("DELAY", "1.0") + "time.sleep(60)"
    )
    log = tmp_path / "log.jsonl"
    args = [
        "--admin",
        f"127.0.0.1:{admin}",
        "--app-metrics",
        f"http://127.0.0.1:{app_port}/metrics",
        "--log-level",
        "info",
        "--log-file",
        str(log),
        "--",
        *app,
    ]
    url = f"http://127.0.0.1:{admin}/metrics"
    with sidecar(args) as proc:
        first = wait_for(url, proc, lambda b: "sidecar_app_metrics_up" in samples(b))
        assert value(first, "sidecar_app_metrics_up", source="app") == 0
        for _ in range(3):
            get(url)
        body = wait_for(url, proc, lambda b: value(b, "sidecar_app_metrics_up", source="app") == 1)
        assert value(body, "app_http_requests_total", code="200") == 7
        failures = value(body, "sidecar_app_metrics_scrape_failures_total", reason="connection")
        assert failures >= 4
    events = [json.loads(line) for line in log.read_text().splitlines()]
    failed = [e for e in events if e["event"] == "app_metrics_scrape_failed"]
    assert len(failed) == 1, failed
    assert failed[0]["reason"] == "connection"
    assert failed[0]["plugin"] == "metrics"
    assert len([e for e in events if e["event"] == "app_metrics_scrape_recovered"]) == 1


@pytest.mark.slow
def test_own_listener_from_the_environment() -> None:
    """``SIDECAR_PLUGINS__METRICS__LISTEN`` moves /metrics off the admin listener."""
    admin, own = free_port(), free_port()
    env = child_env(SIDECAR_PLUGINS__METRICS__LISTEN=f"127.0.0.1:{own}")
    app = python_app("import time\ntime.sleep(60)")
    with sidecar(["--admin", f"127.0.0.1:{admin}", "--", *app], env=env) as proc:
        body = wait_for(f"http://127.0.0.1:{own}/metrics", proc, lambda b: b"sidecar_app_up" in b)
        assert value(body, "sidecar_app_starts_total") == 1
        assert get(f"http://127.0.0.1:{admin}/metrics")[0] == 404
        status = json.loads(get(f"http://127.0.0.1:{admin}/status")[2])
        assert status["plugins"]["metrics"]["info"] == {
            "listen": f"127.0.0.1:{own}",
            "path": "/metrics",
        }


def test_bad_metrics_config_stops_before_the_app() -> None:
    """A bad key is exit 2 with one line naming it; the app never runs."""
    env = child_env(SIDECAR_PLUGINS__METRICS__CONST_LABELS='{ "pod-name" = "x" }')
    result = run_sidecar(["--admin", "off", "--", "sh", "-c", "echo ran"], env=env, timeout=20)
    assert result.returncode == 2
    assert result.stdout == b""
    line = result.stderr.decode().strip()
    assert "plugins.metrics" in line
    assert "'pod-name' is not a label name" in line
    assert result.stderr.decode().count("\n") == 1


# -- a real Prometheus server ----------------------------------------------------------------


@contextmanager
def prometheus(tmp_path: Path, target: str) -> Iterator[str]:
    """Debian's Prometheus scraping ``target`` every second; yield its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian package 'prometheus')")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: sidecar\n    static_configs:\n"
        f"      - targets: ['{target}']\n",
        encoding="utf-8",
    )
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with (tmp_path / "prometheus.log").open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def query(base: str, promql: str) -> list[dict[str, Any]]:
    """Prometheus's instant query API: the result vector (empty while it has no data)."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        status, _, body = get(url)
    except OSError:
        return []
    if status != 200:
        return []
    data = json.loads(body)
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


def wait_query(base: str, promql: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Poll a query until it returns something."""
    deadline = time.monotonic() + timeout
    while True:
        result = query(base, promql)
        if result:
            return result
        assert time.monotonic() < deadline, f"Prometheus never answered {promql!r}"
        time.sleep(0.25)


@pytest.mark.slow
def test_prometheus_scrapes_app_memory_and_restarts(tmp_path: Path) -> None:
    """A real Prometheus scrapes sidecar-run and stores the app's memory, restarts, own series."""
    admin, app_port = free_port(), free_port()
    app = python_app(
        APP_SERVER.replace("PORT", str(app_port)).replace("DELAY", "0")
        + "block = bytearray(16 << 20)\n"
        + "for i in range(0, len(block), 4096):\n    block[i] = 1\n"
        + "time.sleep(1.2)\nraise SystemExit(3)\n"
    )
    args = [
        "--admin",
        f"127.0.0.1:{admin}",
        "--restart",
        "always",
        "--restart-delay",
        "100ms",
        "--start-seconds",
        "300ms",
        "--max-restarts",
        "unlimited",
        "--app-metrics",
        f"http://127.0.0.1:{app_port}/metrics",
        "--",
        *app,
    ]
    with sidecar(args) as proc, prometheus(tmp_path, f"127.0.0.1:{admin}") as base:
        wait_query(base, 'up{job="sidecar"} == 1')
        restarts = wait_query(base, "sidecar_app_restarts_total >= 1")
        assert restarts[0]["metric"]["job"] == "sidecar"
        memory = wait_query(
            base, "max_over_time(sidecar_app_tree_resident_memory_bytes[1m]) > 16e6"
        )
        assert float(memory[0]["value"][1]) > 16 * (1 << 20)
        assert wait_query(base, 'sidecar_app_exits_total{code="3"} >= 1')
        assert wait_query(base, 'app_http_requests_total{code="200"} == 7')
        targets = json.loads(get(f"{base}/api/v1/targets")[2])["data"]["activeTargets"]
        assert [(t["health"], t["lastError"]) for t in targets] == [("up", "")]
        assert proc.poll() is None
