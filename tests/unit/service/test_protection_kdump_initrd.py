# SPDX-License-Identifier: GPL-2.0-only
"""The kdump_initrd readiness row: passed when no device needs a module, failed naming what lacks and where it
was read, unknown (not failed) when the initramfs could not be read."""

from crashhpd.service.protection import Facts, judge
from crashhpd.sysview.kdump_initrd import InitrdCheck
from tests.unit.service.test_protection import FINE

SEGMENT = "the loaded crash image's initrd segment (0x2f200000, 9437184 bytes)"


def row(initrd: InitrdCheck):  # type: ignore[no-untyped-def]
    verdict = judge(Facts(**{**FINE, "initrd": initrd}))  # type: ignore[arg-type]
    return verdict, next(r for r in verdict.readiness if r.check == "kdump_initrd")


def test_no_virtio_mem_device_passes_without_reading_anything():
    verdict, check = row(InitrdCheck())
    assert (verdict.protected, check.ok) == (True, True)


def test_a_missing_module_fails_with_where_it_was_read_and_the_fix():
    verdict, check = row(InitrdCheck(("virtio_mem",), ("virtio_mem",), SEGMENT))
    assert (verdict.protected, check.ok) == (False, False)
    assert check.reason.startswith(f"the kdump initramfs lacks virtio_mem (read from {SEGMENT}): ")
    assert "/etc/initramfs-tools/modules" in check.reason and verdict.reasons == (check.reason,)


def test_present_passes_and_unreadable_is_unknown():
    _, check = row(InitrdCheck(("virtio_mem",), (), SEGMENT))
    assert (check.ok, check.reason) == (True, f"the kdump initramfs has virtio_mem (read from {SEGMENT})")
    verdict, check = row(InitrdCheck(("virtio_mem",), (), None, "the gzip stream ends early"))
    assert (verdict.protected, check.ok, check.reason) == (
        True, None, "the kdump initramfs could not be read: the gzip stream ends early")
