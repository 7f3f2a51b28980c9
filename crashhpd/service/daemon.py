# SPDX-License-Identifier: GPL-2.0-only
"""The single-threaded event loop that turns hotplug bursts into header updates.

One selector holds every fd (the uevent monitor, the signal pipe, the control
socket and its clients); timers are deadlines the loop sleeps until
(debounce, retry, watchdog), so an idle daemon wakes only for the watchdog.
The data path is always the same: event -> debounce -> snapshot -> header
-> backend. The loop owns its state; every part it works with (monitor,
backend, control server, metrics) is built by crashhpd.wiring and handed
in, so tests can hand in their own.

An apply that takes time (a kexec load) runs beside the loop, not in it:
its fds join the selector and its deadline the timers, so events are still
counted and the control socket answered. Until it has ended no other update
starts; events keep going into the debounce, a `reconcile` request and a
SIGHUP wait for it, and the next update runs as soon as it is done.

SIGTERM while an apply runs lets it finish, for at most STOP_GRACE_S more
(or its own timeout, if sooner), and then stops: a `kexec -p` killed
half-way has wasted its work, and one still running when systemd's
TimeoutStopSec (30 s in the unit) runs out would be SIGKILLed with the
daemon, without a word in the log. A load still running at the grace's end
is killed as a timeout kills it; so is one running at a second SIGTERM or
SIGINT, for an admin who does not want to wait.
"""

import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Protocol

from .. import __version__, log
from ..backends.base import Backend, Watch
from ..backends.kernel import KernelBackend
from ..config import Config, ControlConfig
from ..elfcorehdr.build import build_valid, changes
from ..elfcorehdr.coverage import view
from ..elfcorehdr.layout import Layout
from ..errors import BackendError, ConfigError, CrashhpdError, HeaderError
from ..sysview.kernel_state import KernelState, read_kernel_state
from ..sysview.loaded_header import LoadedHeader, LoadedHeaderReader
from ..sysview.snapshot import BootConstants, read_snapshot
from .debounce import Debouncer
from .health_log import HealthLog
from .kernel_watch import KernelWatch
from .later import Later
from .metrics import Metrics
from .notify import Notifier
from .reconcile import InFlight, Outcome, reconcile
from .stats import Stats
from .status import ControlCounters, HeaderInForce, Status, Verdict
from .udev_takeover import UdevTakeover

if TYPE_CHECKING:
    from .monitor import Drained  # pyudev is imported only where the monitor is built

logger = logging.getLogger(__name__)

BATCH_S = 0.01  # during a burst the uevent socket is read at most this often
RECOVER_REASON = "recover"  # an update that reloads for a kernel that did not update its own header
STOP_GRACE_S = 20.0  # SIGTERM during an apply: how long it may still run; below the unit's TimeoutStopSec=30s

Done = Later[tuple[Outcome | None, int]]  # an update's outcome (None: it failed) and the events it took over


class EventSource(Protocol):
    """Where hotplug events come from: a fd in the selector, drained without blocking."""

    @property
    def source(self) -> str: ...

    def open(self) -> None: ...

    def fileno(self) -> int: ...

    def close(self) -> None: ...

    def drain(self) -> "Drained": ...


