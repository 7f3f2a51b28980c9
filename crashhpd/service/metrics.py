# SPDX-License-Identifier: GPL-2.0-only
"""Prometheus metrics: answered on the control socket and optionally kept as a node_exporter textfile.

Counters and gauges are not kept twice: they are read at scrape time from the
same status the `status` request returns, so the two can never disagree. The
textfile is how the metrics leave the host without opening a port.
"""

import bisect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..safefile import SafeDir, describe
from .status import Status

if TYPE_CHECKING:
    from prometheus_client.core import Metric

logger = logging.getLogger(__name__)

TEXTFILE = "crashhpd.prom"
TEXTFILE_MODE = 0o644  # node_exporter rarely runs as root
# Always exported, so a rate() or an alert on a kind that has not happened yet still has a series.
ERROR_KINDS = ("apply-failed", "snapshot-failed", "header-invalid", "events-lost", "internal", "kernel-header-stale")
# From a sandbox apply (milliseconds) to a kexec reload that hits its timeout (60 s by default).
APPLY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# The debounce alone is quiet_ms (200 ms) up to max_delay_ms (2 s); a reload adds seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60, 120)


@dataclass(slots=True)
class Buckets:
    """A histogram's observations, counted per upper bound as Prometheus exposes them."""

    name: str
    doc: str
    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self) -> "Metric":
        from prometheus_client.core import HistogramMetricFamily

        cumulative, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts):
            running += count
            cumulative.append((bound, running))
        return HistogramMetricFamily(self.name, self.doc, buckets=cumulative, sum_value=self.total)


