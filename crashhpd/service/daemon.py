# SPDX-License-Identifier: GPL-2.0-only
"""The single-threaded event loop: fds, timers, signals and the configuration swap.

One selector holds every fd (the uevent monitor, the signal pipe, the control
socket and its clients, a kexec child's pipes); timers are deadlines the loop
sleeps until (debounce, retry, watchdog), so an idle daemon wakes only for the
watchdog. What an update does is updater.py's; every part is built by
crashhpd.wiring and handed in.
"""

import logging
import selectors
import signal
import socket
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Protocol

from .. import log
from ..backends.base import Backend
from ..config import Config, ControlConfig
from ..errors import ConfigError, CrashhpdError
from ..sysview.loaded_header import LoadedHeader
from .debounce import Debouncer
from .later import Later
from .metrics import Metrics
from .notify import Notifier
from .parts import Builder, Drained, EventSource, Parts
from .status import ControlCounters, HeaderInForce, Status, Verdict
from .updater import Done, LoopFacts, Updater

logger = logging.getLogger(__name__)

BATCH_S = 0.01  # during a burst the uevent socket is read at most this often
STOP_GRACE_S = 20.0  # SIGTERM during an apply: how long it may still run; below the unit's TimeoutStopSec=30s


class Server(Protocol):
    """The control socket as the loop drives it: it registers its own fds in the shared selector."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def next_deadline(self) -> float | None: ...

    def expire(self, now: float) -> None: ...

    def reconfigure(self, cfg: ControlConfig) -> None: ...

    def counters(self) -> ControlCounters: ...


class Daemon:
    """The loop and what it owns. While an apply runs (a kexec load) no other update starts: events keep
    going into the debounce, and a `reconcile` request or a SIGHUP waits for its end."""

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
        self.debounce = Debouncer(parts.cfg.debounce.quiet_ms / 1000, parts.cfg.debounce.max_delay_ms / 1000)
        self.updater = Updater(parts, selector, metrics, check_soon=lambda: self.debounce.event(self.clock(), 0),
                               ended=self._update_ended, clock=clock)
        self.monitor_resume_at: float | None = None  # the uevent fd is out of the selector until then
        self.stopping = False
        self.signals: list[int] = []
        self._asked: list[tuple[str, Done]] = []  # reconcile requests waiting for the apply in flight to end
        self._reload_wanted = False  # a SIGHUP waiting for that apply to end
        self._previous_signals: dict[int, Callable[[int, FrameType | None], object] | int | None] = {}
        self._previous_wakeup_fd = -1
        self._monitor_fd = -1
        self._ready_said = False  # READY=1 sent: from then on the udev takeover follows every update
        self._grace_seen: float | None = None  # the end of an unhealthy backend's grace, acted on
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
        try:
            drained = self.parts.monitor.drain()
        except Exception as err:  # a malformed uevent (libudev's EINVAL is pyudev's ValueError), or a bug:
            # the snapshot, not the event stream, is the truth, so it costs a rescan, never the daemon
            drained = Drained(lost=True, broken=True, error=f"unreadable uevent ({type(err).__name__}: {err})")
        now = self.clock()
        if drained.events:
            self.updater.counters.events_received += drained.events
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
            self.updater.counters.rescans += 1
            self.updater.counters.error("events-lost", drained.error or "uevents lost")
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
        """SIGTERM or SIGINT: stop now, or once the apply in flight has ended.

        The apply may finish for at most STOP_GRACE_S, below the unit's TimeoutStopSec, so systemd never
        SIGKILLs a load silently; a second SIGTERM ends it now.
        """
        again = self.stopping
        self.stopping = True
        if self.updater.applying is None:
            return
        grace = 0.0 if again else STOP_GRACE_S
        self.updater.stop_apply(self.clock() + grace)
        if again:
            logger.warning("stopping now: ending the %s apply still running", self.backend.name,
                           extra=log.fields("stopping", backend=self.backend.name))
        else:
            logger.info("stopping once the %s apply still running has ended (at most %g s more; "
                        "a second SIGTERM ends it now)", self.backend.name, grace,
                        extra=log.fields("stopping", backend=self.backend.name))

    # --- updates ------------------------------------------------------------------------------

    def update(self, reason: str, waiters: Sequence[Done] = ()) -> None:
        """Run an update now on the events the debounce holds (see Updater.start)."""
        burst_started = self.debounce.first_at
        # each update may cost a reload (and a window without a crash kernel): pace a storm
        self.debounce.paced = self.cfg.debounce.pace and self.backend.capabilities.reloads
        self.updater.start(reason, self.debounce.take(self.clock()), burst_started, waiters)

    def _update_ended(self) -> None:
        if self._ready_said:  # from READY on, the takeover follows what crashhpd can keep current
            self._sync_udev()
        self.metrics.write_textfile(self.cfg.metrics.textfile_dir, self.status())

    def _sync_udev(self) -> None:
        self.parts.udev.sync(self.backend, self.updater.not_keeping(self.clock()))

    def _update_times(self) -> list[float | None]:
        """When each reason for an update wants one: the debounce, then the updater's (a retry, a recovery)."""
        return [self.debounce.due(), *self.updater.due()]

    # --- configuration -------------------------------------------------------------------

    def reload_config(self) -> None:
        """SIGHUP: build everything the new config decides, then swap; on any failure keep all that runs.

        Never while an apply runs: its backend must not be swapped under it. The reload then waits for its end.
        """
        if self.updater.applying is not None:
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
            self.updater.internal_error("reload", err)
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
        self.parts = new
        self.updater.swap(new)
        if new.monitor is not old.monitor:
            self._close_monitor(old.monitor)
            self._watch_monitor()
        if new.udev is not old.udev:
            old.udev.release("the configuration changed")
        self._sync_udev()

    # --- what the control requests ask -------------------------------------------------------

    def status(self) -> Status:
        udev = self.parts.udev.verdict
        control = self.control.counters() if self.control is not None else ControlCounters()
        return self.updater.status(LoopFacts(self.debounce.pending, self._next_update_in(), control,
                                             udev.inert, udev.detail))

    def revision(self) -> int:
        """Changes whenever what `header` and `verify` answer may have: an update ended, a reload swapped parts."""
        return self.updater.revision

    def header_in_force(self) -> HeaderInForce | None:
        return self.updater.header_in_force()

    def verify(self) -> Verdict:
        return self.updater.verify()

    def kernel_header(self) -> LoadedHeader:
        return self.updater.kernel_header()

    def reconcile_now(self, reason: str) -> Done:
        """The update a burst would trigger, now: pending events are taken over, the debounce skipped.

        While an apply runs, the update runs right after it, on what the system is then; either way
        the result comes once the update has ended.
        """
        done: Done = Later()
        if self.stopping:
            done.fail(CrashhpdError("crashhpd is stopping; no update was run"))
        elif self.updater.applying is not None:
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
        counters, built = self.updater.counters, self.updater.built
        # no event count here: STATUS= goes to PID 1 on every change, and a storm must not become a datagram storm
        activity = "update pending" if self.debounce.due() is not None else "idle"
        if counters.last_error and not counters.in_sync:
            activity = f"error: {counters.last_error}"
        if self.updater.applying is not None:
            activity = "reloading"
        cpus, ranges = (len(built.model.cpu_notes), len(built.model.ram)) if built is not None else (0, 0)
        return f"generation {generation}, {cpus} CPUs, {ranges} ranges, {self.backend.name}, {activity}"

    def _next_deadline(self, watchdog_at: float | None) -> float | None:
        control = self.control.next_deadline() if self.control is not None else None
        candidates = [watchdog_at, self.monitor_resume_at, control]
        applying = self.updater.applying
        if applying is not None:  # the debounce and a retry wait for its end: they must not wake the loop
            assert applying.inflight is not None
            candidates.append(applying.inflight.pending.deadline())
        elif not self.stopping:
            candidates += self._update_times()
            candidates.append(self._grace_due())
        due = [t for t in candidates if t is not None]
        return min(due) if due else None

    def _grace_due(self) -> float | None:
        """The end of an unhealthy backend's grace, until it has been acted on."""
        grace = self.updater.give_back_at()
        return grace if self._ready_said and grace != self._grace_seen else None

    def _next_update(self, now: float) -> None:
        """With no apply in flight: what waited for one first, then the debounce, then a retry."""
        if self._reload_wanted:
            self.reload_config()
        elif self._asked:
            asked, self._asked = self._asked, []
            self.update(asked[0][0], [done for _, done in asked])
        elif self.debounce.ready(now):
            self.update("events")
        elif (reason := self.updater.take_due(now)) is not None:
            self.update(reason)

    def _ready(self) -> None:
        if self.stopping:
            return
        self._ready_said = True
        self._sync_udev()  # crashhpd does the distribution rule's job from now on, while it can
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
        self.parts.udev.clear_leftovers()  # of a daemon killed before this one, before deciding anew
        self.updater.kernel_watch.open()
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
            self.updater.step(now)
            if self.stopping and self.updater.applying is None:
                break
            if self.monitor_resume_at is not None and now >= self.monitor_resume_at:
                self._resume_monitor()
                continue  # drain what queued up before deciding whether the burst is over
            if self.updater.applying is None and not self.stopping:
                self._next_update(now)
                grace = self._grace_due()
                if grace is not None and now >= grace:
                    self._grace_seen = grace
                    self._sync_udev()
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
        self.updater.kernel_watch.close()
        self.parts.udev.release("crashhpd stopped")
        if control is not None:
            control.close()
        logger.info("stopping: %s", self.status_line(), extra=log.fields("stopping", backend=self.backend.name))
        return 0
