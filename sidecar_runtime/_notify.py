"""systemd's notify protocol (``sd_notify``): datagrams to ``$NOTIFY_SOCKET``.

A no-op without ``NOTIFY_SOCKET``. Paths starting with ``@`` are abstract sockets. Sending never
blocks: a full socket queue drops the message and counts it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier"]


class Notifier:
    """Sends ``KEY=VALUE`` lines to the service manager."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        self.failures = 0
        self.sent: list[str] = []
        if path.startswith("@"):
            self.address = b"\0" + path[1:].encode()
        elif path.startswith("/"):
            self.address = path
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send fields such as ``READY=1``, ``STATUS=...``; True when the datagram went out."""
        if self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items())
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(message.encode(), self.address)
        except OSError:
            self.failures += 1
            return False
        self.sent.append(message)
        del self.sent[:-32]
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
