# SPDX-License-Identifier: GPL-2.0-only
"""Proof on real kernels: hot-add to a QEMU guest, crash it, and look for what was added in /proc/vmcore.

Each test boots Debian's kernel with the crashhpd initramfs (see initramfs.py
and guest/agent.py), hot-adds 512 MiB over QMP (4 memory blocks, an add and
an online uevent each) or a CPU, waits until the guest says the burst is
handled, panics it with sysrq, and reads /proc/vmcore in the kdump kernel.
The control tests run the same guest without crashhpd and must find the DIMM
or the CPU's note missing: that is what shows the other tests can fail.

A DIMM counts as saved only when the known pattern the guest wrote into it
(guest/dimm_pattern.py: up to 4 MiB of pages, each unique to a random seed and its
physical address) reads back from /proc/vmcore with the same sha256: a PT_LOAD
that covers the range, or a page that reads, is not enough (QEMU answers reads
of memory that is gone, and a kdump kernel that took the DIMM as its own RAM
fails them with EFAULT).
"""

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .parts import Kernel, Qemu
from .vm import BOOT_ARGS, GIB, HOTPLUG_BASE, MIB, Guest

BOOT_CPUS = 2
DIMM = 512 * MIB
PAGE = 4096
KEXEC_TOOLS_ADDS = r" acpi_rsdp=0x[0-9a-f]+ elfcorehdr=\d+K"  # what kexec-tools 2.0.25 appends (BIOS guest)
BLOCK_EVENTS = 2 * DIMM // (128 * MIB)  # add + online per 128 MiB memory block
DIMM_RANGE = f"+ RAM {HOTPLUG_BASE:#x}-{HOTPLUG_BASE + DIMM - 1:#x} (512 MiB)"
SECOND = HOTPLUG_BASE + DIMM  # the DIMM hot-added and removed again (remove=True)
MOVABLE = "memhp_default_state=online_movable"  # after BOOT_ARGS' "online", so it wins: a removable DIMM
NO_RECOVER = "crashhpd_e2e.recover=0"  # [kernel] recover = false

# check_timer() panics a first or kdump kernel whose timer did not tick within its few-ms probe ("IO-APIC + timer
# doesn't work!", seen once on 6.1 under TCG on a loaded host); with this, timer_irq_works() does not probe
TCG_ARGS = "no_timer_check"
DEADLINE_S = 300.0  # a bound on a hung guest, not a timing: a loaded 2-core host runs a case in 90 to 150 s under TCG
Boot = Callable[[str], tuple[Kernel, Path]]


def covered(segments: list[dict[str, Any]], start: int, size: int) -> int:
    """Bytes of [start, start + size) that the PT_LOADs of /proc/vmcore hold."""
    loads = sorted((s["paddr"], s["paddr"] + s["filesz"]) for s in segments if s["type"] == "PT_LOAD")
    total, reach = 0, start
    for lo, hi in loads:
        lo, hi = max(lo, reach), min(hi, start + size)
        if hi > lo:
            total += hi - lo
            reach = hi
    return total


def check(guest: Guest, condition: bool, what: str) -> None:
    if not condition:
        raise guest.failure(what)


