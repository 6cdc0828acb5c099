"""systemd's watchdog: ``WATCHDOG=1`` at half of ``$WATCHDOG_USEC`` while the app is live.

systemd sets ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``) for a unit with ``WatchdogSec=``. The
pings follow the liveness truth (:meth:`Monitor.live_checks`): they stop while a liveness or
startup probe has failed, or the app is not ``RUNNING`` outside a shutdown, so that systemd's
watchdog acts when the app is stuck and the restart through the core did not help.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import anyio

from sidecar_runtime import PluginContext

__all__ = ["Watchdog", "watchdog_interval"]


def watchdog_interval(environ: Mapping[str, str]) -> tuple[float | None, str]:
    """Seconds between pings (half of ``WATCHDOG_USEC``), or None and why there are none."""
    text = environ.get("WATCHDOG_USEC", "")
    if not text:
        return None, "WATCHDOG_USEC is not set"
    pid = environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None, f"WATCHDOG_PID={pid} is another process"
    if not environ.get("NOTIFY_SOCKET"):
        return None, "NOTIFY_SOCKET is not set"
    try:
        usec = int(text)
    except ValueError:
        return None, f"WATCHDOG_USEC={text!r} is not a number"
    if usec <= 0:
        return None, f"WATCHDOG_USEC={text!r} is not positive"
    return usec / 2e6, ""


class Watchdog:
    """Pings while ``live()`` holds; logs when the pings stop and resume."""

    def __init__(
        self, interval: float, live: Callable[[], bool], describe: Callable[[], str]
    ) -> None:
        self.interval = interval
        self.live = live
        self.describe = describe
        self.pings = 0

    async def run(self, ctx: PluginContext) -> None:
        ctx.log.info("watchdog_enabled", interval=round(self.interval, 6))
        pinging = True
        while True:
            if self.live():
                if ctx.notify(WATCHDOG=1):
                    self.pings += 1
                if not pinging:
                    pinging = True
                    ctx.log.info("watchdog_pings_resumed")
            elif pinging:
                pinging = False
                ctx.log.warning("watchdog_pings_stopped", reason=self.describe())
            await anyio.sleep(self.interval)
