# SPDX-License-Identifier: GPL-2.0-only
"""An update's whole life, and the one place `Status` is assembled.

The loop (daemon.py) decides when an update runs; this decides what it does:
snapshot, reconcile (the kernel's header compared once), the look after an
apply (the kexec state and the kernel's header read once more), the kernel
watch, health, and what the admin's queries see. The kexec state is read here
and held here only: with every snapshot, and once after every reload.
"""

import logging
import os
import selectors
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from .. import __version__, log
from ..backends.base import Backend, Backoff, Watch
from ..backends.kexec_cmdline import missing, needed
from ..elfcorehdr.build import Built, build_valid, changes
from ..elfcorehdr.coverage import KernelView, view
from ..elfcorehdr.layout import same_program_headers
from ..errors import BackendError, CrashhpdError, HeaderError
from ..sysview.headroom import Headroom, headroom, newly_short
from ..sysview.kdump_initrd import InitrdCheck, KdumpInitrd
from ..sysview.kernel_state import KernelState, read_kernel_state
from ..sysview.loaded_header import LoadedHeader
from ..sysview.ranges import total_bytes_since
from ..sysview.snapshot import Snapshot, read_snapshot
from .health_log import HealthLog
from .kernel_watch import KernelWatch
from .later import Later
from .metrics import Metrics
from .parts import Parts
from .protection import NOT_JUDGED, Facts, Protection, judge
from .reconcile import InFlight, Outcome, reconcile
from .status import ControlCounters, Counters, HeaderInForce, ReadinessItem, Status, Verdict

logger = logging.getLogger(__name__)

RECOVER_REASON = "recover"  # an update that reloads for a kernel that did not update its own header
GIVE_BACK_AFTER_S = 60.0  # an unhealthy backend gets this long to recover before the distribution's rule is back

Done = Later[tuple[Outcome | None, int]]  # an update's outcome (None: it failed) and the events it took over


@dataclass(slots=True)
class _Update:
    """One update from its start to its end, which an apply still running puts off."""

    reason: str
    started: float
    burst_started: float | None  # the first event of the burst it covers, for the event-to-apply latency
    events: int
    backend: Backend | None = None  # what it applies through: the running backend, or its recovery
    waiters: list[Done] = field(default_factory=list)
    inflight: InFlight | None = None
    watch: Watch | None = None


@dataclass(frozen=True, slots=True)
class LoopFacts:
    """What only the loop knows, for status: its debounce, its next deadline, the control socket, the rule."""

    pending_events: int
    next_update_in_s: float | None
    control: ControlCounters
    udev_rule_inert: bool
    udev_rule_detail: str


