"""`crashhpd run`: the single-threaded event loop that turns hotplug bursts into header updates.

One selector holds every fd (the uevent monitor, the signal pipe, the control
socket); timers are deadlines the loop sleeps until (debounce, retry,
watchdog), so an idle daemon wakes only for the watchdog. The data path is
always the same: event -> debounce -> snapshot -> header -> backend.
"""

import logging
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from functools import partial

from .. import backends, log
from .. import config as config_mod
from ..backends.base import Backend
from ..config import Config
from ..control import ops
from ..control.server import ControlError, ControlServer
from ..elfcorehdr.layout import Layout, preset
from ..errors import BackendError, ConfigError, CrashhpdError
from ..sysview.snapshot import BootConstants, read_boot_constants, read_snapshot
from .debounce import Debouncer
from .metrics import Metrics
from .monitor import EventMonitor
from .notify import Notifier
from .reconcile import Outcome, reconcile
from .stats import Stats

logger = logging.getLogger(__name__)

EX_CONFIG = 78  # sysexits.h: configuration error
EX_FATAL = 1
BATCH_S = 0.01  # during a burst the uevent socket is read at most this often


def layout_for(cfg: Config, backend: Backend) -> Layout:
    """The config's layout, else the one the backend's loader produces."""
    return preset(cfg.layout or backend.layout, cfg.cpus if (cfg.layout or backend.layout) == "kernel" else None,
                  cfg.page_offset)