def run_guest(qemu: Qemu, boot: Boot, tmp_path: Path, series: str, mode: str, plug: str = "memory",
              params: str = "", remove: bool = False) -> dict[str, Any]:
    """Boot, hot-add a DIMM and write the pattern into it (or a CPU, or take one offline and back), let the
    guest settle, crash it; everything each stage reported. `params`: more crashhpd_e2e.* for the agent (and
    kernel parameters); `remove`: a second DIMM hot-added and removed again before the crash."""
    kernel, initrd = boot(series)
    smp = f"{BOOT_CPUS},maxcpus={BOOT_CPUS + 1}" if plug == "cpu" else str(BOOT_CPUS)
    with Guest(qemu, kernel, initrd, tmp_path / "guest", mode, smp=smp, deadline_s=DEADLINE_S,
               append=f"{BOOT_ARGS} {TCG_ARGS} crashhpd_e2e.mode={mode} {params}".strip()) as guest:
        seen: dict[str, Any] = {"guest": guest, "loaded": guest.expect("LOADED")}
        check(guest, seen["loaded"]["exit"] == 0, f"kexec -p failed in the guest: {seen['loaded']}")
        seen["ready"] = guest.expect("READY")
        if plug == "memory":
            seen["dimm"] = guest.hot_add_memory(DIMM, HOTPLUG_BASE)
            check(guest, seen["dimm"]["addr"] == HOTPLUG_BASE, f"QEMU put the DIMM elsewhere: {seen['dimm']}")
            guest.send("SETTLE", "MEMORY", hex(HOTPLUG_BASE), hex(DIMM))
        elif plug == "cpu":
            seen["cpu"] = guest.hot_add_cpu()
            guest.send("SETTLE", "CPU", BOOT_CPUS)  # the guest numbers it after the boot CPUs
        else:  # "cpu-offline": a boot CPU offline, then online again before the crash
            guest.send("SETTLE", "CPU-OFFLINE", BOOT_CPUS - 1)
            seen["offline"] = guest.expect("SETTLED")
            guest.send("SETTLE", "CPU", BOOT_CPUS - 1)
        seen["settled"] = guest.expect("SETTLED")
        if plug == "memory":
            guest.send("PATTERN", hex(HOTPLUG_BASE), hex(DIMM))
            seen["pattern"] = guest.expect("PATTERN")
        if remove:
            seen["removed"] = add_and_remove(guest)
        guest.send("CRASH")
        crashing = guest.expect("CRASHING")
        check(guest, crashing["pattern_moved"] == 0, f"the kernel moved pages of the pattern: {crashing}")
        seen["vmcore"] = guest.expect("VMCORE")
        guest.send("PROBE", hex(HOTPLUG_BASE), hex(DIMM))
        seen["probed"] = guest.expect("PROBED")
        if remove:
            guest.send("PROBE", hex(SECOND), hex(DIMM))
            seen["probed_removed"] = guest.expect("PROBED")
        if "pattern" in seen:
            guest.send("FIND", json.dumps(seen["pattern"]["pages"], separators=(",", ":")))
            seen["found"] = guest.expect("FOUND")
        guest.send("POWEROFF")
        check(guest, guest.wait_exit() == 0, "QEMU did not exit cleanly after the kdump kernel powered off")
        return seen


def add_and_remove(guest: Guest) -> dict[str, Any]:
    """A second DIMM hot-added, then removed (device_del: the guest offlines, removes and ejects it); what
    the guest reported once crashhpd had handled the removal."""
    check(guest, guest.hot_add_memory(DIMM, SECOND, "dimm1")["addr"] == SECOND, "QEMU put the second DIMM elsewhere")
    guest.send("SETTLE", "MEMORY", hex(SECOND), hex(DIMM))
    guest.expect("SETTLED")
    guest.hot_remove_memory("dimm1")
    guest.send("SETTLE", "GONE", hex(SECOND), hex(DIMM))
    return guest.expect("SETTLED")


def assert_pattern(seen: dict[str, Any], outcome: str) -> None:
    """What became of the pattern in the dump: "found" (every page read, the sha256 of what was written),
    "missing" (no PT_LOAD covers a page of it) or "EFAULT" (every page covered, every read EFAULT)."""
    guest, written, found = seen["guest"], seen["pattern"], seen["found"]
    count = written["count"]
    if outcome == "found":
        ok = (found["read"], found["sha256"]) == (count, written["sha256"])
    elif outcome == "missing":
        ok = found["covered"] == 0
    else:
        ok = (found["covered"], found["read"], found["errors"]) == (count, 0, {outcome: count})
    check(guest, ok, f"the pattern ({count} pages, sha256 {written['sha256']}) is not {outcome} in the dump: {found}")


def header_check(status: dict[str, Any]) -> dict[str, Any]:
    """The readiness row `header` of a status."""
    return next(row for row in status["readiness"] if row["check"] == "header")


