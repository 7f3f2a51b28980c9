# SPDX-License-Identifier: GPL-2.0-only
"""The real event loop in this process, around a fake event source: no root, no kernel uevents.

The loop is crashhpd's own (service/daemon.py `Daemon`), wired as `crashhpd
run` wires it: parts from wiring.build_parts, the sandbox backend on a fake
tree, Metrics, Notifier and the real control server answering with
crashhpd.wiring.control_server on a real socket. Only the event source is the test's: a
socketpair the selector watches, made readable whenever the test hands it a
`Drained` to return.

Daemon.run installs signal handlers, which Python allows only in the main
thread, so the loop runs in the test's main thread and the test body drives
it from a second thread, through the event source and the control socket.
Whatever must happen inside the loop (a reload, reading daemon.status(),
stopping) is handed to the source too, and runs on the loop's next drain,
as a SIGHUP or SIGTERM would be handled between two turns of the loop.
"""

import dataclasses
import grp
import logging
import os
import selectors
import shutil
import signal
import socket
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from daemonproc import daemon_status, generated, segment_header, state, wait_idle, write_config
from faketree import VIRTIO_MEM, make_tree, replace_iomem, virtio_mem_plugged

from crashhpd import config as config_mod
from crashhpd import log
from crashhpd.config import Config
from crashhpd.control.server import ControlServer
from crashhpd.service.daemon import Daemon, Parts
from crashhpd.service.metrics import Metrics
from crashhpd.service.notify import Notifier
from crashhpd.service.parts import Drained
from crashhpd.wiring import build_parts, control_server

QUIET_MS = 100
TIMEOUT_S = 10


class FakeSource:
    """An EventSource the test feeds: each item handed in makes the fd readable and is one drain's result."""

    source = "fake"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: deque[Drained | Exception | tuple[Callable[[], Any], Future]] = deque()
        self._r: socket.socket | None = None
        self._w: socket.socket | None = None
        self.opened = 0
        self.closed = 0

    # --- the EventSource protocol, called by the loop ---------------------------------------

    def open(self) -> None:
        with self._lock:
            self._r, self._w = socket.socketpair()
            self._r.setblocking(False)
            self.opened += 1
            self._w.send(b"." * len(self._items))  # what was handed in while closed is still to come

    def fileno(self) -> int:
        assert self._r is not None
        return self._r.fileno()

    @property
    def is_open(self) -> bool:
        return self._r is not None

    def close(self) -> None:
        with self._lock:
            assert self._r is not None and self._w is not None
            self._r.close()
            self._w.close()
            self._r = self._w = None
            self.closed += 1

    def drain(self) -> Drained:
        with self._lock:
            assert self._r is not None
            try:
                self._r.recv(1)
            except BlockingIOError:
                return Drained()
            item = self._items.popleft()
        if isinstance(item, Drained):
            return item
        if isinstance(item, Exception):
            raise item
        call, done = item
        try:
            done.set_result(call())
        except BaseException as err:  # handed back to the test's thread, not raised into the loop
            done.set_exception(err)
        return Drained()

    # --- the test's side ---------------------------------------------------------------------

    def send(self, drained: Drained | Exception) -> None:
        """What the loop's next drain returns (events, or a loss, or a broken socket) or raises."""
        self._put(drained)

    def in_loop(self, call: Callable[[], Any]) -> Any:
        """Run `call` inside the loop, between two of its turns, and return its result here."""
        done: Future = Future()
        self._put((call, done))
        return done.result(TIMEOUT_S)

    def _put(self, item: Drained | Exception | tuple[Callable[[], Any], Future]) -> None:
        with self._lock:
            self._items.append(item)
            if self._w is not None:
                self._w.send(b".")


@dataclass
class Paths:
    root: Path
    state_dir: Path
    socket: Path
    config: Path

    def write_config(self, **top: object) -> Path:
        """The config file, with `top` set over the keys and tables every test starts from."""
        tables: dict[str, object] = {
            "root": str(self.root),
            "debounce": {"quiet_ms": QUIET_MS, "max_delay_ms": 2000},
            "backend": "sandbox", "sandbox": {"state_dir": str(self.state_dir)},
            "log": {"level": "debug"},
            # the caller's own group: setting any other on the socket needs root
            "control": {"socket": str(self.socket), "group": grp.getgrgid(os.getegid()).gr_name},
        }
        return write_config(self.config, {**tables, **top})