class Updater:
    """`check_soon` asks the loop for an update after its quiet window (the kernel said its header is stale);
    `ended` is called as each update ends, before its waiters learn how."""

    def __init__(self, parts: Parts, selector: selectors.BaseSelector, metrics: Metrics,
                 check_soon: Callable[[], None], ended: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.parts = parts
        self.counters = Counters()
        self.kernel: KernelState = read_kernel_state(parts.cfg.root)  # of the latest snapshot, or after a reload
        self.built: Built | None = None  # of the last update that succeeded
        self._ram_bytes = 0  # the RAM it covers (0 before the first: total_bytes_since() sums from it)
        self._system_ram_bytes = 0  # the System RAM of its snapshot
        self.retry_at: float | None = None
        self._retry_reason = "retry"  # what the retry is: a recovery is retried as a recovery
        self._recover_backoff = Backoff()  # a recovery that left the kernel's header stale is tried again
        self._failing: str | None = None  # the kind of failure of this spell, logged once
        self.applying: _Update | None = None  # an update whose apply is still running
        self.revision = 0  # changes whenever what `header` and `verify` answer may have
        self.protection: Protection = NOT_JUDGED  # judged at the end of every update
        self.unhealthy_since: float | None = None  # the backend's health, judged at the end of every update
        self.kernel_watch = KernelWatch(parts.cfg.root, selector, lambda: self.backend.name, self.counters.error,
                                        check_soon)
        self._selector = selector
        self._metrics = metrics
        self._ended = ended
        self._clock = clock
        self._health_log = HealthLog()
        self._tracebacks_logged: set[tuple[str, str, str]] = set()
        self._cmdline: tuple[str | None, list[str]] = (None, [])  # the crash kernel's, read back, and what it lacks
        self._initrd_reader = KdumpInitrd(parts.cfg.root)
        self._initrd = InitrdCheck()  # what the kdump initramfs lacks of what the host's devices need
        self._headroom = Headroom(None, None, "not judged yet")  # the reservation against the measured need

    @property
    def backend(self) -> Backend:
        return self.parts.backend

    def swap(self, new: Parts) -> None:
        """A reload's new parts (never while an apply runs); the update after it reads the new system."""
        if new.backend is not self.parts.backend:
            self._health_log.forget()
        self.parts = new
        self.revision += 1

    # --- an update's life ---------------------------------------------------------------------------

    def start(self, reason: str, events: int, burst_started: float | None, waiters: Sequence[Done] = ()) -> None:
        """Reconcile now; any failure is logged and counted, and the loop goes on.

        The update ends here unless the backend's apply runs on (a kexec load): then it ends in step()
        once that is done. `waiters` learn its outcome at its end.
        """
        assert self.applying is None, "one update at a time"
        update = _Update(reason, self._clock(), burst_started, events, waiters=list(waiters))
        self.counters.updates += 1
        self.counters.events_coalesced += max(events - 1, 0)
        self.retry_at = None
        recovery = self.backend.recovery if reason == RECOVER_REASON else None
        update.backend = recovery or self.backend
        self._settle(update, lambda: self._begin(update.backend or self.backend))

    def step(self, now: float) -> None:
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
        inflight = update.inflight
        self._settle(update, lambda: inflight.finish(self._read_kernel_state()))

    def stop_apply(self, by: float) -> None:
        """The daemon is stopping: the apply in flight ends by `by` at the latest."""
        assert self.applying is not None and self.applying.inflight is not None
        self.applying.inflight.pending.stop(by)

    def due(self) -> list[float | None]:
        """When a retry and a recovery want an update (None: they do not); the debounce is the loop's."""
        return [self.retry_at, self._clock() if self.kernel_watch.recover_wanted else None]

    def take_due(self, now: float) -> str | None:
        """The reason for an update this wants now, taken: a recovery, then a retry; None: none is due."""
        if self.kernel_watch.recover_wanted:
            self.kernel_watch.recover_wanted = False
            return RECOVER_REASON
        if self.retry_at is not None and now >= self.retry_at:
            return self._retry_reason
        return None

    def _begin(self, backend: Backend) -> Outcome | InFlight:
        snapshot = read_snapshot(self.parts.cfg.root, self.parts.boot, self.parts.header_reader)
        self.kernel = snapshot.kernel
        return reconcile(backend, snapshot, self.parts.layout, self._clock, (self.built, self.kernel_watch.view))

    def _read_kernel_state(self) -> KernelState:
        """The kexec state once a load ended: it may have loaded the boot's first crash kernel, or freed the
        old one and failed. Unreadable, the snapshot's stays (and the next snapshot fails on it, named)."""
        try:
            self.kernel = read_kernel_state(self.parts.cfg.root)
        except CrashhpdError as err:
            logger.warning("after the apply, the kexec state could not be read: %s", err,
                           extra=log.fields("snapshot-failed", backend=self.backend.name))
        return self.kernel

    def _settle(self, update: _Update, step: Callable[[], Outcome | InFlight]) -> None:
        """Take the update's next step; once it has an outcome (or failed), account for it and end it."""
        outcome: Outcome | None = None
        try:
            result = step()
        except BackendError as err:
            self._failed("apply-failed", f"apply failed: {err}", update.events)
            if err.retry_after is not None:
                self.retry_at = self._clock() + err.retry_after
                self._retry_reason = RECOVER_REASON if update.reason == RECOVER_REASON else "retry"
        except HeaderError as err:
            self._failed("header-invalid", str(err), update.events)
        except CrashhpdError as err:
            self._failed("snapshot-failed", str(err), update.events)
        except Exception as err:  # a bug costs this update, not the daemon: hotplug must still be followed
            self.internal_error("update", err)
        else:
            if isinstance(result, InFlight):
                update.inflight = result
                update.watch = Watch(self._selector, result.pending)
                self.applying = update
                return
            outcome = result
            self._succeeded(update, outcome)
        self.revision += 1
        health = self.backend.health(self.kernel)
        self._health_log.observe(self.backend.name, health)
        self.unhealthy_since = None if health.ok else self.unhealthy_since or self._clock()
        self.protection = judge(Facts(
            self.backend.name, self.backend.capabilities.keeps_kernel_header, self.kernel, health,
            self.kernel_watch.view, self.counters.in_sync, self.counters.last_error, self._cmdline[0],
            tuple(self._cmdline[1]), self.parts.cfg.kexec.complete_cmdline, initrd=self._initrd,
            headroom=self._headroom))
        self._ended()
        for waiter in update.waiters:
            waiter.resolve((outcome, update.events))

    def _look_again(self, outcome: Outcome, backend: Backend) -> tuple[LoadedHeader | None, KernelView]:
        """The kernel's header after the update, and its view: read again after a reload (which replaced
        it), else the one the snapshot read and reconcile compared."""
        loaded = outcome.built.snapshot.loaded_header
        if outcome.applied is None or not backend.capabilities.reloads or loaded is None:
            return loaded, outcome.kernel
        loaded = self.parts.header_reader.read()
        return loaded, view(loaded, outcome.built, outcome.kernel)

    def _succeeded(self, update: _Update, outcome: Outcome) -> None:
        built = outcome.built
        applied = outcome.applied is not None
        through = update.backend or self.backend
        loaded, kernel = self._look_again(outcome, through)
        if update.reason == RECOVER_REASON:
            self._after_recovery(kernel)
        self._note_cmdline(loaded, built.snapshot.kernel, update.reason)
        self._note_initrd(loaded, built.snapshot.virtio_mem_devices)
        # status and the headroom ask at every update: summed once per build (a reused build has the same RAM),
        # from the last build's sums where the ranges moved (no build yet: no ranges, 0 bytes)
        if self.built is None or built.model is not self.built.model:
            last = self.built
            self._ram_bytes = total_bytes_since(last.model.ram if last else (), self._ram_bytes, built.model.ram)
            self._system_ram_bytes = total_bytes_since(last.snapshot.ram if last else (), self._system_ram_bytes,
                                                       built.snapshot.ram)
        self._note_headroom(loaded, built.snapshot)
        self._failing = None
        self.kernel_watch.updated(loaded, kernel, built, self.parts.layout.name,
                                  reloaded=applied and through.capabilities.reloads,
                                  keeps_header=self.backend.capabilities.keeps_kernel_header,
                                  can_recover=self.backend.recovery is not None)
        self.built = built
        counters = self.counters
        counters.in_sync = True
        counters.last_update_duration_s = outcome.duration_s
        duration_us = int((self._clock() - update.started) * 1e6)
        reason, events = update.reason, update.events
        common = dict(events=events, ranges=len(built.model.ram), cpus=len(built.model.cpu_notes),
                      duration_us=duration_us, backend=self.backend.name)
        if outcome.applied is None:
            counters.skipped_noop += 1
            logger.debug("%s: header unchanged, nothing to apply", reason,
                         extra=log.fields("skipped", reason=reason, **common))
            return
        counters.applies += 1
        latency = None if update.burst_started is None else self._clock() - update.burst_started
        self._metrics.applied(duration_us / 1e6, latency)
        counters.last_apply_reason = reason
        counters.last_changes = outcome.changes
        logger.info("applied generation %d (%s, %d events): %s", outcome.applied.generation, reason, events,
                    "; ".join(outcome.changes) or "no visible change",
                    extra=log.fields("applied", generation=outcome.applied.generation, reason=reason, **common))

    def _note_cmdline(self, loaded: LoadedHeader | None, kernel: KernelState, reason: str) -> None:
        """The crash kernel's command line as read after the update, said once per command line where it lacks
        what the host needs; the passive backend's recovery reloads once for it (kexec_cmdline.py)."""
        text = loaded.cmdline.text if loaded is not None else None
        lacking = missing(text, needed(kernel.acpi_memory_devices))
        if lacking and (text, lacking) != self._cmdline:
            logger.warning("the crash kernel's command line lacks %s, which this host needs (it can hot-add memory "
                           "through ACPI): a dump would lose hot-added memory. Loaded: %s", " ".join(lacking), text,
                           extra=log.fields("crash-cmdline", missing=" ".join(lacking), backend=self.backend.name))
        self._cmdline = (text, lacking)
        recovery = self.backend.recovery
        if lacking and recovery is not None and reason != RECOVER_REASON and recovery.load_changed(kernel):
            self.kernel_watch.recover_wanted = True

    def _note_initrd(self, loaded: LoadedHeader | None, virtio_mem_devices: int) -> None:
        """The kdump initramfs judged after the update (the loaded one, read again only when it changed), and
        said once while it stays short of a module the host's devices need."""
        found = self._initrd_reader.check(loaded, virtio_mem_devices)
        if found.missing and found.missing != self._initrd.missing:
            logger.warning("the kdump initramfs lacks %s, which this host's virtio-mem devices need: a dump could "
                           "not tell unplugged memory from plugged (read from %s)", " ".join(found.missing),
                           found.source, extra=log.fields("kdump-initrd", missing=" ".join(found.missing)))
        self._initrd = found

    def _note_headroom(self, loaded: LoadedHeader | None, snapshot: Snapshot) -> None:
        """The crash kernel's reservation against the measured need for this RAM and the image loaded after the
        update; said once per spell of being short (a hot-add can start one: the reservation never grows)."""
        segments = loaded.segments if loaded is not None and loaded.readable else None
        found = headroom(self._system_ram_bytes, segments, snapshot.crash_kernel, snapshot.crash_cma,
                         self.kernel.crash_size)
        if newly_short(self._headroom, found):
            logger.warning("the crash kernel's reservation is short: %d MiB reserved, %d MiB needed (%s); a dump "
                           "taken now would not be saved", (found.reserved_bytes or 0) >> 20,
                           (found.needed_bytes or 0) >> 20, found.reason,
                           extra=log.fields("crash-headroom", reserved=found.reserved_bytes,
                                            needed=found.needed_bytes))
        self._headroom = found

    def _after_recovery(self, kernel: KernelView) -> None:
        """A recovery that left the kernel's header stale is tried again, backed off, while it stays so."""
        if kernel.coverage is not None and not kernel.coverage.in_sync:
            self.retry_at = self._clock() + self._recover_backoff.take()
            self._retry_reason = RECOVER_REASON
        else:
            self._recover_backoff.reset()

    def internal_error(self, doing: str, err: Exception) -> None:
        """Counted as `internal`; the traceback is logged the first time each kind of failure happens."""
        self.counters.in_sync = False
        self.counters.error("internal", f"internal error during {doing}: {type(err).__name__}: {err}")
        where = (doing, type(err).__name__, str(err))
        if where in self._tracebacks_logged:
            logger.error("internal error during %s again: %s: %s", doing, type(err).__name__, err,
                         extra=log.fields("internal", backend=self.backend.name))
            return
        self._tracebacks_logged.add(where)
        logger.exception("internal error during %s; crashhpd goes on", doing,
                         extra=log.fields("internal", backend=self.backend.name))

    def _failed(self, kind: str, message: str, events: int) -> None:
        """Counted every time; said in the journal once per spell of the same kind (its retries are debug)."""
        self.counters.in_sync = False
        self.counters.error(kind, message)
        level = logging.DEBUG if self._failing == kind else logging.ERROR
        self._failing = kind
        logger.log(level, "%s", message, extra=log.fields(kind, events=events, backend=self.backend.name))

    def not_keeping(self, now: float) -> str | None:
        """Why crashhpd cannot keep the crash kernel current now, so that the distribution's rule should;
        None while it can (or its backend has no such job: the takeover leaves the rule alone then)."""
        backend, kernel = self.backend, self.kernel
        if self.applying is not None or not backend.capabilities.keeps_kernel_header or self.unhealthy_since is None:
            return None
        detail = backend.health(kernel).detail
        if kernel.crash_loaded == 0 and not self.counters.in_sync:
            return f"no crash kernel is loaded and crashhpd's last update failed: {self.counters.last_error}"
        if not backend.capabilities.reloads and backend.recovery is None:
            return f"the {backend.name} backend cannot recover ([kernel] recover = false): {detail}"
        if now - self.unhealthy_since >= GIVE_BACK_AFTER_S:
            return f"the {backend.name} backend has been unhealthy for {GIVE_BACK_AFTER_S:g} s: {detail}"
        return None

    def give_back_at(self) -> float | None:
        """When not_keeping() may change without an update: the end of the unhealthy backend's grace."""
        return None if self.unhealthy_since is None else self.unhealthy_since + GIVE_BACK_AFTER_S

    # --- what the admin's queries see ----------------------------------------------------------------

    def status(self, loop: LoopFacts) -> Status:
        backend, kernel, built = self.backend, self.kernel, self.built
        state = backend.state()
        health = backend.health(kernel)
        capacity = backend.capacity(kernel)
        header_bytes = state.header_size if state else 0
        watched = self.kernel_watch.view
        coverage = watched.coverage
        model = built.model if built is not None else None
        return Status(
            **asdict(self.counters),
            version=__version__,
            pid=os.getpid(),
            uptime_s=time.time() - self.counters.started_at,
            backend=backend.name,
            backend_ok=health.ok,
            backend_detail=health.detail,
            layout=self.parts.layout.name,
            generation=state.generation if state else 0,
            pending_events=loop.pending_events,
            next_update_in_s=loop.next_update_in_s,
            cpus=len(model.cpu_notes) if model else 0,
            ram_ranges=len(model.ram) if model else 0,
            ram_bytes=self._ram_bytes,
            capacity_bytes=capacity,
            header_bytes=header_bytes,
            fill_ratio=header_bytes / capacity if capacity else None,
            crash_hotplug_cpu=kernel.crash_hotplug_cpu,
            crash_hotplug_memory=kernel.crash_hotplug_memory,
            last_apply_at=state.applied_at if state else None,
            applying=self.applying is not None,
            apply_running_s=None if self.applying is None else self._clock() - self.applying.started,
            control_clients=loop.control.clients,
            control_refused=loop.control.refused,
            control_busy=loop.control.busy,
            log_suppressed=loop.control.log_suppressed,
            udev_rule_inert=loop.udev_rule_inert,
            udev_rule_detail=loop.udev_rule_detail,
            crash_kernel_loaded=kernel.crash_loaded,
            kernel_header_readable=watched.readable,
            kernel_header_unreadable_reason=watched.unreadable_reason,
            kernel_header_sha256=coverage.sha256 if coverage else None,
            kernel_segment_bytes=watched.segment_bytes,
            kernel_header_in_sync=coverage.in_sync if coverage else None,
            uncovered_ram_bytes=coverage.uncovered_ram_bytes if coverage else None,
            missing_cpu_notes=coverage.missing_cpu_notes if coverage else None,
            stale_ram_bytes=coverage.stale_ram_bytes if coverage else None,
            direct_map_base_known=not (model and model.page_offset_guessed),
            cpus_without_notes=list(model.cpus_without_notes) if model else [],
            kernel_log_watched=self.kernel_watch.log_watched,
            kernel_log_unwatched_reason=self.kernel_watch.log_unwatched_reason,
            kernel_log_complaint=self.kernel_watch.complaint,
            protected=self.protection.protected,
            unprotected_reasons=list(self.protection.reasons),
            readiness=[ReadinessItem(check=r.check, ok=r.ok, reason=r.reason) for r in self.protection.readiness],
            protection_source=self.protection.source,
            backend_setting=self.parts.cfg.backend,
            kexec_sysfs=kernel.sysfs,
            crash_loads_left=kernel.load_limit if kernel.load_limit is not None and kernel.load_limit >= 0 else None,
            crash_kernel_cmdline=self._cmdline[0],
            crash_kernel_cmdline_missing=list(self._cmdline[1]),
            crashkernel_reserved_bytes=self._headroom.reserved_bytes,
            crashkernel_needed_bytes=self._headroom.needed_bytes,
            kdump_initrd_missing_modules=list(self._initrd.missing),
            kdump_initrd_source=self._initrd.source,
        )

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
        built = build_valid(read_snapshot(self.parts.cfg.root, self.parts.boot, self.parts.header_reader),
                            self.parts.layout, self.built)
        state = self.backend.state()
        generation = state.generation if state else 0
        kernel = view(built.snapshot.loaded_header, built, self.kernel_watch.view)
        if kernel.coverage is not None:
            return Verdict(kernel.coverage.in_sync, generation, kernel.coverage.changes, built, "kernel")
        loaded = self.backend.loaded(built.snapshot.kernel)
        in_sync = loaded is not None and same_program_headers(loaded, built.data)
        return Verdict(in_sync, generation, [] if in_sync else changes(loaded, built), built, "model")

    def kernel_header(self) -> LoadedHeader:
        """The header the kernel holds, read now (or why it cannot be)."""
        return self.parts.header_reader.read()