class Server(Protocol):
    """The control socket as the loop drives it: it registers its own fds in the shared selector."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def next_deadline(self) -> float | None: ...

    def expire(self, now: float) -> None: ...

    def reconfigure(self, cfg: ControlConfig) -> None: ...

    def counters(self) -> ControlCounters: ...


@dataclass(frozen=True, slots=True)
class Parts:
    """Everything a configuration decides, built together so that a reload swaps all of it or nothing."""

    cfg: Config
    boot: BootConstants
    backend: Backend
    layout: Layout
    monitor: EventSource
    kernel: KernelState  # of the snapshot the parts were built on
    udev: UdevTakeover
    header_reader: LoadedHeaderReader  # BTF and symbols parsed once per boot


# Builds the parts for a configuration, reusing what the previous parts already got right.
Builder = Callable[[Config, "Parts | None"], Parts]


@dataclass(slots=True)
class _Update:
    """One update from its start to its end, which an apply still running puts off."""

    reason: str
    started: float
    burst_started: float | None  # the first event of the burst it covers, for the event-to-apply latency
    events: int
    waiters: list[Done] = field(default_factory=list)
    inflight: InFlight | None = None
    watch: Watch | None = None


class Daemon:
    def __init__(self, parts: Parts, build: Builder, selector: selectors.BaseSelector, metrics: Metrics,
                 notifier: Notifier, config_path: str | None, root_override: str | None,
                 load_config: Callable[[str | None, str | None], Config],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.parts = parts
        self._build = build
        self._load_config = load_config
        self.config_path = config_path
        self.root_override = root_override
        self.selector = selector
        self.metrics = metrics
        self.notifier = notifier
        self.clock = clock
        self.stats = Stats()
        self.debounce = Debouncer(parts.cfg.debounce.quiet_ms / 1000, parts.cfg.debounce.max_delay_ms / 1000)
        self.kernel = parts.kernel  # the kexec state of the latest snapshot
        self.retry_at: float | None = None
        self.monitor_resume_at: float | None = None  # the uevent fd is out of the selector until then
        self.stopping = False
        self.signals: list[int] = []
        self.applying: _Update | None = None  # an update whose apply is still running
        self._asked: list[tuple[str, Done]] = []  # reconcile requests waiting for that apply to end
        self._reload_wanted = False  # a SIGHUP waiting for that apply to end
        self._previous_signals: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
        self._previous_wakeup_fd = -1
        self.health_log = HealthLog()
        self._revision = 0  # see revision()
        self.kernel_watch = KernelWatch(parts.cfg.root, self.selector, lambda: self.backend.name, self.stats.error,
                                        lambda: self.debounce.event(self.clock(), 0))
        self._tracebacks_logged: set[tuple[str, str, str]] = set()
        self._monitor_fd = -1
        self._wake_r, self._wake_w = socket.socketpair()
        self.control: Server | None = None

    @property
    def cfg(self) -> Config:
        return self.parts.cfg

    @property
    def backend(self) -> Backend:
        return self.parts.backend

    # --- fds in the selector ------------------------------------------------------------------

    def _open_monitor(self) -> None:
        self.parts.monitor.open()
        self._watch_monitor()

    def _watch_monitor(self) -> None:
        self._monitor_fd = self.parts.monitor.fileno()
        self._resume_monitor()

    def _close_monitor(self, monitor: EventSource) -> None:
        if self.monitor_resume_at is None:
            self.selector.unregister(self._monitor_fd)
        self.monitor_resume_at = None
        monitor.close()

    def _resume_monitor(self) -> None:
        self.monitor_resume_at = None
        self.selector.register(self._monitor_fd, selectors.EVENT_READ, self._on_uevents)

    def _install_signals(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            fd.setblocking(False)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._previous_signals[signum] = signal.signal(signum, lambda signum, _frame: self.signals.append(signum))
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wakeup)

    def _restore_signals(self) -> None:
        """As run() found them, so a process that runs a loop (a test) goes on as before."""
        self.selector.unregister(self._wake_r)
        for signum, handler in self._previous_signals.items():
            if handler is not None:  # None: not installed from Python, nothing to put back
                signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_wakeup_fd)

    def _on_wakeup(self, _mask: int) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    # --- events ----------------------------------------------------------------------------

    def _on_uevents(self, _mask: int) -> None:
        drained = self.parts.monitor.drain()
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
            self._close_monitor(self.parts.monitor)
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
                self._stop()

    def _stop(self) -> None:
        """SIGTERM or SIGINT: stop now, or once the apply in flight has ended (see the module's docstring)."""
        again = self.stopping
        self.stopping = True
        if self.applying is None:
            return
        assert self.applying.inflight is not None
        grace = 0.0 if again else STOP_GRACE_S
        self.applying.inflight.pending.stop(self.clock() + grace)
        if again:
            logger.warning("stopping now: ending the %s apply still running", self.backend.name,
                           extra=log.fields("stopping", backend=self.backend.name))
        else:
            logger.info("stopping once the %s apply still running has ended (at most %g s more; "
                        "a second SIGTERM ends it now)", self.backend.name, grace,
                        extra=log.fields("stopping", backend=self.backend.name))

    # --- the data path ----------------------------------------------------------------------

    def update(self, reason: str, waiters: Sequence[Done] = ()) -> None:
        """Reconcile now; any failure is logged and counted, and the loop goes on.

        The update ends here unless the backend's apply runs on (a kexec load):
        then it ends in _apply_step once that is done. `waiters` learn its outcome at its end.
        """
        assert self.applying is None, "one update at a time"
        update = _Update(reason, self.clock(), self.debounce.first_at, self.debounce.take(), list(waiters))
        self.stats.updates += 1
        self.stats.events_coalesced += max(update.events - 1, 0)
        self.retry_at = None
        self._settle(update, lambda: self._begin(recover=reason == RECOVER_REASON))

    def _begin(self, recover: bool = False) -> Outcome | InFlight:
        snapshot = read_snapshot(self.cfg.root, self.parts.boot, self.parts.header_reader)
        self.kernel = snapshot.kernel
        backend = self._recovery() if recover else None
        return reconcile(backend or self.backend, snapshot, self.parts.layout, self.clock)

    def _update_times(self) -> list[float | None]:
        """When each reason for an update wants one: the debounce, a retry, a recovery (None: it does not)."""
        return [self.debounce.due(), self.retry_at, self.clock() if self.kernel_watch.recover_wanted else None]

    def _recovery(self) -> Backend | None:
        """The passive backend's way to reload, when the kernel did not update its header; None: there is none."""
        return self.backend.recovery if isinstance(self.backend, KernelBackend) else None

    def _settle(self, update: _Update, step: Callable[[], Outcome | InFlight]) -> None:
        """Take the update's next step; once it has an outcome (or failed), account for it and end it."""
        outcome: Outcome | None = None
        try:
            result = step()
        except BackendError as err:
            self._failed("apply-failed", f"apply failed: {err}", update.events)
            if err.retry_after is not None:
                self.retry_at = self.clock() + err.retry_after
        except HeaderError as err:
            self._failed("header-invalid", str(err), update.events)
        except CrashhpdError as err:
            self._failed("snapshot-failed", str(err), update.events)
        except Exception as err:  # a bug costs this update, not the daemon: hotplug must still be followed
            self._internal_error("update", err)
        else:
            if isinstance(result, InFlight):
                update.inflight = result
                update.watch = Watch(self.selector, result.pending)
                self.applying = update
                return
            outcome = result
            self._succeeded(update, outcome)
        self._revision += 1
        self.health_log.observe(self.backend.name, self.backend.health(self.kernel))
        self.metrics.write_textfile(self.cfg.metrics.textfile_dir, self.status())
        for waiter in update.waiters:
            waiter.resolve((outcome, update.events))

    def _apply_step(self, now: float) -> None:
        """The apply in flight after a turn of the loop: past its deadline, or done and its update ended."""
        update = self.applying
        if update is None:
            return
        assert update.inflight is not None and update.watch is not None
        update.watch.expire_if_due(now)
        if not update.inflight.pending.done:
            return
        update.watch.close()
        self.applying = None
        self._settle(update, update.inflight.finish)

    def _look_again(self, loaded: LoadedHeader | None) -> LoadedHeader | None:
        """An apply succeeded: what it changed in the kernel, read again, for health and status to tell the truth.

        That is the kexec state, and the header the kernel holds where the snapshot read one (`loaded`).
        The snapshot's are from before the apply, and the load may be the boot's first crash kernel
        (kdump-tools failed, or was not run). A failed load needs no second look: the backend reads the
        state as it fails, and a load that left no crash kernel is retried at once, on a new snapshot.
        """
        try:
            self.kernel = read_kernel_state(self.cfg.root)
        except CrashhpdError as err:  # the next snapshot reads it again, and fails on it, named
            logger.warning("after the apply, the kexec state could not be read: %s", err,
                           extra=log.fields("snapshot-failed", backend=self.backend.name))
        return None if loaded is None else self.parts.header_reader.read()

    def _succeeded(self, update: _Update, outcome: Outcome) -> None:
        built = outcome.built
        loaded = built.snapshot.loaded_header
        if outcome.applied is not None:
            loaded = self._look_again(loaded)
        self.kernel_watch.updated(loaded, built, self.parts.layout.name,
                                  reloaded=outcome.applied is not None and self.backend.reloads,
                                  can_recover=self._recovery() is not None)
        self.stats.cpus = len(built.model.cpu_notes)
        self.stats.ram_ranges = len(built.model.ram)
        self.stats.ram_bytes = sum(end - start + 1 for start, end in built.model.ram)
        self.stats.page_offset_guessed = built.model.page_offset_guessed
        self.stats.cpus_without_notes = list(built.model.cpus_without_notes)
        self.stats.in_sync = True
        self.stats.last_duration_s = outcome.duration_s
        duration_us = int((self.clock() - update.started) * 1e6)
        reason, events = update.reason, update.events
        common = dict(events=events, ranges=self.stats.ram_ranges, cpus=self.stats.cpus,
                      duration_us=duration_us, backend=self.backend.name)
        if outcome.applied is None:
            self.stats.skipped_noop += 1
            logger.debug("%s: header unchanged, nothing to apply", reason,
                         extra=log.fields("skipped", reason=reason, **common))
            return
        self.stats.applies += 1
        latency = None if update.burst_started is None else self.clock() - update.burst_started
        self.metrics.applied(duration_us / 1e6, latency)
        self.stats.last_apply_reason = reason
        self.stats.last_changes = outcome.changes
        logger.info("applied generation %d (%s, %d events): %s", outcome.applied.generation, reason, events,
                    "; ".join(outcome.changes) or "no visible change",
                    extra=log.fields("applied", generation=outcome.applied.generation, reason=reason, **common))

    def _internal_error(self, doing: str, err: Exception) -> None:
        """Counted as `internal`; the traceback is logged the first time each kind of failure happens."""
        self.stats.in_sync = False
        self.stats.error("internal", f"internal error during {doing}: {type(err).__name__}: {err}")
        where = (doing, type(err).__name__, str(err))
        if where in self._tracebacks_logged:
            logger.error("internal error during %s again: %s: %s", doing, type(err).__name__, err,
                         extra=log.fields("internal", backend=self.backend.name))
            return
        self._tracebacks_logged.add(where)
        logger.exception("internal error during %s; crashhpd goes on", doing,
                         extra=log.fields("internal", backend=self.backend.name))

    def _failed(self, kind: str, message: str, events: int) -> None:
        self.stats.in_sync = False
        self.stats.error(kind, message)
        logger.error("%s", message, extra=log.fields(kind, events=events, backend=self.backend.name))

    # --- configuration -------------------------------------------------------------------

    def reload_config(self) -> None:
        """SIGHUP: build everything the new config decides, then swap; on any failure keep all that runs.

        Never while an apply runs: its backend must not be swapped under it. The reload then waits for its end.
        """
        if self.applying is not None:
            if not self._reload_wanted:
                logger.info("configuration reload waits for the %s apply still running", self.backend.name,
                            extra=log.fields("reload", backend=self.backend.name))
            self._reload_wanted = True
            return
        self._reload_wanted = False
        self.notifier.reloading()
        try:
            new_cfg = self._load_config(self.config_path, self.root_override)
        except ConfigError as err:
            for problem in err.problems:
                logger.error("config not reloaded: %s", problem, extra=log.fields("config-invalid"))
            self.notifier.ready(self.status_line())
            return
        try:
            new = self._build(new_cfg, self.parts)
            self._prepare(new)
        except CrashhpdError as err:
            logger.error("config not reloaded, keeping the running one: %s", err, extra=log.fields("config-invalid"))
            self.notifier.ready(self.status_line())
            return
        except Exception as err:  # as in update(): a bug costs the reload, not the daemon
            self._internal_error("reload", err)
            self.notifier.ready(self.status_line())
            return
        self._swap(new)
        logger.info("configuration reloaded", extra=log.fields("reload", backend=self.backend.name))
        reloaded: Done = Later()
        reloaded.on_done(lambda _: self.notifier.ready(self.status_line()))  # after the reload's apply
        self.update("reload", [reloaded])

    def _prepare(self, new: Parts) -> None:
        """What can fail about the new parts, done before any is swapped in: a new uevent socket opened, the
        control socket moved. On failure whatever was done is undone, and the running parts stay."""
        old = self.parts
        opened = new.monitor is not old.monitor
        if opened:
            try:
                new.monitor.open()
            except OSError as err:
                raise CrashhpdError(f"cannot open the uevent monitor: {err.strerror or err}") from None
        if new.cfg.control != old.cfg.control and self.control is not None:
            try:
                self.control.reconfigure(new.cfg.control)  # puts the old socket back when the new one fails
            except CrashhpdError as err:
                logger.error("control socket not changed: %s", err, extra=log.fields("control"))
                if opened:
                    new.monitor.close()
                raise

    def _swap(self, new: Parts) -> None:
        """Swap in parts _prepare() readied: nothing here can fail."""
        old = self.parts
        log.setup(new.cfg.log.level)
        self.debounce.quiet = new.cfg.debounce.quiet_ms / 1000
        self.debounce.max_delay = new.cfg.debounce.max_delay_ms / 1000
        if new.backend is not old.backend:
            self.health_log.forget()
        self.parts = new
        self.kernel = new.kernel
        self._revision += 1
        if new.monitor is not old.monitor:
            self._close_monitor(old.monitor)
            self._watch_monitor()
        if new.udev is not old.udev:
            old.udev.release("the configuration changed")
        new.udev.sync(new.backend.name)

    # --- what the control requests ask -------------------------------------------------------

    def status(self) -> Status:
        stats = self.stats
        backend = self.backend
        state = backend.state()
        health = backend.health(self.kernel)
        capacity = backend.capacity(self.kernel)
        header_bytes = state.header_size if state else 0
        control = self.control.counters() if self.control is not None else ControlCounters()
        coverage = self.kernel_watch.view.coverage
        return Status(
            version=__version__,
            pid=os.getpid(),
            started_at=stats.started_at,
            uptime_s=time.time() - stats.started_at,
            backend=backend.name,
            backend_ok=health.ok,
            backend_detail=health.detail,
            layout=self.parts.layout.name,
            generation=state.generation if state else 0,
            in_sync=stats.in_sync,
            events_received=stats.events_received,
            events_coalesced=stats.events_coalesced,
            updates=stats.updates,
            applies=stats.applies,
            skipped_noop=stats.skipped_noop,
            rescans=stats.rescans,
            errors=dict(stats.errors),
            pending_events=self.debounce.pending,
            next_update_in_s=self._next_update_in(),
            cpus=stats.cpus,
            ram_ranges=stats.ram_ranges,
            ram_bytes=stats.ram_bytes,
            capacity_bytes=capacity,
            header_bytes=header_bytes,
            fill_ratio=header_bytes / capacity if capacity else None,
            crash_hotplug_cpu=self.kernel.crash_hotplug_cpu,
            crash_hotplug_memory=self.kernel.crash_hotplug_memory,
            last_apply_at=state.applied_at if state else None,
            last_apply_reason=stats.last_apply_reason,
            last_changes=list(stats.last_changes),
            last_update_duration_s=stats.last_duration_s,
            last_error=stats.last_error,
            last_error_at=stats.last_error_at,
            applying=self.applying is not None,
            apply_running_s=None if self.applying is None else self.clock() - self.applying.started,
            control_clients=control.clients,
            control_refused=control.refused,
            control_busy=control.busy,
            log_suppressed=control.log_suppressed,
            udev_rule_inert=self.parts.udev.verdict.inert,
            udev_rule_detail=self.parts.udev.verdict.detail,
            crash_kernel_loaded=self.kernel.crash_loaded,
            kernel_header_readable=self.kernel_watch.view.readable,
            kernel_header_unreadable_reason=self.kernel_watch.view.unreadable_reason,
            kernel_header_sha256=coverage.sha256 if coverage else None,
            kernel_segment_bytes=self.kernel_watch.view.segment_bytes,
            kernel_header_in_sync=coverage.in_sync if coverage else None,
            uncovered_ram_bytes=coverage.uncovered_ram_bytes if coverage else None,
            missing_cpu_notes=coverage.missing_cpu_notes if coverage else None,
            stale_ram_bytes=coverage.stale_ram_bytes if coverage else None,
            direct_map_base_known=not stats.page_offset_guessed,
            cpus_without_notes=list(stats.cpus_without_notes),
            kernel_log_watched=self.kernel_watch.log_watched,
            kernel_log_complaint=self.kernel_watch.complaint,
        )

    def revision(self) -> int:
        """Changes whenever what `header` and `verify` answer may have: an update ended, a reload swapped parts."""
        return self._revision

    def header_in_force(self) -> HeaderInForce | None:
        data = self.backend.loaded(self.kernel)
        applied = self.backend.state()
        if data is None or applied is None:
            return None
        return HeaderInForce(data, applied, self.backend.capacity(self.kernel))

    def verify(self) -> Verdict:
        """What an update would do now, without doing it: catches drift that no event announced.

        Against the header the kernel really holds whenever it can be read, else the backend's record of it.
        """
        built = build_valid(read_snapshot(self.cfg.root, self.parts.boot, self.parts.header_reader),
                            self.parts.layout)
        state = self.backend.state()
        generation = state.generation if state else 0
        kernel = view(built.snapshot.loaded_header, built)
        if kernel.coverage is not None:
            return Verdict(kernel.coverage.in_sync, generation, kernel.coverage.changes, built, "kernel")
        loaded = self.backend.loaded(built.snapshot.kernel)
        in_sync = loaded == built.data
        return Verdict(in_sync, generation, [] if in_sync else changes(loaded, built), built, "model")

    def kernel_header(self) -> LoadedHeader:
        """The header the kernel holds, read now (or why it cannot be)."""
        return self.parts.header_reader.read()

    def reconcile_now(self, reason: str) -> Done:
        """The update a burst would trigger, now: pending events are taken over, the debounce skipped.

        While an apply runs, the update runs right after it, on what the system is then; either way
        the result comes once the update has ended.
        """
        done: Done = Later()
        if self.stopping:
            done.fail(CrashhpdError("crashhpd is stopping; no update was run"))
        elif self.applying is not None:
            self._asked.append((reason, done))
        else:
            self.update(reason, [done])
        return done

    def metrics_text(self) -> str:
        return self.metrics.text(self.status())

    def _next_update_in(self) -> float | None:
        due = [t for t in self._update_times() if t is not None]
        return max(min(due) - self.clock(), 0.0) if due else None

    # --- the loop ------------------------------------------------------------------------------

    def status_line(self) -> str:
        state = self.backend.state()
        generation = state.generation if state else 0
        # no event count here: STATUS= goes to PID 1 on every change, and a storm must not become a datagram storm
        activity = "update pending" if self.debounce.due() is not None else "idle"
        if self.stats.last_error and not self.stats.in_sync:
            activity = f"error: {self.stats.last_error}"
        if self.applying is not None:
            activity = "reloading"
        return (f"generation {generation}, {self.stats.cpus} CPUs, {self.stats.ram_ranges} ranges, "
                f"{self.backend.name}, {activity}")

    def _next_deadline(self, watchdog_at: float | None) -> float | None:
        control = self.control.next_deadline() if self.control is not None else None
        candidates = [watchdog_at, self.monitor_resume_at, control]
        if self.applying is not None:  # the debounce and a retry wait for its end: they must not wake the loop
            assert self.applying.inflight is not None
            candidates.append(self.applying.inflight.pending.deadline())
        elif not self.stopping:
            candidates += self._update_times()
        due = [t for t in candidates if t is not None]
        return min(due) if due else None

    def _next_update(self, now: float) -> None:
        """With no apply in flight: what waited for one first, then the debounce, then a retry."""
        if self._reload_wanted:
            self.reload_config()
        elif self._asked:
            asked, self._asked = self._asked, []
            self.update(asked[0][0], [done for _, done in asked])
        elif self.debounce.ready(now):
            self.update("events")
        elif self.kernel_watch.recover_wanted:
            self.kernel_watch.recover_wanted = False
            self.update(RECOVER_REASON)
        elif self.retry_at is not None and now >= self.retry_at:
            self.update("retry")

    def _ready(self) -> None:
        if self.stopping:
            return
        self.parts.udev.sync(self.backend.name)  # crashhpd does the distribution rule's job from now on
        self.notifier.ready(self.status_line())
        logger.info("ready: %s", self.status_line(), extra=log.fields("ready", backend=self.backend.name))

    def run(self, control: Server | None) -> int:
        """Serve until SIGTERM; `control` is opened here, after the monitor, and closed on the way out."""
        self.control = control
        self._install_signals()
        try:
            return self._serve(control)
        finally:
            self._restore_signals()

    def _serve(self, control: Server | None) -> int:
        self._open_monitor()  # before the first snapshot, so nothing happens unseen in between
        self.kernel_watch.open()
        if control is not None:
            control.open()
        logger.info("crashhpd started: backend %s, layout %s, root %s, uevents from %s, configuration %s",
                    self.backend.name, self.parts.layout.name, self.cfg.root, self.parts.monitor.source,
                    ", ".join(self.cfg.sources) or "the embedded defaults",
                    extra=log.fields("started", backend=self.backend.name))
        interval = self.notifier.watchdog_interval()
        watchdog_at = self.clock() + interval if interval else None
        started: Done = Later()
        started.on_done(lambda _: self._ready())  # READY=1 once the start-up update has ended, a load included
        self.update("startup", [started])
        status = self.status_line()
        while True:
            deadline = self._next_deadline(watchdog_at)
            timeout = None if deadline is None else max(deadline - self.clock(), 0)
            for key, mask in self.selector.select(timeout):
                key.data(mask)
            self._handle_signals()
            now = self.clock()
            if control is not None:
                control.expire(now)
            self._apply_step(now)
            if self.stopping and self.applying is None:
                break
            if self.monitor_resume_at is not None and now >= self.monitor_resume_at:
                self._resume_monitor()
                continue  # drain what queued up before deciding whether the burst is over
            if self.applying is None and not self.stopping:
                self._next_update(now)
            if interval is not None and watchdog_at is not None and now >= watchdog_at:
                self.notifier.watchdog()
                watchdog_at = now + interval
            if self.status_line() != status:
                status = self.status_line()
                self.notifier.status(status)
        for _, done in self._asked:
            done.fail(CrashhpdError("crashhpd is stopping; no update was run"))
        self._asked = []
        self.notifier.stopping()
        self.kernel_watch.close()
        self.parts.udev.release("crashhpd stopped")
        if control is not None:
            control.close()
        logger.info("stopping: %s", self.status_line(), extra=log.fields("stopping", backend=self.backend.name))
        return 0
