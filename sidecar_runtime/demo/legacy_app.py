"""An unmodified "legacy" app for the demo: it knows nothing of sidecar-run.

A small HTTP server (stdlib only) that logs each request to stdout, warnings to stderr, and
appends to a log file when LEGACY_APP_LOG is set. GET / says hello, GET /health answers ok,
GET /crash exits with status 3 (sidecar-run restarts it). SIGTERM or SIGINT: it finishes the
request in hand and exits 0.
"""

from __future__ import annotations

import http.server
import os
import signal
import sys
import threading
import time
from typing import Any, TextIO

PORT = int(os.environ.get("LEGACY_APP_PORT", "8080"))
LOG_FILE = os.environ.get("LEGACY_APP_LOG", "")
EXIT_AFTER = float(os.environ.get("LEGACY_APP_EXIT_AFTER", "0") or 0)


def log(line: str, stream: TextIO = sys.stdout) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    stream.write(f"{stamp} {line}\n")
    stream.flush()
    if LOG_FILE:
        with open(LOG_FILE, "a") as f:
            f.write(f"{stamp} {line}\n")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/crash":
            log("crash requested, exiting with status 3", sys.stderr)
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"crashing\n")
            self.wfile.flush()
            os._exit(3)
        body = b"ok\n" if self.path == "/health" else b"hello from a legacy app\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log(f"{self.client_address[0]} {format % args}")


def main() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)

    def stop(signum: int, frame: object) -> None:
        log(f"received signal {signum}, shutting down")
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if EXIT_AFTER:
        threading.Timer(EXIT_AFTER, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    log(f"legacy app listening on http://127.0.0.1:{PORT}/ (pid {os.getpid()})")
    server.serve_forever()
    log("bye")


if __name__ == "__main__":
    main()