def one_reload(seen: dict[str, Any]) -> dict[str, Any]:
    """The settled status, after checking that the burst cost exactly one `kexec -p` and left crashhpd in sync."""
    guest, ready, settled = seen["guest"], seen["ready"], seen["settled"]
    check(guest, ready["status"]["backend"] == "kexec", f"not the kexec backend: {ready['status']}")
    check(guest, ready["kexec_loads"] == [], f"crashhpd loaded at a start whose crash kernel was right: {ready}")
    status = settled["status"]
    reloads = settled["kexec_loads"][len(ready["kexec_loads"]):]
    check(guest, len(reloads) == 1, f"{len(reloads)} kexec -p runs for one hot-add burst: {reloads}")
    check(guest, status["applies"] == ready["status"]["applies"] + 1, f"crashhpd's own count disagrees: {status}")
    check(guest, settled["verify"]["in_sync"], f"crashhpctl verify: {settled['verify']}")
    assert_the_kernels_header_read_back(seen)
    return status


def assert_the_kernels_header_read_back(seen: dict[str, Any]) -> None:
    """crashhpd read the header the real kernel holds (BTF, kallsyms, /proc/kcore) and found it complete,
    at boot and after the hot-add: the reader works on this kernel, and verify used it."""
    guest = seen["guest"]
    for when in ("ready", "offline", "settled"):
        if when not in seen:
            continue
        status = seen[when]["status"]
        check(guest, status["kernel_header_readable"] is True,
              f"the kernel's header could not be read back ({when}): {status['kernel_header_unreadable_reason']}")
        check(guest, (status["kernel_header_in_sync"], status["uncovered_ram_bytes"], status["missing_cpu_notes"],
                      status["stale_ram_bytes"]) == (True, 0, 0, 0), f"the kernel's header misses something: {status}")
    check(guest, seen["settled"]["verify"]["source"] == "kernel", f"verify did not use it: {seen['settled']['verify']}")
    settled = seen["settled"]
    check(guest, settled["kernel_header"] == settled["model_header"],
          f"the header read back is not crashhpd's model of it, field for field: {settled['kernel_header']} "
          f"against {settled['model_header']}")
    assert_the_kdump_kernel_used_what_was_read(seen)


def assert_the_kdump_kernel_used_what_was_read(seen: dict[str, Any]) -> None:
    """What crashhpd read back is what the kdump kernel turned into /proc/vmcore: the same PT_LOADs (address
    and size; the kdump kernel rewrites only their file offsets) and one NT_PRSTATUS per CPU note."""
    guest, vmcore = seen["guest"], seen["vmcore"]
    read = seen["removed" if "removed" in seen else "settled"]["kernel_header"]  # the last read before the crash

    def loads(segments: list[dict[str, Any]]) -> list[tuple[int, int]]:
        return sorted((s["paddr"], s["memsz"]) for s in segments if s["type"] == "PT_LOAD" and s["memsz"])

    check(guest, loads(read) == loads(vmcore["segments"]),
          f"the vmcore's PT_LOADs are not the header read back: {loads(read)} against {loads(vmcore['segments'])}")
    cpu_notes = sum(1 for s in read if s["type"] == "PT_NOTE") - 1  # all but VMCOREINFO
    check(guest, vmcore["prstatus"] == cpu_notes,
          f"{vmcore['prstatus']} NT_PRSTATUS in the vmcore, {cpu_notes} CPU notes in the header read back")


def assert_dimm_saved(seen: dict[str, Any]) -> None:
    guest: Guest = seen["guest"]
    saved = covered(seen["vmcore"]["segments"], HOTPLUG_BASE, DIMM)
    check(guest, saved == DIMM, f"/proc/vmcore holds {saved} of the DIMM's {DIMM} bytes: {seen['vmcore']}")
    for page in seen["probed"]:
        check(guest, page["covered"] and page["bytes"] == 4096,
              f"reading /proc/vmcore at {page['address']:#x} failed: {seen['probed']}")
    assert_pattern(seen, "found")


def test_kexec_backend_reloads_once_and_the_dimm_is_in_the_vmcore(qemu: Qemu, boot: Boot, tmp_path: Path) -> None:
    seen = run_guest(qemu, boot, tmp_path, "6.1", "kexec")
    status = one_reload(seen)
    check(seen["guest"], status["events_received"] >= BLOCK_EVENTS,
          f"crashhpd saw {status['events_received']} events, the hot-add makes {BLOCK_EVENTS}: {status}")
    check(seen["guest"], status["last_changes"] == [DIMM_RANGE], f"the reload was not for the DIMM: {status}")
    assert_dimm_saved(seen)