class Daemon:
    def __init__(self, cfg: Config, config_path: str | None, root_override: str | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.root_override = root_override
        self.clock = clock
        self.stats = Stats()
        self.notifier = Notifier()
        self.selector = selectors.DefaultSelector()
        self.debounce = Debouncer(cfg.debounce.quiet_ms / 1000, cfg.debounce.max_delay_ms / 1000)
        self.boot: BootConstants = read_boot_constants(cfg.root)
        self.backend: Backend = backends.create(cfg, read_snapshot(cfg.root, self.boot))
        self.layout = layout_for(cfg, self.backend)
        self.monitor = EventMonitor(cfg.monitor.source, cfg.monitor.receive_buffer_bytes)
        self.retry_at: float | None = None
        self.monitor_resume_at: float | None = None  # the uevent fd is out of the selector until then
        self.stopping = False
        self.signals: list[int] = []
        self._wake_r, self._wake_w = socket.socketpair()
        self.control = ControlServer(cfg.control, self.selector, partial(ops.handle, self), clock)
        self.metrics = Metrics(partial(ops.status, self), time.time)

    # --- wiring --------------------------------------------------------------------------

    def _open_monitor(self) -> None:
        self.monitor.open()
        self._monitor_fd = self.monitor.fileno()
        self._resume_monitor()

    def _close_monitor(self) -> None:
        if self.monitor_resume_at is None:
            self.selector.unregister(self._monitor_fd)
        self.monitor_resume_at = None
        self.monitor.close()

    def _resume_monitor(self) -> None:
        self.monitor_resume_at = None
        self.selector.register(self._monitor_fd, selectors.EVENT_READ, self._on_uevents)

    def _install_signals(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            fd.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, lambda signum, _frame: self.signals.append(signum))
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wakeup)

    def _on_wakeup(self, _mask: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    # --- events ----------------------------------------------------------------------------

    def _on_uevents(self, _mask: int) -> None:
        drained = self.monitor.drain()
        now = self.clock()
        if drained.events:
            self.stats.events_received += drained.events
            self.debounce.event(now, drained.events)
            logger.debug("%d uevents: %s", drained.events, drained.actions)
            if not drained.more:
                # In a storm, read the socket in batches every BATCH_S instead of waking per event;
                # the kernel queues what arrives meanwhile, and the quiet window stays exact to BATCH_S.
                # A drain cut at its limit stays registered: the rest is read after one turn of the loop.
                self.selector.unregister(self._monitor_fd)
                self.monitor_resume_at = now + BATCH_S
        if drained.broken:
            self._close_monitor()
            self._open_monitor()
        if drained.lost:
            self.stats.rescans += 1
            self.stats.error("events-lost", drained.error or "uevents lost")
            logger.warning("%s; rescanning, since events may be lost", drained.error,
                           extra=log.fields("events-lost", events=drained.events))
            self.debounce.event(now, 0)  # a burst with no counted event: the update after it rescans

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGHUP:
                self.reload_config()
            else:
                self.stopping = True

    # --- the data path ----------------------------------------------------------------------

    def update(self, reason: str) -> Outcome | None:
        """Reconcile now; any failure is logged and counted, and the loop goes on."""
        outcome = self._update(reason)
        self.metrics.write_textfile(self.cfg.metrics.textfile_dir)
        return outcome

    def _update(self, reason: str) -> Outcome | None:
        started = self.clock()
        burst_started = self.debounce.first_at  # for the event-to-apply latency
        events = self.debounce.take()
        self.stats.updates += 1
        self.stats.events_coalesced += max(events - 1, 0)
        self.retry_at = None
        try:
            snapshot = read_snapshot(self.cfg.root, self.boot)
            outcome = reconcile(self.backend, snapshot, self.layout, self.clock)
        except BackendError as err:
            self._failed("apply-failed", f"apply failed: {err}", events)
            if err.retry_after is not None:
                self.retry_at = self.clock() + err.retry_after
            return None
        except CrashhpdError as err:
            self._failed("snapshot-failed", str(err), events)
            return None
        # Backends re-read the kernel's state here, on every burst and never on a timer: the passive
        # backend logs when crash_hotplug stops (or resumes) reading 1.
        self.backend.health()
        built = outcome.built
        self.stats.cpus = len(built.model.cpu_notes)
        self.stats.ram_ranges = len(built.model.ram)
        self.stats.ram_bytes = sum(end - start + 1 for start, end in built.model.ram)
        self.stats.header_bytes = len(built.data)
        self.stats.in_sync = True
        self.stats.last_duration_s = outcome.duration_s
        duration_us = int((self.clock() - started) * 1e6)
        common = dict(events=events, ranges=self.stats.ram_ranges, cpus=self.stats.cpus,
                      duration_us=duration_us, backend=self.backend.name)
        if outcome.applied is None:
            self.stats.skipped_noop += 1
            logger.debug("%s: header unchanged, nothing to apply", reason,
                         extra=log.fields("skipped", reason=reason, **common))
            return outcome
        self.stats.applies += 1
        self.metrics.applied(duration_us / 1e6, None if burst_started is None else self.clock() - burst_started)
        self.stats.last_apply_at = outcome.applied.applied_at
        self.stats.last_apply_reason = reason
        self.stats.last_changes = outcome.changes
        logger.info("applied generation %d (%s, %d events): %s", outcome.applied.generation, reason, events,
                    "; ".join(outcome.changes) or "no visible change",
                    extra=log.fields("applied", generation=outcome.applied.generation, reason=reason, **common))
        return outcome

    def _failed(self, kind: str, message: str, events: int) -> None:
        self.stats.in_sync = False
        self.stats.error(kind, message)
        logger.error("%s", message, extra=log.fields(kind, events=events, backend=self.backend.name))

    # --- configuration -------------------------------------------------------------------

    def reload_config(self) -> None:
        """SIGHUP: re-read the config; an invalid one is reported and the old one kept."""
        self.notifier.reloading()
        try:
            new = config_mod.load(self.config_path, self.root_override)
        except ConfigError as err:
            for problem in err.problems:
                logger.error("config not reloaded: %s", problem, extra=log.fields("config-invalid"))
            self.notifier.ready(self.status_line())
            return
        self._apply_config(new)
        logger.info("configuration reloaded", extra=log.fields("reload", backend=self.backend.name))
        self.update("reload")
        self.notifier.ready(self.status_line())

    def _apply_config(self, new: Config) -> None:
        old = self.cfg
        self.cfg = new
        log.setup(new.log.level)
        self.debounce.quiet = new.debounce.quiet_ms / 1000
        self.debounce.max_delay = new.debounce.max_delay_ms / 1000
        if new.root != old.root:
            self.boot = read_boot_constants(new.root)
        backend_keys = ("root", "backend", "state_dir", "sandbox", "kexec")
        if any(getattr(new, k) != getattr(old, k) for k in backend_keys):
            try:
                self.backend = backends.create(new, read_snapshot(new.root, self.boot))
            except CrashhpdError as err:
                self._failed("apply-failed", f"new backend not usable, keeping {self.backend.name}: {err}", 0)
        self.layout = layout_for(new, self.backend)
        if new.monitor != old.monitor:
            self._close_monitor()
            self.monitor = EventMonitor(new.monitor.source, new.monitor.receive_buffer_bytes)
            self._open_monitor()
        if new.control != old.control:
            try:
                self.control.reconfigure(new.control)
            except ControlError as err:
                logger.error("control socket not changed: %s", err, extra=log.fields("control"))

    # --- the loop ------------------------------------------------------------------------------

    def status_line(self) -> str:
        state = self.backend.state()
        generation = state.generation if state else 0
        # no event count here: STATUS= goes to PID 1 on every change, and a storm must not become a datagram storm
        activity = "update pending" if self.debounce.due() is not None else "idle"
        if self.stats.last_error and not self.stats.in_sync:
            activity = f"error: {self.stats.last_error}"
        return (f"generation {generation}, {self.stats.cpus} CPUs, {self.stats.ram_ranges} ranges, "
                f"{self.backend.name}, {activity}")

    def _next_deadline(self, watchdog_at: float | None) -> float | None:
        candidates = [t for t in (self.debounce.due(), self.retry_at, watchdog_at, self.monitor_resume_at,
                                  self.control.next_deadline()) if t is not None]
        return min(candidates) if candidates else None

    def run(self) -> int:
        self._install_signals()
        self._open_monitor()  # before the first snapshot, so nothing happens unseen in between
        self.control.open()
        logger.info("crashhpd started: backend %s, layout %s, root %s, uevents from %s", self.backend.name,
                    self.layout.name, self.cfg.root, self.monitor.source,
                    extra=log.fields("started", backend=self.backend.name))
        self.update("startup")
        self.notifier.ready(self.status_line())
        logger.info("ready: %s", self.status_line(), extra=log.fields("ready", backend=self.backend.name))
        interval = self.notifier.watchdog_interval()
        watchdog_at = self.clock() + interval if interval else None
        status = self.status_line()
        while not self.stopping:
            deadline = self._next_deadline(watchdog_at)
            timeout = None if deadline is None else max(deadline - self.clock(), 0)
            for key, mask in self.selector.select(timeout):
                key.data(mask)
            self._handle_signals()
            now = self.clock()
            self.control.expire(now)
            if self.monitor_resume_at is not None and now >= self.monitor_resume_at:
                self._resume_monitor()
                continue  # drain what queued up before deciding whether the burst is over
            if self.debounce.ready(now):
                self.update("events")
            elif self.retry_at is not None and now >= self.retry_at:
                self.update("retry")
            if interval is not None and watchdog_at is not None and now >= watchdog_at:
                self.notifier.watchdog()
                watchdog_at = now + interval
            if self.status_line() != status:
                status = self.status_line()
                self.notifier.status(status)
        self.notifier.stopping()
        self.control.close()
        logger.info("stopping: %s", self.status_line(), extra=log.fields("stopping", backend=self.backend.name))
        return 0


def run(config_path: str | None, root_override: str | None) -> int:
    """The daemon's whole life; returns the exit status (78 for an invalid config)."""
    try:
        cfg = config_mod.load(config_path, root_override)
    except ConfigError as err:
        for problem in err.problems:
            print(f"crashhpd: invalid configuration: {problem}", file=sys.stderr)
        return EX_CONFIG
    log.setup(cfg.log.level)
    try:
        daemon = Daemon(cfg, config_path, root_override)
        return daemon.run()
    except ControlError as err:  # a missing group or a socket path taken: restarting cannot fix either
        logger.critical("cannot start: %s", err, extra=log.fields("control"))
        return EX_CONFIG
    except CrashhpdError as err:
        logger.critical("cannot start: %s", err, extra=log.fields("apply-failed"))
        return EX_FATAL
    except OSError as err:
        logger.critical("cannot start: %s", err, extra=log.fields("apply-failed"))
        return EX_FATAL
