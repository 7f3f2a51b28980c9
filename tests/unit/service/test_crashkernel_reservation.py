# SPDX-License-Identifier: GPL-2.0-only
"""The crashkernel_reservation readiness check: passed, failed with the fix, unknown and why; and the one warning
per spell of being short that the updater logs."""

import dataclasses

from crashhpd.backends.base import Health
from crashhpd.elfcorehdr.coverage import Coverage, KernelView
from crashhpd.service.protection import Facts, judge
from crashhpd.sysview.headroom import Headroom
from crashhpd.sysview.kernel_state import KernelState

MIB = 1 << 20
KERNEL = KernelState(crash_loaded=1, crash_size=256 * MIB, elfcorehdr_size=None, crash_hotplug_cpu=None,
                     crash_hotplug_memory=None, load_limit=-1, lockdown=None, boot_id="b")
FACTS = Facts(backend="kexec", keeps_kernel_header=True, kernel=KERNEL, health=Health(),
              view=KernelView(True, None, 8192, Coverage("0" * 64, 0, 0, 0, [])), last_update_ok=True,
              last_error=None, cmdline="nr_cpus=1 acpi_no_memhotplug", cmdline_missing=(), complete_cmdline=True)


def row(headroom: Headroom):  # type: ignore[no-untyped-def]
    verdict = judge(dataclasses.replace(FACTS, headroom=headroom))
    found = [r for r in verdict.readiness if r.check == "crashkernel_reservation"]
    assert len(found) == 1
    return verdict, found[0]


def test_enough_reserved_passes_and_says_both_figures() -> None:
    verdict, r = row(Headroom(256 * MIB, 192 * MIB, "measured: 192 MiB saved a dump of 4 GiB of RAM"))
    assert verdict.protected and r.ok is True
    assert r.reason == "256 MiB reserved, 192 MiB needed (measured: 192 MiB saved a dump of 4 GiB of RAM)"


def test_exactly_the_need_passes() -> None:
    assert row(Headroom(192 * MIB, 192 * MIB, "m"))[1].ok is True


def test_short_fails_the_verdict_with_the_fix() -> None:
    verdict, r = row(Headroom(128 * MIB, 192 * MIB, "measured: 192 MiB saved a dump of 4 GiB of RAM"))
    assert r.ok is False and not verdict.protected and verdict.reasons == (r.reason,)
    assert r.reason.startswith("128 MiB is reserved for the crash kernel, 192 MiB is needed (measured: ")
    assert "raise it on the kernel command line and reboot" in r.reason


def test_not_measured_is_unknown_and_does_not_fail_the_verdict() -> None:
    verdict, r = row(Headroom(256 * MIB, None, "64 GiB of RAM is more than was measured (32 GiB)"))
    assert r.ok is None and verdict.protected
    assert r.reason.endswith("not known here: 64 GiB of RAM is more than was measured (32 GiB)")
    assert row(Headroom(None, None, "x"))[1].ok is None


def test_a_larger_image_than_measured_fails_below_the_bound_and_is_unknown_above_it() -> None:
    reason = "measured: 128 MiB saved a dump of 4 GiB of RAM with a crash image 32 MiB smaller than the one loaded"
    assert row(Headroom(128 * MIB, 160 * MIB, reason, at_least=True))[1].ok is False
    verdict, r = row(Headroom(256 * MIB, 160 * MIB, reason, at_least=True))
    assert r.ok is None and verdict.protected
    assert r.reason == f"256 MiB reserved, at least 160 MiB needed ({reason}): whether it is enough was not measured"
