# SPDX-License-Identifier: GPL-2.0-only
"""The protection verdict, each reason on its own, against one host where everything holds."""

import dataclasses

import pytest

from crashhpd.backends.base import Health
from crashhpd.elfcorehdr.coverage import Coverage, KernelView
from crashhpd.service.protection import judge
from crashhpd.sysview.kernel_state import KernelState

KERNEL = KernelState(crash_loaded=1, crash_size=256 << 20, elfcorehdr_size=None, crash_hotplug_cpu=None,
                     crash_hotplug_memory=None, load_limit=-1, lockdown=None, boot_id="b")
IN_SYNC = KernelView(True, None, 8192, Coverage("0" * 64, 0, 0, 0, []))
FINE = dict(backend="kexec", keeps_kernel_header=True, kernel=KERNEL, health=Health(), view=IN_SYNC,
            last_update_ok=True, last_error=None)


def test_a_host_where_everything_holds_is_protected_by_the_kernels_own_header():
    verdict = judge(**FINE)
    assert (verdict.protected, verdict.reasons, verdict.source) == (True, (), "kernel")


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
])
def test_each_fault_alone_is_not_protected_and_named(change, reason):
    verdict = judge(**{**FINE, **change})
    assert (verdict.protected, verdict.reasons) == (False, (reason,))


def test_without_the_kernels_header_the_backends_record_decides_and_says_so():
    verdict = judge(**{**FINE, "view": KernelView(unreadable_reason="lockdown")})
    assert (verdict.protected, verdict.source) == (True, "model")


def test_no_crash_kernel_is_said_once_not_again_as_the_backends_health():
    verdict = judge(**{**FINE, "kernel": dataclasses.replace(KERNEL, crash_loaded=0),
                       "health": Health(False, "NO CRASH KERNEL LOADED")})
    assert verdict.reasons == ("no crash kernel is loaded: a panic now saves no dump at all",)
