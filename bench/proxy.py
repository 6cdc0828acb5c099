"""Reverse proxy throughput and latency: sidecar-run --proxy against nginx and aiohttp.

Four paths to the same upstream (nginx, one process, answering ``200 hello`` from memory, so
the proxies are the bottleneck), each measured with ``wrk -t1 -c32 --latency`` and again at one
connection (``-c1``):

- **direct**: wrk to the upstream;
- **nginx**: nginx as a reverse proxy (one process, keep-alive upstream pool);
- **aiohttp**: the minimal aiohttp proxy of ``bench/_aiohttp_proxy.py`` (one ClientSession);
- **sidecar-run**: ``sidecar-run --proxy 127.0.0.1:P=http://127.0.0.1:U -- nginx ...``, the
  upstream running as the supervised app, every default plugin on (admin, metrics, health) and
  the proxy's defaults (access log, metrics, retries, breaker, request IDs).

Figures: requests/s, p50/p99 latency, CPU per request of the proxy process (user+system from
``/proc/PID/stat`` around the run, the upstream not counted) and the p50 a proxy adds at one
connection over direct. Targets: sidecar-run ≥ 2x the aiohttp proxy's requests/s in the same
run, and ≤ 0.15 ms added p50 at one connection.

``--engine`` measures instead the proxy engine's own Python work per request, without sockets
and the event loop: the plugin runs on a real core (its defaults: access log, metrics, request
IDs), and a loop feeds a GET as wrk sends it into a client connection and an nginx response into
a pooled upstream connection, whose transports only keep what is written. CPU microseconds per
request, best of N rounds (steady, unlike wall-clock figures on a shared machine), and the
functions that take the time with ``--profile``.

Usage: .venv/bin/python bench/proxy.py [--seconds S] [--runs N] [--quick] [--engine [--profile]]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: python bench/x.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import (
    PYTHON,
    SIDECAR,
    add_common_args,
    byte_compile,
    child_env,
    free_port,
    header,
    median,
    print_table,
    report_stale,
    stop_processes,
    verdict,
)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
THROUGHPUT_TARGET = 2.0
ADDED_P50_TARGET_MS = 0.15
_TICKS = os.sysconf("SC_CLK_TCK")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}

_UPSTREAM_CONF = """
daemon off; master_process off; worker_processes 1; pid {prefix}/upstream.pid;
error_log stderr error;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {prefix}/body;
  server {{
    listen 127.0.0.1:{port} reuseport;
    location / {{ default_type text/plain; return 200 "hello world\\n"; }}
  }}
}}
"""

_PROXY_CONF = """
daemon off; master_process off; worker_processes 1; pid {prefix}/proxy.pid;
error_log stderr error;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path {prefix}/body2;
  proxy_temp_path {prefix}/proxy_temp;
  upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}
}}
"""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # CPU per request of the measured process, microseconds


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _latency(text: str, label: str) -> float:
    match = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if match is None:
        msg = f"wrk output has no {label} latency:\n{text}"
        raise RuntimeError(msg)
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(url: str, *, connections: int, seconds: float, pid: int | None) -> Result:
    before = _cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        [WRK, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cpu = _cpu_seconds(pid) - before if pid else 0.0
    rps_match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total_match = re.search(r"(\d+) requests in", out)
    if rps_match is None or total_match is None:
        msg = f"cannot read wrk output:\n{out}"
        raise RuntimeError(msg)
    if "Non-2xx" in out or "Socket errors" in out:
        msg = f"errors during the run:\n{out}"
        raise RuntimeError(msg)
    total = int(total_match.group(1))
    return Result(
        float(rps_match.group(1)),
        _latency(out, "50%"),
        _latency(out, "99%"),
        cpu / total * 1e6 if total else float("nan"),
    )


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our loopback URL
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            msg = f"{url} did not answer 200 within {timeout:g}s"
            raise RuntimeError(msg)
        time.sleep(0.05)


def nginx(prefix: Path, name: str, conf: str) -> subprocess.Popen[bytes]:
    path = prefix / f"{name}.conf"
    path.write_text(conf)
    return subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(path)], stderr=subprocess.DEVNULL)


def measure(name: str, url: str, pid: int | None, seconds: float) -> tuple[Result, Result]:
    wrk(url, connections=32, seconds=min(1.0, seconds), pid=None)  # warm up pools and caches
    busy = wrk(url, connections=32, seconds=seconds, pid=pid)
    single = wrk(url, connections=1, seconds=seconds, pid=None)  # wrk takes whole seconds
    print(
        f"  {name}: {busy.rps:,.0f} req/s, p50 {busy.p50_ms:.3f} ms, c1 p50 {single.p50_ms:.3f} ms"
    )
    return busy, single


def run_once(prefix: Path, seconds: float) -> dict[str, tuple[Result, Result]]:
    up_port, nginx_port, aio_port, sc_port, sc_up_port = (free_port() for _ in range(5))
    admin_port = free_port()
    results: dict[str, tuple[Result, Result]] = {}
    upstream = nginx(prefix, "upstream", _UPSTREAM_CONF.format(prefix=prefix, port=up_port))
    procs: list[subprocess.Popen[bytes] | None] = [upstream]
    try:
        wait_http(f"http://127.0.0.1:{up_port}/")
        results["direct"] = measure("direct", f"http://127.0.0.1:{up_port}/", upstream.pid, seconds)

        proxy = nginx(
            prefix, "proxy", _PROXY_CONF.format(prefix=prefix, port=nginx_port, upstream=up_port)
        )
        procs.append(proxy)
        wait_http(f"http://127.0.0.1:{nginx_port}/")
        results["nginx"] = measure("nginx", f"http://127.0.0.1:{nginx_port}/", proxy.pid, seconds)
        stop_processes([proxy])

        script = str(Path(__file__).resolve().parent / "_aiohttp_proxy.py")
        aio = subprocess.Popen([PYTHON, script, str(aio_port), f"http://127.0.0.1:{up_port}"])
        procs.append(aio)
        wait_http(f"http://127.0.0.1:{aio_port}/")
        results["aiohttp"] = measure("aiohttp", f"http://127.0.0.1:{aio_port}/", aio.pid, seconds)
        stop_processes([aio])

        app_conf = prefix / "app.conf"
        conf = _UPSTREAM_CONF.format(prefix=prefix, port=sc_up_port)
        app_conf.write_text(conf.replace("upstream.pid", "app.pid"))
        sidecar = subprocess.Popen(
            [
                SIDECAR,
                "--admin",
                f"127.0.0.1:{admin_port}",
                "--proxy",
                f"127.0.0.1:{sc_port}=http://127.0.0.1:{sc_up_port}",
                "--",
                NGINX,
                "-p",
                str(prefix),
                "-c",
                str(app_conf),
            ],
            env=child_env(),
        )
        procs.append(sidecar)
        wait_http(f"http://127.0.0.1:{sc_port}/")
        results["sidecar-run"] = measure(
            "sidecar-run", f"http://127.0.0.1:{sc_port}/", sidecar.pid, seconds
        )
    finally:
        stop_processes(procs)
    return results


_ENGINE_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"  # what wrk sends
_ENGINE_RESPONSE = (  # what the nginx upstream answers
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Thu, 26 Nov 2026 08:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 12\r\nConnection: keep-alive\r\n\r\n"
    b"hello world\n"
)


class _Sink(asyncio.Transport):
    """A transport that keeps the last write (the engine driver's socket)."""

    def __init__(self) -> None:
        super().__init__()
        self.last = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.last = bytes(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


async def _engine(requests: int, rounds: int, profile: bool) -> float:
    from sidecar_plugins.proxy import ProxyPlugin
    from sidecar_plugins.proxy._server import Connection
    from sidecar_plugins.proxy._upstream import UpstreamConnection

    from sidecar_runtime.testing import plugin_harness

    table = {
        "listeners": [{"address": "127.0.0.1:0"}],
        "upstreams": {"app": {"endpoints": ["127.0.0.1:9"], "app": False}},
    }
    async with plugin_harness(ProxyPlugin, table, name="proxy") as harness:
        plugin = harness.runner.plugin
        cluster = plugin.clusters["app"]
        endpoint = cluster.endpoints["127.0.0.1:9"]
        upstream, up_sink = UpstreamConnection(endpoint), _Sink()
        upstream.connection_made(up_sink)
        endpoint.open += 1
        cluster.breaker.try_connection()
        endpoint.put_idle(upstream)
        client, client_sink = Connection(plugin.listeners[0]), _Sink()
        client.connection_made(client_sink)

        def one() -> None:
            client.data_received(_ENGINE_REQUEST)
            upstream.data_received(_ENGINE_RESPONSE)

        for _ in range(2000):
            one()
        if not client_sink.last.startswith(b"HTTP/1.1 200") or client_sink.closed:
            msg = f"the engine did not answer as expected: {client_sink.last!r}"
            raise RuntimeError(msg)
        best = float("inf")
        for _ in range(rounds):
            gc.collect()
            start = time.process_time()
            for _ in range(requests):
                one()
            best = min(best, (time.process_time() - start) / requests * 1e6)
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(requests):
                one()
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        if up_sink.closed or client_sink.closed:
            msg = "a connection was closed during the run"
            raise RuntimeError(msg)
        return best


def engine_main(quick: bool, profile: bool) -> None:
    import anyio

    header("proxy engine: Python work per request (no sockets, no event loop)", byte_compile())
    requests, rounds = (5000, 5) if quick else (20000, 15)
    cost = anyio.run(_engine, requests, rounds, profile, backend="asyncio")
    print(f"GET on a pooled keep-alive connection: {cost:.1f} us CPU per request")
    print(f"(best of {rounds} rounds of {requests:,} requests; process CPU time)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, runs=1, runs_help="full rounds of all four paths")
    parser.add_argument("--seconds", type=float, default=None, help="wrk duration (default 5)")
    parser.add_argument(
        "--engine", action="store_true", help="the engine's Python work per request only"
    )
    parser.add_argument("--profile", action="store_true", help="with --engine: cProfile it")
    args = parser.parse_args()
    if args.engine:
        engine_main(args.quick, args.profile)
        return
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    runs = args.runs or 1
    header("proxy: throughput and latency (wrk -t1 -c32, and -c1)", byte_compile())
    rounds: list[dict[str, tuple[Result, Result]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-proxy-") as tmp:
        for i in range(runs):
            print(f"round {i + 1}/{runs}")
            rounds.append(run_once(Path(tmp), seconds))
    names = ["direct", "nginx", "aiohttp", "sidecar-run"]

    def med(name: str, pick: str, single: bool = False) -> float:
        return median([getattr(r[name][1 if single else 0], pick) for r in rounds])

    direct_c1 = med("direct", "p50_ms", single=True)
    rows = []
    for name in names:
        added = med(name, "p50_ms", single=True) - direct_c1
        rows.append(
            [
                name,
                f"{med(name, 'rps'):,.0f}",
                f"{med(name, 'p50_ms'):.3f}",
                f"{med(name, 'p99_ms'):.3f}",
                f"{med(name, 'cpu_us'):.1f}",
                f"{med(name, 'p50_ms', single=True):.3f}",
                "-" if name == "direct" else f"{added:+.3f}",
            ]
        )
    print()
    print_table(
        ["path", "req/s", "p50 ms", "p99 ms", "CPU us/req", "c1 p50 ms", "added c1 p50"], rows
    )
    ratio = med("sidecar-run", "rps") / med("aiohttp", "rps")
    added = med("sidecar-run", "p50_ms", single=True) - direct_c1
    print()
    print(
        f"sidecar-run / aiohttp throughput: {ratio:.2f}x (target >= {THROUGHPUT_TARGET:g}x) "
        f"{verdict(ratio >= THROUGHPUT_TARGET)}"
    )
    print(
        f"sidecar-run added p50 at one connection: {added:.3f} ms "
        f"(target <= {ADDED_P50_TARGET_MS} ms) {verdict(added <= ADDED_P50_TARGET_MS)}"
    )
    versus_nginx = med("sidecar-run", "rps") / med("nginx", "rps")
    print(f"sidecar-run / nginx throughput: {versus_nginx:.2f}x")
    report_stale()


if __name__ == "__main__":
    main()
