# SPDX-License-Identifier: GPL-2.0-only
"""The readiness checks and the protection verdict, each fault on its own, against one host where everything holds."""

import dataclasses

import pytest

from crashhpd.backends.base import Health
from crashhpd.elfcorehdr.coverage import Coverage, KernelView
from crashhpd.service.protection import CHECKS, Facts, judge
from crashhpd.sysview.headroom import Headroom
from crashhpd.sysview.kernel_state import KernelState

KERNEL = KernelState(crash_loaded=1, crash_size=256 << 20, elfcorehdr_size=None, crash_hotplug_cpu=None,
                     crash_hotplug_memory=None, load_limit=-1, lockdown=None, boot_id="b")
IN_SYNC = KernelView(True, None, 8192, Coverage("0" * 64, 0, 0, 0, []))
FINE = dict(backend="kexec", keeps_kernel_header=True, kernel=KERNEL, health=Health(), view=IN_SYNC,
            last_update_ok=True, last_error=None, cmdline="reset_devices nr_cpus=1 acpi_no_memhotplug",
            cmdline_missing=(), complete_cmdline=True, headroom=Headroom(256 << 20, 128 << 20, "measured"))
NAMES = ["backend", "crash_kernel", "header", "backend_health", "crash_kernel_cmdline", "crash_loads",
         "kdump_initrd", "crashkernel_reservation"]


def judged(**change: object):  # type: ignore[no-untyped-def]
    return judge(Facts(**{**FINE, **change}))  # type: ignore[arg-type]


def test_a_host_where_everything_holds_is_protected_by_the_kernels_own_header():
    verdict = judged()
    assert (verdict.protected, verdict.reasons, verdict.source) == (True, (), "kernel")
    assert [(r.check, r.ok) for r in verdict.readiness] == [(name, True) for name in NAMES]
    assert len(CHECKS) == len(NAMES)


@pytest.mark.parametrize(("change", "reason"), [
    (dict(backend="sandbox", keeps_kernel_header=False),
     'the sandbox backend keeps no crash kernel current: it only writes a file (set backend = "auto" in '
     '/etc/crashhpd/crashhpd.toml)'),
    (dict(kernel=dataclasses.replace(KERNEL, crash_loaded=0)),
     "no crash kernel is loaded: a panic now saves no dump at all"),
    (dict(kernel=dataclasses.replace(KERNEL, crash_loaded=None)),
     "this kernel has no kexec support (no /sys/kernel/kexec_crash_loaded)"),
    (dict(view=KernelView(True, None, 8192, Coverage("0" * 64, 1 << 29, 1 << 27, 2, ["+ RAM"]))),
     "the kernel's header is stale: a dump taken now would miss 512 MiB of RAM and 2 CPU notes, and cover "
     "128 MiB that is gone"),
    (dict(view=KernelView(unreadable_reason="kptr_restrict"), last_update_ok=False, last_error="apply failed: x"),
     "the last update failed: apply failed: x"),
    (dict(health=Health(False, "last reload failed: kexec -p failed with exit status 1")),
     "the kexec backend is unhealthy: last reload failed: kexec -p failed with exit status 1"),
    (dict(cmdline="reset_devices nr_cpus=1", cmdline_missing=("acpi_no_memhotplug",), complete_cmdline=False),
     "the crash kernel's command line lacks acpi_no_memhotplug: the kdump kernel would take hot-added memory as "
     "its own and a dump could not read it (add it to KDUMP_CMDLINE_APPEND in /etc/default/kdump-tools; "
     "[kexec] complete_cmdline = true lets crashhpd add them)"),
    (dict(kernel=dataclasses.replace(KERNEL, load_limit=0)),
     "kexec_load_limit_panic is spent: no crash kernel can be loaded again until reboot, so no update can reach "
     "the crash kernel"),
])
def test_each_fault_alone_is_not_protected_and_named(change, reason):
    verdict = judged(**change)
    assert (verdict.protected, verdict.reasons) == (False, (reason,))
    failed = [r for r in verdict.readiness if r.ok is False]
    assert [r.reason for r in failed] == [reason] and len(verdict.readiness) == len(NAMES)


def test_what_cannot_be_read_is_unknown_not_failed():
    """A command line that could not be read back is neither a pass nor a reason: unknown, and why."""
    verdict = judged(cmdline=None)
    check = next(r for r in verdict.readiness if r.check == "crash_kernel_cmdline")
    assert (verdict.protected, check.ok, check.reason) == (
        True, None, "the crash kernel's command line could not be read back")


def test_without_the_kernels_header_the_backends_record_decides_and_says_so():
    verdict = judged(view=KernelView(unreadable_reason="lockdown"))
    assert (verdict.protected, verdict.source) == (True, "model")


def test_no_crash_kernel_is_said_once_not_again_as_the_backends_health():
    verdict = judged(kernel=dataclasses.replace(KERNEL, crash_loaded=0), health=Health(False, "NO CRASH KERNEL LOADED"))
    assert verdict.reasons == ("no crash kernel is loaded: a panic now saves no dump at all",)
