"""The minimal Python reference tailer of ``bench/logs.py``: what a bare Python loop manages.

Usage: ``python bench/_logs_ref.py MODE OUT [--follow PATH]``. Without ``--follow`` it reads
stdin until EOF (the app's stdout case); with it, it reads ``PATH`` from its head and keeps
polling (every 10 ms when there is nothing new) until SIGTERM. It never handles rotation,
truncation, checkpoints, partial lines at exit or backpressure: a floor, not a competitor.

Modes:

- ``raw``: copies the bytes in 1 MiB reads (what ``tail`` does, in Python);
- ``records``: one dict per complete line (``message``, ``time``, ``file``/``offset`` or
  ``stream``), written as JSON lines with msgspec: the default pipeline's job, nothing else;
- ``json``: as ``records``, plus ``msgspec.json.decode`` of every line merged into the record
  (``msg`` becomes ``message``) and a static field: the job of ``parse = "json"`` + ``enrich``.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import msgspec

READ = 1 << 20
_encode_lines = msgspec.json.Encoder().encode_lines
_decode = msgspec.json.decode


def _records(lines: list[bytes], where: dict[str, Any], offset: int, parse: bool) -> bytes:
    now = time.time()
    out: list[dict[str, Any]] = []
    append = out.append
    file_source = "file" in where
    for line in lines:
        text = line.decode("utf-8", "replace")
        record: dict[str, Any] = {"message": text, "time": now, **where}
        if file_source:
            record["offset"] = offset
            offset += len(line) + 1
        if parse:
            try:
                fields = _decode(line)
            except msgspec.DecodeError:
                fields = None
            if type(fields) is dict:
                if "msg" in fields:
                    record["message"] = fields.pop("msg")
                record.update(fields)
            record.setdefault("env", "bench")
        append(record)
    return _encode_lines(out)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def copy(mode: str, src: int, dst: int, where: dict[str, Any], follow: bool) -> None:
    """Read ``src`` to its end (and on, with ``follow``), writing ``mode``'s output to ``dst``."""
    rest = b""
    offset = 0
    while True:
        data = os.read(src, READ)
        if not data:
            if not follow:
                return
            time.sleep(0.01)
            continue
        if mode == "raw":
            _write_all(dst, data)
            continue
        data = rest + data if rest else data
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if cut:
            lines = data[: cut - 1].split(b"\n")
            _write_all(dst, _records(lines, where, offset, mode == "json"))
            offset += cut


def main() -> None:
    args = sys.argv[1:]
    if len(args) not in (2, 4) or args[0] not in ("raw", "records", "json"):
        sys.exit("usage: _logs_ref.py raw|records|json OUT [--follow PATH]")
    mode, out = args[0], args[1]
    follow = args[3] if len(args) == 4 and args[2] == "--follow" else None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    dst = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    if follow is None:
        copy(mode, 0, dst, {"stream": "stdout"}, follow=False)
    else:
        src = os.open(follow, os.O_RDONLY)
        copy(mode, src, dst, {"file": os.path.abspath(follow)}, follow=True)


if __name__ == "__main__":
    main()
