# SPDX-License-Identifier: GPL-2.0-only
"""Telling systemd where the daemon stands (sd_notify(3)): ready, reloading, status, watchdog, stopping.

Outside a Type=notify service ($NOTIFY_SOCKET unset) every call does
nothing, so the daemon runs the same in a terminal.
"""

import logging
import os
import time

from systemd import daemon

logger = logging.getLogger(__name__)


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds: what systemd 253+ expects next to RELOADING=1 to match the reload."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def one_line(text: str) -> str:
    """A notification is newline-separated assignments: a newline in STATUS would start a bogus one."""
    return " ".join(text.splitlines())


class Notifier:
    def __init__(self) -> None:
        self._failing = False  # so a vanished socket is reported once, not at every watchdog ping

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={one_line(status)}")

    def reloading(self) -> None:
        self._send(f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec()}")

    def status(self, text: str) -> None:
        self._send(f"STATUS={one_line(text)}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half of WatchdogSec=, as sd_watchdog_enabled(3) advises, or None when not ours."""
        try:
            usec = int(os.environ["WATCHDOG_USEC"])
            pid = int(os.environ.get("WATCHDOG_PID", os.getpid()))
        except (KeyError, ValueError):
            return None
        if usec <= 0 or pid != os.getpid():
            return None
        return usec / 2 / 1_000_000

    def _send(self, state: str) -> None:
        if not os.environ.get("NOTIFY_SOCKET"):
            return
        try:
            daemon.notify(state)
        except OSError as err:
            if not self._failing:
                logger.warning("cannot notify the service manager at %s: %s",
                               os.environ.get("NOTIFY_SOCKET"), err.strerror or err)
            self._failing = True
        else:
            self._failing = False