@dataclass
class Service(Paths):
    """A daemon built as `crashhpd run` builds it, around a FakeSource; run() serves until the test is done."""

    source: FakeSource
    daemon: Daemon
    control: ControlServer

    def status(self) -> dict:
        return daemon_status(self.socket)

    def idle(self) -> dict:
        return wait_idle(self.socket, TIMEOUT_S)

    def run(self, drive: Callable[[], None]) -> None:
        """The loop here, in the main thread; `drive` in a second one, and the loop stopped when it ends."""
        failure: list[BaseException] = []

        def driver() -> None:
            try:
                self.source.in_loop(lambda: None)  # the loop has started: socket open, start-up applied
                drive()
            except BaseException as err:
                failure.append(err)
            finally:
                self.source.in_loop(partial(setattr, self.daemon, "stopping", True))

        thread = threading.Thread(target=driver, name="test driver", daemon=True)
        thread.start()
        assert self.daemon.run(self.control) == 0
        thread.join(TIMEOUT_S)
        if failure:
            raise failure[0]


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):  # not ours, if pytest runs under a service
        monkeypatch.delenv(name, raising=False)
    socket_dir = Path(tempfile.mkdtemp(prefix="crashhpd-svc-"))  # a socket path must stay under 108 bytes
    logger = logging.getLogger(log.LOGGER_NAME)
    handlers, level = logger.handlers[:], logger.level
    signals = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    wakeup_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_fd)
    paths = Paths(make_tree(tmp_path / "root", VIRTIO_MEM), tmp_path / "state", socket_dir / "control.sock",
                  tmp_path / "crashhpd.toml")
    source = FakeSource()

    def build(cfg: Config, old: Parts | None) -> Parts:
        return dataclasses.replace(build_parts(cfg, old), monitor=source)

    cfg = config_mod.load(str(paths.write_config()))
    log.setup(cfg.log.level)  # as wiring.run does
    selector = selectors.DefaultSelector()
    daemon = Daemon(build(cfg, None), build, selector, Metrics(), Notifier(), str(paths.config), None,
                    config_mod.load)
    control = control_server(cfg, selector, daemon)
    try:
        yield Service(**vars(paths), source=source, daemon=daemon, control=control)
    finally:
        # Daemon.run leaves its signal handlers and wake-up fd in place (a daemon exits after it): put pytest's back
        signal.set_wakeup_fd(wakeup_fd)
        for signum, handler in signals.items():
            signal.signal(signum, handler)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        if source.is_open:  # the loop leaves its source open when it stops, as a process about to exit may
            source.close()
        selector.close()
        shutil.rmtree(socket_dir)


def burst(source: FakeSource, drains: int, events: int = 64) -> None:
    """One burst as the monitor reads it: `drains` reads in a row, `events` each."""
    for _ in range(drains):
        source.send(Drained(events=events, actions={"memory/online": events}))


# --- the data path ---------------------------------------------------------------------------------


def test_one_burst_of_events_is_exactly_one_apply(service):
    def drive() -> None:
        assert service.idle()["generation"] == 1  # the start-up apply
        replace_iomem(service.root, virtio_mem_plugged(1))
        burst(service.source, 4)
        service.idle()
        status = service.status()
        assert (status["generation"], status["applies"], status["updates"]) == (2, 2, 2), "one burst, one apply"
        assert status["events_received"] == 4 * 64 and status["events_coalesced"] == 4 * 64 - 1
        assert status["last_apply_reason"] == "events"
        assert "+ RAM 0x350000000-0x357ffffff (128 MiB)" in status["last_changes"]
        assert segment_header(service.state_dir) == generated(service.root)

    service.run(drive)


