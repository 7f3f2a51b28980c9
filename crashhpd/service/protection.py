# SPDX-License-Identifier: GPL-2.0-only
"""The one verdict that matters: would a dump taken now save every byte of RAM and every CPU, and if not, why.

Each thing that decides it is one readiness check, a row of CHECKS: a pure function
of what one update learned (Facts), saying passed, failed (with what to do), or
unknown (and why). The host is protected when no check failed; status, crashhpctl
(its exit code), the metrics and the alerts all read this one verdict.
"""

from collections.abc import Callable
from dataclasses import dataclass

from ..backends.base import Health
from ..elfcorehdr.coverage import KernelView
from ..sysview.headroom import Headroom
from ..sysview.kdump_initrd import InitrdCheck
from ..sysview.kernel_state import KernelState
from ..sysview.ranges import size_text


@dataclass(frozen=True, slots=True)
class Facts:
    """What one update learned that the checks judge."""

    backend: str
    keeps_kernel_header: bool  # the backend's Capabilities: the crash kernel's header is its job
    kernel: KernelState
    health: Health
    view: KernelView
    last_update_ok: bool  # with last_error, what stands for the header where the kernel's cannot be read back
    last_error: str | None
    cmdline: str | None  # the loaded crash kernel's, read back; None: not read
    cmdline_missing: tuple[str, ...]  # what this host needs in it and it lacks
    complete_cmdline: bool  # crashhpd reloads once to add what is missing ([kexec] complete_cmdline)
    initrd: InitrdCheck = InitrdCheck()  # the modules the host's devices need in the kdump initramfs, and what lacks
    headroom: Headroom = Headroom(None, None, "not judged yet")  # the reservation against the measured need


@dataclass(frozen=True, slots=True)
class Readiness:
    check: str
    ok: bool | None  # None: unknown
    reason: str  # passed: what was found; failed: what a dump would lose and the fix; unknown: why


def _backend(f: Facts) -> Readiness:
    if f.keeps_kernel_header:
        return Readiness("backend", True, f"the {f.backend} backend keeps the crash kernel's header current")
    return Readiness("backend", False, f"the {f.backend} backend keeps no crash kernel current: it only writes a "
                     'file (set backend = "auto" in /etc/crashhpd/crashhpd.toml)')


def _crash_kernel(f: Facts) -> Readiness:
    if f.kernel.crash_loaded is None:
        return Readiness("crash_kernel", False, "this kernel has no kexec support (no /sys/kernel/kexec_crash_loaded)")
    if f.kernel.crash_loaded == 0:
        return Readiness("crash_kernel", False, "no crash kernel is loaded: a panic now saves no dump at all")
    return Readiness("crash_kernel", True, "a crash kernel is loaded")


def _header(f: Facts) -> Readiness:
    coverage = f.view.coverage
    if coverage is None:
        if not f.last_update_ok:
            return Readiness("header", False, f"the last update failed: {f.last_error or 'no reason recorded'}")
        return Readiness("header", True, "the backend holds the header of the last update (the kernel's own "
                         f"cannot be read back: {f.view.unreadable_reason})")
    if coverage.rejected is not None:
        return Readiness("header", False, f"{coverage.rejected}: a dump taken now would save nothing")
    if not coverage.in_sync:
        return Readiness("header", False, f"the kernel's header is stale: a dump taken now would miss "
                         f"{size_text(coverage.uncovered_ram_bytes)} of RAM and {coverage.missing_cpu_notes} CPU "
                         f"notes, and cover {size_text(coverage.stale_ram_bytes)} that is gone")
    return Readiness("header", True, "the kernel's header covers all RAM and every CPU (read back)")


def _backend_health(f: Facts) -> Readiness:
    if f.health.ok:
        return Readiness("backend_health", True, f.health.detail or "healthy")
    if f.kernel.crash_loaded == 0:  # no crash kernel: crash_kernel says so, in other words
        return Readiness("backend_health", None, f"not judged without a crash kernel: {f.health.detail}")
    return Readiness("backend_health", False, f"the {f.backend} backend is unhealthy: {f.health.detail}")