def test_without_crashhpd_the_dimm_is_missing_from_the_vmcore(qemu: Qemu, boot: Boot, tmp_path: Path) -> None:
    seen = run_guest(qemu, boot, tmp_path, "6.1", "control")
    guest = seen["guest"]
    saved = covered(seen["vmcore"]["segments"], HOTPLUG_BASE, DIMM)
    check(guest, saved == 0, f"the stale header covers {saved} bytes of the DIMM: {seen['vmcore']}")
    check(guest, not any(page["covered"] for page in seen["probed"]), f"the DIMM was readable: {seen['probed']}")
    assert_pattern(seen, "missing")
    # 1 GiB booted, less the 256 MiB crash kernel (placed differently from boot to boot) and firmware holes
    boot_ram = covered(seen["vmcore"]["segments"], 0, 4 * GIB)
    check(guest, boot_ram >= 700 * MIB,
          f"the control's vmcore lacks boot RAM too ({boot_ram >> 20} MiB), so it proves nothing: {seen['vmcore']}")


def test_kernel_that_updates_the_header_itself_gets_no_reload_and_without_recovery_keeps_a_removed_dimm(
        qemu: Qemu, boot: Boot, tmp_path: Path) -> None:
    """6.12 keeps its own header on a hot-add: no reload, the DIMM's pattern in the dump. Then a second DIMM
    hot-added and removed with [kernel] recover = false, the negative control of the systemd guest's hot-remove
    (test_system.py, where crashhpd's recovery drops the range): 6.12 rebuilds its header at MEM_OFFLINE, while
    the range is still System RAM, so without crashhpd's reload the removed DIMM's PT_LOAD stays in the dump,
    and crashhpd said so before the crash (stale_ram_bytes, the readiness check `header`, verify)."""
    seen = run_guest(qemu, boot, tmp_path, "6.12", "auto", params=f"{NO_RECOVER} {MOVABLE}", remove=True)
    guest, ready, settled = seen["guest"], seen["ready"], seen["settled"]
    check(guest, ready["kexec_loads"] == [], f"crashhpd loaded at a start whose crash kernel was right: {ready}")
    check(guest, "-s" in seen["loaded"]["argv"], f"not loaded with kexec_file_load: {seen['loaded']}")
    status = settled["status"]
    check(guest, ready["status"]["backend"] == "kernel" and status["crash_hotplug_memory"] == 1,
          f"auto did not pick the passive kernel backend: {ready['status']}")
    check(guest, status["events_received"] >= BLOCK_EVENTS, f"crashhpd missed the hot-add: {status}")
    check(guest, settled["kexec_loads"] == [], f"kexec ran under the kernel backend: {settled['kexec_loads']}")
    check(guest, settled["verify"]["in_sync"], f"crashhpctl verify says out of sync: {settled['verify']}")
    assert_the_kernels_header_read_back(seen)  # the header the kernel rewrote itself, read back
    assert_dimm_saved(seen)
    removed = seen["removed"]["status"]
    check(guest, (removed["kernel_header_in_sync"], removed["stale_ram_bytes"], removed["uncovered_ram_bytes"])
          == (False, DIMM, 0) and removed["errors"].get("kernel-header-stale", 0) >= 1,
          f"crashhpd did not see the removed DIMM left in the kernel's header: {removed}")
    row = header_check(removed)
    check(guest, row["ok"] is False and "cover 512 MiB that is gone" in row["reason"] and not removed["protected"]
          and not seen["removed"]["verify"]["in_sync"], f"crashhpd did not say so: {row}, verify {seen['removed']}")
    check(guest, seen["removed"]["kexec_loads"] == [], f"a reload with recover = false: {seen['removed']}")
    stays = covered(seen["vmcore"]["segments"], SECOND, DIMM)
    check(guest, stays == DIMM, f"the removed DIMM's PT_LOAD covers {stays} bytes in the dump: {seen['vmcore']}")
    # why the PT_LOAD and the pattern are what is asserted, never that pages read: QEMU answers reads of the
    # removed DIMM's range, so a dump over memory that is gone reads without an error
    check(guest, all(page["bytes"] == PAGE and "error" not in page for page in seen["probed_removed"]),
          f"the removed DIMM's pages did not read: {seen['probed_removed']}")


