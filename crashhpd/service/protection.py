# SPDX-License-Identifier: GPL-2.0-only
"""The one verdict that matters: would a dump taken now save every byte of RAM and every CPU, and if not, why.

Judged once per update, from what that update learned, by a pure function; status,
crashhpctl (its exit code), the metric and the alerts all read this one verdict.
"""

from dataclasses import dataclass

from ..backends.base import Health
from ..elfcorehdr.coverage import KernelView
from ..sysview.kernel_state import KernelState
from ..sysview.ranges import size_text


@dataclass(frozen=True, slots=True)
class Protection:
    protected: bool
    reasons: tuple[str, ...]  # why not, the first the one to fix first; empty when protected
    source: str  # what the header's verdict rests on: "kernel" (read back), "model" (the backend's record)


NOT_JUDGED = Protection(False, ("not judged yet: the first update has not ended",), "model")


def judge(backend: str, keeps_kernel_header: bool, kernel: KernelState, health: Health, view: KernelView,
          last_update_ok: bool, last_error: str | None) -> Protection:
    """The verdict on what one update found; `last_update_ok`/`last_error` stand for the header where the kernel's
    cannot be read back."""
    reasons: list[str] = []
    if not keeps_kernel_header:
        reasons.append(f"the {backend} backend keeps no crash kernel current: it only writes a file "
                       '(set backend = "auto" in /etc/crashhpd/crashhpd.toml)')
    if kernel.crash_loaded is None:
        reasons.append("this kernel has no kexec support (no /sys/kernel/kexec_crash_loaded)")
    elif kernel.crash_loaded == 0:
        reasons.append("no crash kernel is loaded: a panic now saves no dump at all")
    coverage = view.coverage
    if coverage is not None:
        if coverage.rejected is not None:
            reasons.append(f"{coverage.rejected}: a dump taken now would save nothing")
        elif not coverage.in_sync:
            reasons.append(f"the kernel's header is stale: a dump taken now would miss "
                           f"{size_text(coverage.uncovered_ram_bytes)} of RAM and {coverage.missing_cpu_notes} "
                           f"CPU notes, and cover {size_text(coverage.stale_ram_bytes)} that is gone")
    elif not last_update_ok:
        reasons.append(f"the last update failed: {last_error or 'no reason recorded'}")
    if not health.ok and kernel.crash_loaded != 0:  # no crash kernel: said above, in other words
        reasons.append(f"the {backend} backend is unhealthy: {health.detail}")
    return Protection(not reasons, tuple(reasons), "kernel" if coverage is not None else "model")