def families(s: Status, now: float) -> list["Metric"]:
    """The counters and gauges for one status; `now` is time.time(), for the age of the last apply."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, value=value)

    def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, value=value)

    errors = CounterMetricFamily("crashhpd_errors", "Failures by kind.", labels=["kind"])
    for kind in sorted(set(ERROR_KINDS) | set(s.errors)):
        errors.add_metric([kind], s.errors.get(kind, 0))
    info = GaugeMetricFamily("crashhpd_info", "Version, backend and layout in use.",
                             labels=["version", "backend", "layout"])
    info.add_metric([s.version, s.backend, s.layout], 1)
    out: list[Metric] = [
        info,
        _counter("crashhpd_uevents", "CPU and memory uevents received.", s.events_received),
        _counter("crashhpd_events_coalesced", "Events folded into an update another event triggered.",
                 s.events_coalesced),
        _counter("crashhpd_updates", "Reconciles run (snapshot, build, compare).", s.updates),
        _counter("crashhpd_applies", "Headers applied.", s.applies),
        _counter("crashhpd_noop_skips", "Updates that found the header in force already correct.", s.skipped_noop),
        _counter("crashhpd_rescans", "Full rescans after the uevent socket lost events.", s.rescans),
        errors,
        _gauge("crashhpd_start_time_seconds", "When the daemon started, seconds since the epoch.", s.started_at),
        _gauge("crashhpd_generation", "Generation of the header in force (0: none yet).", s.generation),
        _gauge("crashhpd_cpus", "CPU notes in the header.", s.cpus),
        _gauge("crashhpd_ram_ranges", "RAM ranges in the header.", s.ram_ranges),
        _gauge("crashhpd_ram_bytes", "RAM the header covers.", s.ram_bytes),
        _gauge("crashhpd_header_bytes", "Size of the header in force.", s.header_bytes),
        _gauge("crashhpd_in_sync", "1 when the last update succeeded.", int(s.in_sync)),
        _gauge("crashhpd_backend_healthy", "1 when the backend reports itself healthy.", int(s.backend_ok)),
        _gauge("crashhpd_protected", "1 when a dump taken now would save every byte of RAM and every CPU "
               "(crashhpctl status says why not).", int(s.protected)),
        _gauge("crashhpd_pending_events", "Events waiting for the debounce.", s.pending_events),
        _gauge("crashhpd_applying", "1 while an apply (a kexec load) is running.", int(s.applying)),
        _gauge("crashhpd_control_clients", "Clients connected to the control socket.", s.control_clients),
        _counter("crashhpd_control_refused", "Control requests refused for want of root.", s.control_refused),
        _counter("crashhpd_control_busy", "Control requests and connections turned away: over a budget or a limit.",
                 s.control_busy),
        _counter("crashhpd_log_suppressed", "Log lines about control clients held back (one per peer per minute).",
                 s.log_suppressed),
    ]
    readiness = GaugeMetricFamily("crashhpd_readiness_ok", "Each readiness check: 1 passed, 0 failed (a dump taken "
                                  "now would not save everything: crashhpctl status says why); unknown ones absent.",
                                  labels=["check"])
    for r in s.readiness:
        if r["ok"] is not None:
            readiness.add_metric([str(r["check"])], int(bool(r["ok"])))
    out.append(readiness)
    out.append(_gauge("crashhpd_kernel_header_readable",
                      "1 when the header the kernel holds could be read back from its memory.",
                      int(s.kernel_header_readable)))
    if s.crash_kernel_loaded is not None:
        out.append(_gauge("crashhpd_crash_kernel_loaded", "1 while a crash kernel is loaded (kexec_crash_loaded).",
                          s.crash_kernel_loaded))
    if s.kernel_header_in_sync is not None:
        out.append(_gauge("crashhpd_kernel_header_in_sync",
                          "1 when the kernel's header covers the RAM and CPUs a fresh snapshot has.",
                          int(s.kernel_header_in_sync)))
    for name, doc, value in (
        ("crashhpd_uncovered_ram_bytes", "RAM a dump taken now would miss.", s.uncovered_ram_bytes),
        ("crashhpd_stale_ram_bytes", "RAM the kernel's header covers that no longer exists.", s.stale_ram_bytes),
        ("crashhpd_missing_cpu_notes", "CPUs without a note in the kernel's header.", s.missing_cpu_notes),
        ("crashhpd_crashkernel_reserved_bytes", "Memory reserved for the crash kernel (Crash kernel ranges, crash "
         "CMA).", s.crashkernel_reserved_bytes),
        ("crashhpd_crashkernel_needed_bytes", "What the crash kernel needs of it to save a dump, as measured for "
         "this much RAM and the image loaded (absent: not measured).", s.crashkernel_needed_bytes),
    ):
        if value is not None:
            out.append(_gauge(name, doc, value))
    if s.capacity_bytes is not None:
        out.append(_gauge("crashhpd_segment_capacity_bytes", "Bytes the loaded segment can hold.", s.capacity_bytes))
    if s.fill_ratio is not None:
        out.append(_gauge("crashhpd_segment_fill_ratio", "Header size over segment capacity.", s.fill_ratio))
    if s.last_apply_at is not None:
        out.append(_gauge("crashhpd_last_apply_timestamp_seconds",
                          "When the header in force was applied, seconds since the epoch.", s.last_apply_at))
        out.append(_gauge("crashhpd_seconds_since_last_apply",
                          "Age of the header in force at scrape time (stale in a textfile: use the timestamp).",
                          max(now - s.last_apply_at, 0.0)))
    return out


class Metrics:
    """The two histograms, and the exposition of a status handed in by the caller.

    Only the histograms hold their own data, observed by the daemon after each
    apply. prometheus-client is imported only when metrics are asked for (a
    request or a textfile): it costs the daemon 3 MiB of memory it does not
    otherwise need, so the histograms count into plain buckets until then.
    """

    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self._now = now
        self.apply_duration = Buckets("crashhpd_apply_duration_seconds",
                                      "From reading the system to the new header in force.", APPLY_BUCKETS)
        self.event_to_apply = Buckets("crashhpd_event_to_apply_seconds",
                                      "From the first event of a burst to its header in force.", LATENCY_BUCKETS)
        self._textfile_error: str | None = None

    def _exposition(self, status: Status) -> bytes:
        """The text format, from a private registry of this daemon's families only: nothing the Python
        runtime or a library registers ends up in crashhpd's exposition."""
        from prometheus_client import CollectorRegistry, generate_latest

        collected = [*families(status, self._now()), self.apply_duration.family(), self.event_to_apply.family()]
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Fixed(collected))
        return generate_latest(registry)

    def applied(self, duration_s: float, latency_s: float | None) -> None:
        """One apply; `latency_s` is None when no event started it (start-up, reload, crashhpctl)."""
        self.apply_duration.observe(duration_s)
        if latency_s is not None:
            self.event_to_apply.observe(latency_s)

    def text(self, status: Status) -> str:
        return self._exposition(status).decode()

    def write_textfile(self, directory: str | None, status: Status) -> None:
        """Replace `<directory>/crashhpd.prom`; a failure is logged once until it changes, never raised.

        Replaced through crashhpd.safefile, so node_exporter never reads half of
        it: only the temporary, whose name does not end in `.prom`, can be torn.
        The directory is node_exporter's, so it is never created and may be
        anyone's (SafeDir's `shared`).
        """
        if directory is None:
            return
        try:
            with SafeDir(directory, shared=True) as d:
                d.write(TEXTFILE, self._exposition(status), TEXTFILE_MODE)
        except OSError as err:
            problem = f"{directory}/{TEXTFILE}: metrics textfile not written: {describe(err, directory)}"
            if problem != self._textfile_error:
                logger.warning("%s", problem)
            self._textfile_error = problem
            return
        self._textfile_error = None


class _Fixed:
    """A collector of families already built, for one exposition."""

    def __init__(self, collected: list["Metric"]) -> None:
        self._collected = collected

    def collect(self) -> list["Metric"]:
        return self._collected