def _crash_kernel_cmdline(f: Facts) -> Readiness:
    if f.cmdline is None:
        return Readiness("crash_kernel_cmdline", None, "the crash kernel's command line could not be read back")
    if f.cmdline_missing:
        lacking = " ".join(f.cmdline_missing)
        fix = ("crashhpd reloads it once with them added" if f.complete_cmdline else
               '[kexec] complete_cmdline = true lets crashhpd add them')
        return Readiness("crash_kernel_cmdline", False, f"the crash kernel's command line lacks {lacking}: the kdump "
                         "kernel would take hot-added memory as its own and a dump could not read it (add it to "
                         f"KDUMP_CMDLINE_APPEND in /etc/default/kdump-tools; {fix})")
    return Readiness("crash_kernel_cmdline", True, "the crash kernel's command line has what this host needs")


def _crash_loads(f: Facts) -> Readiness:
    left = f.kernel.load_limit
    if left is None or left < 0:
        return Readiness("crash_loads", True, "no limit on crash kernel loads")
    if left == 0:
        return Readiness("crash_loads", False, "kexec_load_limit_panic is spent: no crash kernel can be loaded again "
                         "until reboot, so no update can reach the crash kernel")
    return Readiness("crash_loads", True, f"{left} crash kernel loads left (kexec_load_limit_panic)")


def _kdump_initrd(f: Facts) -> Readiness:
    initrd = f.initrd
    if not initrd.needed:
        return Readiness("kdump_initrd", True, "no device of this host needs a module in the kdump kernel")
    if initrd.ok is None:
        return Readiness("kdump_initrd", None, f"the kdump initramfs could not be read: {initrd.reason}")
    if initrd.missing:
        lacking = " ".join(initrd.missing)
        return Readiness("kdump_initrd", False, f"the kdump initramfs lacks {lacking} (read from {initrd.source}): "
                         "the kdump kernel cannot tell /proc/vmcore which virtio-mem memory is unplugged, so a "
                         f"dump may read memory it must not (kdump-tools: add {lacking} to /etc/initramfs-tools/"
                         "modules, run /etc/kernel/postinst.d/kdump-tools $(uname -r) and kdump-config reload)")
    return Readiness("kdump_initrd", True, f"the kdump initramfs has {' '.join(initrd.needed)} "
                     f"(read from {initrd.source})")


def _crashkernel_reservation(f: Facts) -> Readiness:
    h = f.headroom
    if h.reserved_bytes is None:
        return Readiness("crashkernel_reservation", None, "no crash kernel memory is reserved (no Crash kernel "
                         "range in /proc/iomem)")
    if h.needed_bytes is None:
        return Readiness("crashkernel_reservation", None, f"{size_text(h.reserved_bytes)} reserved; what a dump "
                         f"needs is not known here: {h.reason}")
    if h.reserved_bytes < h.needed_bytes:
        return Readiness("crashkernel_reservation", False, f"{size_text(h.reserved_bytes)} is reserved for the crash "
                         f"kernel, {size_text(h.needed_bytes)} is needed ({h.reason}): the kdump kernel would run "
                         "out of memory before the dump is saved (a hot-add never grows crashkernel=: raise it on "
                         "the kernel command line and reboot)")
    if h.at_least:
        return Readiness("crashkernel_reservation", None, f"{size_text(h.reserved_bytes)} reserved, at least "
                         f"{size_text(h.needed_bytes)} needed ({h.reason}): whether it is enough was not measured")
    return Readiness("crashkernel_reservation", True, f"{size_text(h.reserved_bytes)} reserved, "
                     f"{size_text(h.needed_bytes)} needed ({h.reason})")


# The checks, in the order their failures are to be fixed; each name is a `check` label admins' alerts match.
CHECKS: tuple[Callable[[Facts], Readiness], ...] = (
    _backend, _crash_kernel, _header, _backend_health, _crash_kernel_cmdline, _crash_loads, _kdump_initrd,
    _crashkernel_reservation,
)


@dataclass(frozen=True, slots=True)
class Protection:
    protected: bool
    reasons: tuple[str, ...]  # why not, the first the one to fix first; empty when protected
    source: str  # what the header's verdict rests on: "kernel" (read back), "model" (the backend's record)
    readiness: tuple[Readiness, ...] = ()


NOT_JUDGED = Protection(False, ("not judged yet: the first update has not ended",), "model")


def judge(facts: Facts) -> Protection:
    """The verdict on what one update found: every check, and protected when none failed."""
    readiness = tuple(check(facts) for check in CHECKS)
    reasons = tuple(r.reason for r in readiness if r.ok is False)
    return Protection(not reasons, reasons, "kernel" if facts.view.coverage is not None else "model", readiness)
