# SPDX-License-Identifier: GPL-2.0-only
"""What the daemon reports about itself: the one table of status fields.

`crashhpctl status`, the control protocol's `status` reply, the metrics and the
STATUS= line all read `Status`, so a field is added in exactly one place; the
counters the update keeps are its first fields, declared once in `Counters`.
Admins' scripts read these names: within a protocol version a field is never
renamed or removed, only added.
"""

import time
from dataclasses import dataclass, field
from typing import TypedDict

from ..backends.base import Applied
from ..elfcorehdr.build import Built


class ReadinessItem(TypedDict):
    """One readiness check as status reports it (the control contract's Readiness has the same keys)."""

    check: str
    ok: bool | None  # None: unknown
    reason: str


@dataclass(slots=True, kw_only=True)
class Counters:
    """What the daemon has done since it started, kept by the update and reported as it is."""

    started_at: float = field(default_factory=time.time)  # time.time() of the daemon's start
    events_received: int = 0
    events_coalesced: int = 0  # events folded into an update that another event of the burst triggered
    updates: int = 0  # reconciles run (each builds and compares a header)
    applies: int = 0
    skipped_noop: int = 0
    rescans: int = 0  # full rescans after lost events
    errors: dict[str, int] = field(default_factory=dict)  # kind -> count
    in_sync: bool = False  # the last update succeeded (pending_events says whether another is coming)
    last_apply_reason: str | None = None  # None when the last apply predates this daemon
    last_changes: list[str] = field(default_factory=list)
    last_update_duration_s: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None

    def error(self, kind: str, message: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.last_error = message
        self.last_error_at = time.time()


@dataclass(slots=True, kw_only=True)
class Status(Counters):
    version: str
    pid: int
    uptime_s: float
    backend: str
    backend_ok: bool
    backend_detail: str
    layout: str
    generation: int  # of the header in force; 0 before the first apply
    pending_events: int
    next_update_in_s: float | None  # when the debounce (or a retry) runs the next update
    cpus: int
    ram_ranges: int
    ram_bytes: int
    capacity_bytes: int | None
    header_bytes: int
    fill_ratio: float | None  # header_bytes / capacity_bytes
    # None: the kernel does not publish it (before commit 88a6f8994421, "crash: memory and CPU hotplug sysfs
    # attributes", v6.6)
    crash_hotplug_cpu: int | None
    crash_hotplug_memory: int | None
    last_apply_at: float | None  # time.time(); may predate this daemon (the backend remembers it)
    applying: bool = False  # an apply (a kexec load) is running now; the next update waits for it
    apply_running_s: float | None = None  # since when, counted from the start of its update
    control_clients: int = 0  # connected to the control socket now
    control_refused: int = 0  # requests refused for want of root (permission-denied)
    control_busy: int = 0  # requests and connections turned away ("busy"): over a budget or a limit
    log_suppressed: int = 0  # log lines about clients held back (one per peer per minute is logged)
    udev_rule_inert: bool = False  # the distribution's per-event reload rule is overridden while crashhpd runs
    udev_rule_detail: str = ""  # why, or why not, and by which files
    crash_kernel_loaded: int | None = None  # /sys/kernel/kexec_crash_loaded; None: no kexec in this kernel
    kernel_header_readable: bool = False  # the header the kernel holds could be read back from its memory
    kernel_header_unreadable_reason: str | None = None  # why not (kptr_restrict, lockdown, no BTF, nothing loaded)
    kernel_header_sha256: str | None = None
    kernel_segment_bytes: int | None = None  # the loaded segment's real capacity (memsz)
    kernel_header_in_sync: bool | None = None  # it covers what a fresh snapshot does; None: not readable
    uncovered_ram_bytes: int | None = None  # RAM a dump taken now would miss
    missing_cpu_notes: int | None = None  # CPUs whose registers a dump taken now would lose
    stale_ram_bytes: int | None = None  # RAM the kernel's header covers that no longer exists (hot-removed)
    direct_map_base_known: bool = True  # False: /proc/kcore unreadable, RAM p_vaddr assume the non-KASLR base
    # CPUs of the layout's set that sysfs gives no crash_notes address (possible, not present): not modelled
    cpus_without_notes: list[int] = field(default_factory=list)
    kernel_log_watched: bool = False  # /dev/kmsg is read for the kernel's `crash hp:` lines
    kernel_log_unwatched_reason: str | None = None  # why not (absent, refused, cannot be polled)
    # the last such line: the kernel could not update its header; cleared once its header reads back in sync
    kernel_log_complaint: str | None = None
    protected: bool = False  # a dump taken now would save every byte of RAM and every CPU (service/protection.py)
    unprotected_reasons: list[str] = field(default_factory=list)  # why not, the first to fix first
    readiness: list["ReadinessItem"] = field(default_factory=list)  # every check (service/protection.py)
    # kexec_load_limit_panic: crash loads the kernel still allows (crashhpd never spends the last); None: unlimited
    crash_loads_left: int | None = None
    kexec_sysfs: str = "kernel"  # the spelling of the kexec attributes read: "kernel/kexec" or "kernel"
    backend_setting: str = ""  # the configuration's `backend`: "auto" chose `backend`
    protection_source: str = "model"  # "kernel": the header read back decided; "model": the backend's record
    crash_kernel_cmdline: str | None = None  # the loaded crash kernel's, from its boot parameters; None: not read
    crash_kernel_cmdline_missing: list[str] = field(default_factory=list)  # what this host needs and it lacks
    # modules the host's devices need in the kdump kernel (virtio_mem) that its initramfs lacks, and what was read
    kdump_initrd_missing_modules: list[str] = field(default_factory=list)
    kdump_initrd_source: str | None = None
    # the crash kernel's reservation (Crash kernel ranges, crash CMA) and what a dump needs of it, as measured
    # (sysview/headroom.py); None: unknown, or not measured for this much RAM
    crashkernel_reserved_bytes: int | None = None
    crashkernel_needed_bytes: int | None = None


@dataclass(slots=True)
class ControlCounters:
    """What the control socket has turned away: kept by the server and its dispatcher, reported in status."""

    clients: int = 0
    refused: int = 0
    busy: int = 0
    log_suppressed: int = 0


@dataclass(frozen=True, slots=True)
class HeaderInForce:
    data: bytes
    applied: Applied
    capacity: int | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """A fresh snapshot's header against the one in force, never applied."""

    in_sync: bool
    generation: int
    changes: list[str]
    built: Built
    source: str = "model"  # "kernel": compared with the header the kernel holds; "model": with the backend's