def test_a_kernel_that_does_not_update_its_header_is_caught_and_recovered(qemu: Qemu, boot: Boot,
                                                                         tmp_path: Path) -> None:
    """6.12 with an image loaded by kexec_load (no --hotplug): the kernel leaves its header alone on hotplug.
    crashhpd, told the backend is `kernel`, reads the header back, sees the DIMM missing, and reloads once
    with kexec_file_load, after which the DIMM is in the vmcore."""
    seen = run_guest(qemu, boot, tmp_path, "6.12", "stale")
    guest, ready, settled = seen["guest"], seen["ready"], seen["settled"]
    stale_header_seen(seen)
    status = settled["status"]
    console = guest.console.read_text(errors="replace")
    check(guest, f"a dump taken now would miss {DIMM} bytes of RAM" in console,
          "the journal line does not say the whole DIMM was missing")
    reloads = settled["kexec_loads"][len(ready["kexec_loads"]):]
    check(guest, len(reloads) == 1 and "-s" in reloads[0]["args"].split(),
          f"not exactly one kexec_file_load recovery: {reloads}")
    check(guest, (status["kernel_header_in_sync"], status["uncovered_ram_bytes"]) == (True, 0),
          f"still stale after the recovery: {status}")
    assert_dimm_saved(seen)


def stale_header_seen(seen: dict[str, Any]) -> None:
    """6.12 with a kexec_load image: complete at start (no load by crashhpd), stale after the hot-add."""
    guest, ready, status = seen["guest"], seen["ready"], seen["settled"]["status"]
    check(guest, "-c" in seen["loaded"]["argv"], f"not loaded with kexec_load: {seen['loaded']}")
    check(guest, ready["status"]["backend"] == "kernel" and ready["status"]["kernel_header_in_sync"] is True
          and ready["kexec_loads"] == [], f"not the passive backend on a complete header, unloaded: {ready}")
    check(guest, status["errors"].get("kernel-header-stale", 0) >= 1, f"the stale header went unseen: {status}")


def test_with_recover_false_the_stale_kernel_header_is_only_reported_and_the_dimm_is_missing_from_the_dump(
        qemu: Qemu, boot: Boot, tmp_path: Path) -> None:
    """The negative control of the recovery above: [kernel] recover = false. crashhpd says before the crash
    that a dump would miss the DIMM (status, the readiness check `header`, verify), reloads nothing, and the
    dump then really lacks it: no PT_LOAD covers the DIMM, none of the pattern's pages is in the vmcore."""
    seen = run_guest(qemu, boot, tmp_path, "6.12", "stale", params=NO_RECOVER)
    guest, settled = seen["guest"], seen["settled"]
    stale_header_seen(seen)
    status = settled["status"]
    check(guest, (status["kernel_header_in_sync"], status["uncovered_ram_bytes"], status["stale_ram_bytes"])
          == (False, DIMM, 0), f"the stale header's count: {status}")
    check(guest, header_check(status)["ok"] is False and "miss 512 MiB of RAM" in header_check(status)["reason"]
          and not status["protected"] and not settled["verify"]["in_sync"],
          f"crashhpd did not say a dump would miss the DIMM: {header_check(status)}, verify {settled['verify']}")
    check(guest, settled["kexec_loads"] == [], f"a reload with recover = false: {settled['kexec_loads']}")
    assert_the_kdump_kernel_used_what_was_read(seen)  # the stale header crashhpd read is the one the dump used
    saved = covered(seen["vmcore"]["segments"], HOTPLUG_BASE, DIMM)
    check(guest, saved == 0, f"the stale header covers {saved} bytes of the DIMM: {seen['vmcore']}")
    assert_pattern(seen, "missing")


def test_kexec_backend_gets_a_hot_added_cpus_note_into_the_vmcore(qemu: Qemu, boot: Boot, tmp_path: Path) -> None:
    seen = run_guest(qemu, boot, tmp_path, "6.1", "kexec", plug="cpu")
    status = one_reload(seen)
    check(seen["guest"], seen["ready"]["status"]["cpus"] == BOOT_CPUS and status["cpus"] == BOOT_CPUS + 1,
          f"crashhpd did not count the new CPU: {status}")
    check(seen["guest"], seen["vmcore"]["prstatus"] == BOOT_CPUS + 1,
          f"{seen['vmcore']['prstatus']} CPU notes in /proc/vmcore, {BOOT_CPUS + 1} CPUs were online")


