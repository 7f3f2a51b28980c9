# SPDX-License-Identifier: GPL-2.0-only
"""Event intake: CPU and memory uevents from a netlink socket that lives in the daemon's loop.

No observer thread: the monitor's fd sits in the selector and is drained
with non-blocking receives. Losing events is survivable by design: an
overflowing receive buffer (ENOBUFS) or a broken socket only means "rescan",
because the snapshot, not the event stream, is the truth.
"""

import errno
import logging
import os
import socket
from typing import Literal

import pyudev

from .parts import Drained

logger = logging.getLogger(__name__)

SUBSYSTEMS = ("cpu", "memory")
UDEV_CONTROL = "/run/udev/control"  # exists while systemd-udevd runs (libudev checks the same)
DRAIN_LIMIT = 64  # events per drain (under 1 ms): timers and control clients get a turn between drains

Source = Literal["auto", "udev", "kernel"]


def resolve_source(source: Source) -> Literal["udev", "kernel"]:
    """`udev` events come after udevd processed them; without udevd only the kernel's arrive."""
    if source == "auto":
        return "udev" if os.path.exists(UDEV_CONTROL) else "kernel"
    return source


def _socket_error(fd: int) -> int:
    """The pending error of a socket (SO_ERROR), which reading also clears."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    finally:
        sock.close()


class EventMonitor:
    def __init__(self, source: Source, receive_buffer_bytes: int, context: pyudev.Context | None = None) -> None:
        self.source = resolve_source(source)
        self.receive_buffer_bytes = receive_buffer_bytes
        self._context = context
        self._monitor: pyudev.Monitor | None = None

    def open(self) -> None:
        monitor = pyudev.Monitor.from_netlink(self._context or pyudev.Context(), source=self.source)
        for subsystem in SUBSYSTEMS:
            monitor.filter_by(subsystem)
        try:
            monitor.set_receive_buffer_size(self.receive_buffer_bytes)
        except OSError as err:  # needs CAP_NET_ADMIN above net.core.rmem_max
            logger.warning("cannot raise the uevent receive buffer to %d bytes: %s", self.receive_buffer_bytes, err)
        monitor.start()
        self._monitor = monitor

    def fileno(self) -> int:
        assert self._monitor is not None
        return self._monitor.fileno()

    def close(self) -> None:
        self._monitor = None  # pyudev closes the socket when the monitor is collected

    def drain(self) -> Drained:
        """Take what is queued, without blocking; `broken` asks the caller to reopen the monitor."""
        assert self._monitor is not None
        out = Drained()
        count_actions = logger.isEnabledFor(logging.DEBUG)  # per-event attribute reads cost a third of a drain
        while True:
            if out.events == DRAIN_LIMIT:
                out.more = True
                break
            try:
                device = self._monitor.poll(timeout=0)
            except OSError as err:
                out.lost = True
                # pyudev reports POLLERR as a bare "Error while polling fd"; the socket knows which error it was
                code = err.errno or _socket_error(self._monitor.fileno())
                if code == errno.ENOBUFS:
                    out.error = "uevent receive buffer overflowed (ENOBUFS)"
                    continue  # reading SO_ERROR cleared it; what is queued after the overflow is still good
                out.error = f"uevent socket error: {os.strerror(code) if code else err}"
                out.broken = True
                break
            if device is None:
                break
            out.events += 1
            if count_actions:
                key = f"{device.subsystem}/{device.action}"
                out.actions[key] = out.actions.get(key, 0) + 1
        return out
