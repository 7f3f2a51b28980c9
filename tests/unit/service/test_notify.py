# SPDX-License-Identifier: GPL-2.0-only
"""crashhpd.notify: the exact sd_notify datagrams, on a real socket in both address forms."""

import logging
import os
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crashhpd.service.notify import Notifier


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket as systemd passes it in $NOTIFY_SOCKET: a file path, or "@name" for the abstract namespace."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        address = str(tmp_path / "notify")
        sock.bind(address)
    else:
        name = f"crashhpd-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name)
        address = "@" + name
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    yield sock
    sock.close()


def received(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def nothing_pending(sock: socket.socket) -> bool:
    return not select.select([sock], [], [], 0)[0]


def test_ready_sends_ready_and_status(notify_socket: socket.socket) -> None:
    Notifier().ready("watching 4 CPUs, 41 RAM ranges")
    assert received(notify_socket) == b"READY=1\nSTATUS=watching 4 CPUs, 41 RAM ranges"


def test_status_with_a_newline_stays_one_assignment(notify_socket: socket.socket) -> None:
    Notifier().status("apply failed:\nkexec busy")
    assert received(notify_socket) == b"STATUS=apply failed: kexec busy"


def test_reloading_carries_the_monotonic_time_of_the_reload(notify_socket: socket.socket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier().reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = received(notify_socket).split(b"\n")
    assert first == b"RELOADING=1"
    key, _, usec = second.partition(b"=")
    assert key == b"MONOTONIC_USEC"
    assert before <= int(usec) <= after


@pytest.mark.parametrize(("call", "datagram"), [("watchdog", b"WATCHDOG=1"), ("stopping", b"STOPPING=1")])
def test_single_assignments(notify_socket: socket.socket, call: str, datagram: bytes) -> None:
    getattr(Notifier(), call)()
    assert received(notify_socket) == datagram


def test_without_notify_socket_nothing_is_sent(notify_socket: socket.socket,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET")
    notifier = Notifier()
    notifier.ready("up")
    notifier.reloading()
    notifier.status("x")
    notifier.watchdog()
    notifier.stopping()
    assert nothing_pending(notify_socket)


def test_a_vanished_socket_is_reported_once_and_never_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    address = tmp_path / "gone"
    monkeypatch.setenv("NOTIFY_SOCKET", str(address))
    notifier = Notifier()
    with caplog.at_level(logging.WARNING, logger="crashhpd.notify"):
        notifier.watchdog()
        notifier.watchdog()
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot notify the service manager at {address}: No such file or directory"]

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # the manager is back: pings arrive again
    sock.bind(str(address))
    with sock:
        notifier.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
    address.unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="crashhpd.notify"):
        notifier.watchdog()
    assert len(caplog.records) == 1  # a new outage is reported again


@pytest.mark.parametrize(("usec", "pid", "interval"), [
    ("30000000", None, 15.0),
    ("30000000", "self", 15.0),
    ("3000000", "self", 1.5),
    ("30000000", "1", None),  # the watchdog is meant for another process (our parent)
    ("0", None, None),
    ("soon", None, None),
    (None, None, None),
])
def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None,
                           interval: float | None) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert Notifier().watchdog_interval() == interval