def test_without_crashhpd_the_hot_added_cpu_has_no_note(qemu: Qemu, boot: Boot, tmp_path: Path) -> None:
    seen = run_guest(qemu, boot, tmp_path, "6.1", "control", plug="cpu")
    check(seen["guest"], seen["vmcore"]["prstatus"] == BOOT_CPUS,
          f"{seen['vmcore']['prstatus']} CPU notes in /proc/vmcore; the stale header has {BOOT_CPUS}")


def test_the_boot_kernels_are_the_ones_the_cases_need(boot: Boot) -> None:
    """6.1 must not update the header itself (else the control proves nothing), 6.12 must."""
    old, _ = boot("6.1")
    new, _ = boot("6.12")
    assert old.version.startswith("6.1.") and "CONFIG_CRASH_HOTPLUG" not in old.config
    assert new.version.startswith("6.12.") and new.config.get("CONFIG_CRASH_HOTPLUG") == "y"
    assert all(k.config.get(c) == "y" for k in (old, new)
               for c in ("CONFIG_CRASH_DUMP", "CONFIG_PROC_VMCORE", "CONFIG_ACPI_HOTPLUG_MEMORY"))


@pytest.mark.parametrize("segments,expected", [
    ([{"type": "PT_LOAD", "paddr": HOTPLUG_BASE, "filesz": DIMM}], DIMM),
    ([{"type": "PT_LOAD", "paddr": HOTPLUG_BASE, "filesz": DIMM // 2},
      {"type": "PT_LOAD", "paddr": HOTPLUG_BASE + DIMM // 4, "filesz": DIMM // 2}], 3 * DIMM // 4),
    ([{"type": "PT_NOTE", "paddr": HOTPLUG_BASE, "filesz": DIMM},
      {"type": "PT_LOAD", "paddr": 0, "filesz": GIB}], 0),
])
def test_coverage_counts_overlaps_once_and_ignores_notes(segments: list[dict[str, Any]], expected: int) -> None:
    assert covered(segments, HOTPLUG_BASE, DIMM) == expected


def test_a_cpu_offline_and_online_again_on_6_12_changes_nothing_in_the_kernels_header_nor_in_crashhpds_model(
        qemu: Qemu, boot: Boot, tmp_path: Path) -> None:
    """Linux 6.6+ writes a note for every possible CPU and ignores online and offline. crashhpd's model (the
    passive backend's expected header) must do the same: with CPU 1 offline it still has both notes, equals the
    header read back field for field, and nothing reloads. Online again, the crash saves both CPUs' registers.

    A CPU hot-add cannot be shown on this kernel under QEMU 10.0: with -smp 2,maxcpus=3 it reports "CPU topo:
    Allowing 2 present CPUs plus 0 hotplug CPUs" and refuses the device_add ("ACPI: Unable to map lapic to
    logical cpu number"); 6.1 does bring it up (the CPU tests above)."""
    seen = run_guest(qemu, boot, tmp_path, "6.12", "auto", plug="cpu-offline")
    guest, ready, offline, settled = seen["guest"], seen["ready"], seen["offline"], seen["settled"]
    check(guest, ready["status"]["backend"] == "kernel", f"not the passive kernel backend: {ready['status']}")
    for when, step in (("offline", offline), ("online again", settled)):
        status = step["status"]
        check(guest, status["events_received"] > ready["status"]["events_received"],
              f"crashhpd saw no event for the CPU going {when}: {status}")
        check(guest, status["cpus"] == BOOT_CPUS and status["missing_cpu_notes"] == 0,
              f"with the CPU {when}, crashhpd's model has {status['cpus']} CPU notes: {status}")
        check(guest, step["kernel_header"] == step["model_header"],
              f"with the CPU {when}, the header read back is not crashhpd's model: {step['kernel_header']} "
              f"against {step['model_header']}")
        check(guest, step["verify"]["in_sync"] and step["verify"]["source"] == "kernel",
              f"crashhpctl verify with the CPU {when}: {step['verify']}")
        check(guest, step["kexec_loads"] == [], f"kexec ran with the CPU {when}: {step['kexec_loads']}")
    check(guest, offline["status"]["kernel_header_sha256"] == ready["status"]["kernel_header_sha256"]
          == settled["status"]["kernel_header_sha256"], "the kernel rewrote its header for a CPU online or offline")
    assert_the_kernels_header_read_back(seen)
    check(guest, seen["vmcore"]["prstatus"] == BOOT_CPUS,
          f"{seen['vmcore']['prstatus']} CPU notes in /proc/vmcore, {BOOT_CPUS} CPUs were online at the crash")


# --- the crash kernel's command line: read from the kernel, acpi_no_memhotplug ------------------------------


def passed_cmdline(loaded: dict[str, Any]) -> str:
    """The command line the guest handed kexec."""
    return next(a for a in loaded["argv"] if a.startswith("--command-line="))[len("--command-line="):]


def run_distro(qemu: Qemu, boot: Boot, tmp_path: Path, series: str, file_load: bool, complete: bool
               ) -> dict[str, Any]:
    """A crash kernel loaded as kdump-tools loads it by default (no acpi_no_memhotplug), crashhpd on `auto`
    with [kexec] complete_cmdline = `complete`; a 512 MiB DIMM hot-added, the guest crashed."""
    params = f"crashhpd_e2e.load={'file' if file_load else 'kexec'} crashhpd_e2e.complete={int(complete)}"
    seen = run_guest(qemu, boot, tmp_path, series, "distro", params=params)
    guest, loaded = seen["guest"], seen["loaded"]
    check(guest, ("-s" if file_load else "-c") in loaded["argv"], f"not the load path asked for: {loaded}")
    check(guest, "acpi_no_memhotplug" not in passed_cmdline(loaded), f"the load already has it: {loaded}")
    return seen


def read_back(seen: dict[str, Any], when: str) -> tuple[str, list[str]]:
    status = seen[when]["status"]
    return status["crash_kernel_cmdline"], status["crash_kernel_cmdline_missing"]


def assert_dimm_pages_read(seen: dict[str, Any], ok: bool) -> None:
    """Both probed pages of the DIMM (its first and last) are in a PT_LOAD of the vmcore, and read (ok) or
    fail with EFAULT (the kdump kernel took the DIMM as its own RAM)."""
    guest = seen["guest"]
    saved = covered(seen["vmcore"]["segments"], HOTPLUG_BASE, DIMM)
    check(guest, saved == DIMM, f"the header does not cover the DIMM ({saved} bytes): {seen['vmcore']}")
    for page in seen["probed"]:
        if ok:
            check(guest, page["bytes"] == PAGE and "error" not in page, f"a DIMM page did not read: {seen['probed']}")
        else:
            check(guest, page.get("error") == "EFAULT", f"a DIMM page did not fail with EFAULT: {seen['probed']}")
    assert_pattern(seen, "found" if ok else "EFAULT")


def test_6_12_file_load_command_line_is_read_back_and_without_acpi_no_memhotplug_the_dimm_reads_efault(
        qemu: Qemu, boot: Boot, tmp_path: Path) -> None:
    """kexec_file_load: the kernel prefixes "elfcorehdr=0x... " to what kexec passed, and status shows exactly
    that; the host can hot-add through ACPI, so acpi_no_memhotplug is listed missing. With the fix turned off
    (complete_cmdline = false) nothing reloads, and the dump of the hot-added DIMM fails as predicted."""
    seen = run_distro(qemu, boot, tmp_path, "6.12", file_load=True, complete=False)
    guest, ready, settled = seen["guest"], seen["ready"], seen["settled"]
    check(guest, seen["loaded"]["kimage"]["cmdline_buf"] == 0,
          f"struct kimage kept cmdline_buf after a file load: {seen['loaded']['kimage']}")
    for when in ("ready", "settled"):
        cmdline, lacking = read_back(seen, when)
        check(guest, re.fullmatch(r"elfcorehdr=0x[0-9a-f]+ " + re.escape(passed_cmdline(seen["loaded"])),
                                  cmdline or "") is not None,
              f"status at {when} does not show the loaded command line: {cmdline!r}")
        check(guest, lacking == ["acpi_no_memhotplug"], f"status at {when}: missing {lacking}")
    check(guest, ready["status"]["backend"] == "kernel", f"not the passive backend: {ready['status']}")
    check(guest, settled["kexec_loads"] == [], f"crashhpd reloaded with the fix off: {settled['kexec_loads']}")
    assert_dimm_pages_read(seen, ok=False)


def test_6_12_with_the_fix_the_one_reload_appends_acpi_no_memhotplug_and_the_dimm_is_in_the_dump(
        qemu: Qemu, boot: Boot, tmp_path: Path) -> None:
    seen = run_distro(qemu, boot, tmp_path, "6.12", file_load=True, complete=True)
    guest, ready, settled = seen["guest"], seen["ready"], seen["settled"]
    passed = passed_cmdline(seen["loaded"])
    reloads = settled["kexec_loads"]
    check(guest, len(reloads) == 1 and "-s" in reloads[0]["args"].split()
          and f"--command-line={passed} acpi_no_memhotplug" in reloads[0]["args"],
          f"not one kexec_file_load with the command line read plus acpi_no_memhotplug: {reloads}")
    for when in ("ready", "settled"):
        cmdline, lacking = read_back(seen, when)
        check(guest, re.fullmatch(r"elfcorehdr=0x[0-9a-f]+ " + re.escape(f"{passed} acpi_no_memhotplug"),
                                  cmdline or "") is not None and lacking == [],
              f"status at {when}: {cmdline!r}, missing {lacking}")
    check(guest, ready["kexec_loads"] == reloads, f"a reload after the first: {reloads}")
    assert_dimm_pages_read(seen, ok=True)


def test_6_1_kexec_load_command_line_is_read_back_and_crashhpds_own_reload_appends_what_it_lacks(
        qemu: Qemu, boot: Boot, tmp_path: Path) -> None:
    """kexec_load: kexec-tools appends " acpi_rsdp=0x... elfcorehdr=NK" to what it was passed, and status shows
    exactly that, with acpi_no_memhotplug missing (fix off: no reload at start). The hot-add's reload is crashhpd's own,
    which appends it: the DIMM is then in the dump."""
    seen = run_distro(qemu, boot, tmp_path, "6.1", file_load=False, complete=False)
    guest, ready, settled = seen["guest"], seen["ready"], seen["settled"]
    passed = passed_cmdline(seen["loaded"])
    cmdline, lacking = read_back(seen, "ready")
    check(guest, re.fullmatch(re.escape(passed) + KEXEC_TOOLS_ADDS, cmdline or "") is not None,
          f"status does not show the loaded command line: {cmdline!r}")
    check(guest, lacking == ["acpi_no_memhotplug"] and ready["kexec_loads"] == [], f"at start: {ready['status']}")
    reloads = settled["kexec_loads"]
    check(guest, len(reloads) == 1 and f"--command-line={passed} acpi_no_memhotplug" in reloads[0]["args"],
          f"not one reload of crashhpd's own with acpi_no_memhotplug appended: {reloads}")
    cmdline, lacking = read_back(seen, "settled")
    check(guest, re.fullmatch(re.escape(f"{passed} acpi_no_memhotplug") + KEXEC_TOOLS_ADDS, cmdline or "")
          is not None and lacking == [], f"after the reload: {cmdline!r}, missing {lacking}")
    assert_dimm_pages_read(seen, ok=True)


def test_6_1_with_the_fix_a_distribution_load_is_reloaded_once_at_start(qemu: Qemu, boot: Boot,
                                                                      tmp_path: Path) -> None:
    seen = run_distro(qemu, boot, tmp_path, "6.1", file_load=False, complete=True)
    guest, ready = seen["guest"], seen["ready"]
    passed = passed_cmdline(seen["loaded"])
    check(guest, len(ready["kexec_loads"]) == 1
          and f"--command-line={passed} acpi_no_memhotplug" in ready["kexec_loads"][0]["args"],
          f"not one reload at start with acpi_no_memhotplug appended: {ready['kexec_loads']}")
    cmdline, lacking = read_back(seen, "ready")
    check(guest, re.fullmatch(re.escape(f"{passed} acpi_no_memhotplug") + KEXEC_TOOLS_ADDS, cmdline or "")
          is not None and lacking == [], f"after the reload: {cmdline!r}, missing {lacking}")
    assert_dimm_pages_read(seen, ok=True)
