# SPDX-License-Identifier: GPL-2.0-only
"""The crash kernel's reservation against what a dump needs, proven with kdump-tools' own save path.

Debian 12 on Linux 6.1 (kdump_save.py: systemd, kdump-tools and makedumpfile in
the kdump kernel, the dump written to /var/crash), crashhpd on the kexec backend.
Two boots, each hot-adding memory and then crashing:

  short    crashkernel= one measured step below the need (docs/benchmarks.md,
           "Crash kernel headroom"): crashhpd's crashkernel_reservation check
           fails before the crash, the journal says so once across the hot-adds,
           and kdump-tools saves no complete dump (the failure the benchmark saw)
  enough   crashkernel= at the measured need: the check passes, nothing is said,
           and makedumpfile completes

Each case is the other's control: the same guest, the same hot-add, one
reservation step apart.
"""

import json
from pathlib import Path
from typing import Any

import pytest

from . import kdump_save, parts, system
from .kdump_save import COMPLETE, SERIES
from .parts import Qemu
from .system import SystemGuest
from .vm import GIB, HOTPLUG_BASE, MIB

HEADROOM = "MESSAGE_ID=b887cf7287da4cd0a8d1378bb0edb29d"  # crashhpd/log.py's crash-headroom
NEEDED_MIB = 128  # the smallest step that saved a dump at 2, 4 and 16 GiB (docs/benchmarks.md)
SHORT_MIB = 96  # the step below it: there the kdump kernel ran out of memory in its own boot
DIMM = GIB
MEMORY = "2G,slots=2,maxmem=4G"
AFTER_CRASH_S = 900.0


@pytest.fixture(scope="module")
def dump_image(qemu: Qemu, tmp_path_factory: pytest.TempPathFactory) -> system.System:
    try:
        kernel = parts.kernel(SERIES)
        return kdump_save.prepare(qemu, kernel, tmp_path_factory.mktemp("kdump-save"))
    except parts.PartsUnavailable as err:
        pytest.skip(str(err))


def readiness(status: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in status["readiness"] if r["check"] == "crashkernel_reservation")


def grow_and_crash(qemu: Qemu, image: system.System, workdir: Path, crash_mib: int) -> dict[str, Any]:
    """Boot with crashkernel=`crash_mib`M, hot-add two DIMMs (two updates), look, crash, let kdump-tools save."""
    with SystemGuest(qemu, image, SERIES, workdir, kernel_args=f"crashkernel={crash_mib}M", memory=MEMORY,
                     deadline_s=AFTER_CRASH_S + 600) as g:
        g.booted()
        seen: dict[str, Any] = {"guest": g.guest, "boot": g.status()}
        for i, address in enumerate((HOTPLUG_BASE, HOTPLUG_BASE + DIMM // 2)):
            before = g.status()["events_received"]
            g.guest.hot_add_memory(DIMM // 2, address, f"dimm{i}")
            g.wait("online", hex(address), hex(DIMM // 2))
            g.sh("udevadm settle --timeout=240", timeout=250)
            g.wait("idle", before)
        seen["status"] = g.status()
        seen["warnings"] = g.entries(f"-u crashhpd {HEADROOM}")
        seen["text"] = g.sh("crashhpctl status || true")
        seen["outcome"], seen["kdump"] = kdump_save.crash_and_save(g, AFTER_CRASH_S)
    return seen


def check(seen: dict[str, Any], condition: bool, what: str) -> None:
    if not condition:
        raise seen["guest"].failure(f"{what}\nstatus: {json.dumps(seen['status'])[:3000]}")


def test_a_reservation_below_the_measured_need_is_flagged_before_the_crash_and_the_dump_fails(
        qemu: Qemu, dump_image: system.System, tmp_path: Path) -> None:
    seen = grow_and_crash(qemu, dump_image, tmp_path / "short", SHORT_MIB)
    status, row = seen["status"], readiness(seen["status"])
    check(seen, status["crashkernel_reserved_bytes"] == SHORT_MIB * MIB, "the reservation is not what was booted")
    check(seen, status["crashkernel_needed_bytes"] == NEEDED_MIB * MIB, "the need is not the measured one")
    check(seen, row["ok"] is False and not status["protected"], f"not flagged: {row}")
    check(seen, "crash memory" in seen["text"] and "SHORT by 32 MiB" in seen["text"],
          f"crashhpctl status does not say it: {seen['text']}")
    check(seen, len(seen["warnings"]) == 1, f"{len(seen['warnings'])} journal warnings for one spell of being short")
    # the OOM killer's own lines are KERN_WARNING, below the console's loglevel=4; its panic is not
    check(seen, seen["outcome"].endswith("panic: System is deadlocked on memory"),
          f"not the failure the benchmark saw at {SHORT_MIB} MiB (the kdump kernel out of memory in its boot, "
          f"nothing left to kill): {seen['outcome']}")


def test_the_measured_need_is_not_flagged_and_kdump_tools_saves_the_dump(
        qemu: Qemu, dump_image: system.System, tmp_path: Path) -> None:
    seen = grow_and_crash(qemu, dump_image, tmp_path / "enough", NEEDED_MIB)
    status, row = seen["status"], readiness(seen["status"])
    check(seen, (status["crashkernel_reserved_bytes"], status["crashkernel_needed_bytes"])
          == (NEEDED_MIB * MIB, NEEDED_MIB * MIB), "reserved and needed are not both the measured step")
    check(seen, row["ok"] is True, f"flagged: {row}")
    check(seen, seen["warnings"] == [], f"a warning with enough reserved: {seen['warnings']}")
    check(seen, seen["outcome"] == COMPLETE, f"kdump-tools did not save the dump: {seen['outcome']}")