def test_a_burst_that_changes_nothing_is_a_skipped_noop(service):
    def drive() -> None:
        before = service.idle()
        burst(service.source, 2)
        after = service.idle()
        assert after["skipped_noop"] == before["skipped_noop"] + 1
        assert (after["generation"], after["applies"]) == (before["generation"], before["applies"]) == (1, 1)
        assert after["updates"] == before["updates"] + 1 and after["in_sync"] is True

    service.run(drive)


def test_a_drain_that_lost_events_is_a_counted_rescan(service):
    def drive() -> None:
        service.idle()
        replace_iomem(service.root, virtio_mem_plugged(2))  # what the lost events announced
        service.source.send(Drained(lost=True, error="uevent receive buffer overflowed (ENOBUFS)"))
        status = service.idle()
        assert status["rescans"] == 1 and status["errors"] == {"events-lost": 1}
        assert status["last_error"] == "uevent receive buffer overflowed (ENOBUFS)"
        assert status["generation"] == 2 and status["events_received"] == 0  # no event counted, yet rescanned
        assert segment_header(service.state_dir) == generated(service.root)

    service.run(drive)


def test_a_broken_source_is_reopened_and_events_still_arrive(service):
    def drive() -> None:
        service.idle()
        assert (service.source.opened, service.source.closed) == (1, 0)
        service.source.send(Drained(lost=True, broken=True, error="uevent socket error: Network is down"))
        status = service.idle()
        assert (service.source.opened, service.source.closed) == (2, 1)
        assert status["rescans"] == 1
        replace_iomem(service.root, virtio_mem_plugged(1))
        burst(service.source, 1)  # through the reopened source
        status = service.idle()
        assert status["generation"] == 2 and status["events_received"] == 64
        assert segment_header(service.state_dir) == generated(service.root)

    service.run(drive)


def test_a_source_that_raises_is_a_rescan_and_the_daemon_goes_on(service):
    """libudev answers a malformed uevent with EINVAL, which pyudev raises as ValueError from its poll."""
    def drive() -> None:
        service.idle()
        service.source.send(ValueError("[Errno 22] Invalid argument"))
        status = service.idle()
        assert (service.source.opened, service.source.closed) == (2, 1)
        assert status["rescans"] == 1 and status["errors"] == {"events-lost": 1}
        assert status["last_error"] == "unreadable uevent (ValueError: [Errno 22] Invalid argument)"
        replace_iomem(service.root, virtio_mem_plugged(1))
        burst(service.source, 1)  # through the reopened source
        status = service.idle()
        assert status["generation"] == 2 and segment_header(service.state_dir) == generated(service.root)

    service.run(drive)


# --- what it reports and how it is reconfigured ---------------------------------------------------



def test_status_over_the_socket_is_the_daemons_own(service):
    def drive() -> None:
        replace_iomem(service.root, virtio_mem_plugged(1))
        burst(service.source, 3)
        over_socket = service.idle()
        in_loop = dataclasses.asdict(service.source.in_loop(service.daemon.status))
        assert set(over_socket) == set(in_loop)
        moving = {"uptime_s", "control_clients"}  # the clock, and the asking client itself, connected or not
        assert {k: v for k, v in over_socket.items() if k not in moving} == \
            {k: v for k, v in in_loop.items() if k not in moving}
        assert over_socket["control_clients"] == in_loop["control_clients"] + 1
        applied = state(service.state_dir)
        assert (over_socket["generation"], over_socket["header_bytes"]) == (applied["generation"],
                                                                            applied["header_size"])
        assert over_socket["pid"] == os.getpid() and over_socket["backend"] == "sandbox"

    service.run(drive)


def test_a_reload_with_another_layout_takes_effect(service):
    def drive() -> None:
        assert service.idle()["layout"] == "kernel"
        service.write_config(layout="kexec-tools")
        service.source.in_loop(service.daemon.reload_config)  # what SIGHUP does, in the loop
        status = service.idle()
        assert status["layout"] == "kexec-tools" and status["generation"] == 2
        assert status["last_apply_reason"] == "reload"
        assert segment_header(service.state_dir) == generated(service.root, "kexec-tools")
        burst(service.source, 1)  # the new layout is the one events are compared with
        assert service.idle()["skipped_noop"] == 1

    service.run(drive)
