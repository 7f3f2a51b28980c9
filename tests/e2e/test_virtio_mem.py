# SPDX-License-Identifier: GPL-2.0-only
"""Proof on a real kernel: memory plugged into a virtio-mem device is followed by crashhpd and saved in the dump,
and a kdump initramfs without virtio_mem is flagged before any crash.

Debian 12's 6.1 kernel, because it has no CONFIG_CRASH_HOTPLUG: its loaded header stays as it was unless
crashhpd's kexec backend reloads, so the control (no crashhpd) must miss the plugged memory; and because its
virtio_mem has the kdump mode (since 5.16: "memory hot(un)plug disabled in kdump kernel", register_vmcore_cb).
The guest boots with an empty virtio-mem-pci device (requested-size 0) whose 1 GiB region starts at 4 GiB;
the host asks for 448 MiB over QMP (qom-set requested-size), so the driver adds four 128 MiB memory blocks
and plugs 3.5 of them: the last block's upper 64 MiB stays unplugged inside RAM the header covers. Debian
builds virtio, virtio_pci and virtio_mem as modules: they go into a plain cpio archive ahead of the first
kernel's and, where the case says so, of the kdump kernel's (early archive + gzip main archive, as early
microcode + main archive are), and /init loads them.
"""

import hashlib
import json
import lzma
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import initramfs
from .parts import Kernel, Qemu
from .system import _modinfo_depends
from .test_kdump import covered
from .vm import BOOT_ARGS, HOTPLUG_BASE, MIB, Guest

MODULES = ("virtio_pci", "virtio_mem")  # and what they depend on (their .modinfo)
REGION = 1024 * MIB  # the device's memory backend: the most it can plug
PLUGGED = 448 * MIB  # what the host asks for: 3.5 memory blocks
BLOCKS = 512 * MIB  # the memory blocks the driver adds for it (128 MiB each)
PAGE = 4096
DEADLINE_S = 420.0  # under TCG: boot, crashhpd's first read of the 13 MiB kdump initrd (~20 s), plug, crash, dump
ZERO_PAGE = hashlib.sha256(bytes(PAGE)).hexdigest()
DEVICE = ["-object", f"memory-backend-ram,id=vmem0,size={REGION}",
          "-device", "virtio-mem-pci,id=vm0,memdev=vmem0,requested-size=0"]

Archives = Callable[[], initramfs.Archives]


def module_tree(kernel: Kernel, tree: Path) -> None:
    """MODULES and their dependencies at their own paths under lib/modules/<release>/, decompressed (busybox's
    insmod reads plain .ko), and etc/crashhpd-e2e/modules naming them in load order for /init."""
    found = {p.name.split(".ko")[0]: p for p in kernel.tree.glob("**/lib/modules/*/kernel/**/*.ko*")}
    ordered: list[str] = []
    seen: set[str] = set()

    def add(name: str) -> None:
        if name in seen or name not in found:  # not found: built into this kernel
            return
        seen.add(name)
        source = found[name]
        rel = source.relative_to(kernel.tree).with_suffix("") if source.suffix == ".xz" else \
            source.relative_to(kernel.tree)
        target = tree / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(lzma.decompress(source.read_bytes()) if source.suffix == ".xz" else source.read_bytes())
        for dependency in _modinfo_depends(target):
            add(dependency)
        ordered.append(f"/{rel}")

    for name in MODULES:
        add(name)
    (tree / "etc/crashhpd-e2e").mkdir(parents=True)
    (tree / "etc/crashhpd-e2e/modules").write_text("".join(f"{m}\n" for m in ordered))


def concatenated(out: Path, *parts: Path) -> Path:
    with open(out, "wb") as f:
        for part in parts:
            f.write(part.read_bytes())
    return out


def initrd(archives: initramfs.Archives, kernel: Kernel, work: Path, kdump_has_virtio_mem: bool) -> Path:
    """The first kernel's initrd: /boot's kernel and kdump initrd (the modules' archive ahead of the kdump
    archive, or not), then the modules' archive and the full archive."""
    work.mkdir(parents=True, exist_ok=True)
    module_tree(kernel, work / "modules")
    modules = work / "modules.cpio"
    initramfs.write_cpio(modules, work / "modules")
    kdump = concatenated(work / "kdump.img", modules, archives.kdump) if kdump_has_virtio_mem else archives.kdump
    full = concatenated(work / "full.img", modules, archives.full)
    return initramfs.first_kernel_initrd(initramfs.Archives(full, kdump), kernel.vmlinuz, work / "initrd.img")


def check(guest: Guest, condition: bool, what: str) -> None:
    if not condition:
        raise guest.failure(what)


def run(qemu: Qemu, archives: initramfs.Archives, kernel: Kernel, tmp_path: Path, mode: str,
        kdump_has_virtio_mem: bool, crash: bool = True) -> dict[str, Any]:
    """Boot, plug PLUGGED into the device, settle, write the pattern; crash and read it back (crash)."""
    image = initrd(archives, kernel, tmp_path / "initrd", kdump_has_virtio_mem)
    with Guest(qemu, kernel, image, tmp_path / "guest", mode, extra=DEVICE, deadline_s=DEADLINE_S,
               append=f"{BOOT_ARGS} crashhpd_e2e.mode={mode}") as guest:
        seen: dict[str, Any] = {"guest": guest, "loaded": guest.expect("LOADED")}
        check(guest, seen["loaded"]["exit"] == 0, f"kexec -p failed in the guest: {seen['loaded']}")
        seen["ready"] = guest.expect("READY")
        device = next(d["data"] for d in guest.qmp("query-memory-devices") if d["type"] == "virtio-mem")
        check(guest, device["memaddr"] == HOTPLUG_BASE and device["size"] == 0,
              f"not an empty device at 4 GiB: {device}")
        guest.qmp("qom-set", path="/machine/peripheral/vm0", property="requested-size", value=PLUGGED)
        guest.qmp_event("MEMORY_DEVICE_SIZE_CHANGE", 120, id="vm0", size=PLUGGED)
        guest.send("SETTLE", "MEMORY", hex(HOTPLUG_BASE), hex(BLOCKS))
        seen["settled"] = guest.expect("SETTLED")
        seen["plugged"] = next(d["data"] for d in guest.qmp("query-memory-devices") if d["type"] == "virtio-mem")
        if not crash:
            return seen
        guest.send("PATTERN", hex(HOTPLUG_BASE), hex(PLUGGED))
        seen["pattern"] = guest.expect("PATTERN")
        guest.send("CRASH")
        seen["crashing"] = guest.expect("CRASHING")
        seen["vmcore"] = guest.expect("VMCORE")
        guest.send("FIND", json.dumps(seen["pattern"]["pages"], separators=(",", ":")))
        seen["found"] = guest.expect("FOUND")
        guest.send("PROBE", hex(HOTPLUG_BASE + PLUGGED), hex(BLOCKS - PLUGGED))  # the unplugged sub-blocks
        seen["unplugged"] = guest.expect("PROBED")
        guest.send("DMESG")
        seen["dmesg"] = guest.expect("DMESG")
        guest.send("POWEROFF")
        check(guest, guest.wait_exit() == 0, "QEMU did not exit cleanly after the kdump kernel powered off")
        return seen


def readiness(status: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in status["readiness"] if r["check"] == name)


def test_plugged_virtio_mem_is_followed_saved_and_its_unplugged_part_read_as_the_kdump_driver_says(
        qemu: Qemu, boot: Callable[[str], tuple[Kernel, Path]], archives: initramfs.Archives, tmp_path: Path) -> None:
    kernel, _ = boot("6.1")
    seen = run(qemu, archives, kernel, tmp_path, "kexec", kdump_has_virtio_mem=True)
    guest, ready, settled = seen["guest"], seen["ready"], seen["settled"]
    status = settled["status"]
    # followed: memory uevents, exactly one reload, in sync, and the header read back from the kernel covers it
    check(guest, status["events_received"] - ready["status"]["events_received"] >= 2 * BLOCKS // (128 * MIB),
          f"crashhpd did not see an add and an online per memory block: {status}")
    reloads = settled["kexec_loads"][len(ready["kexec_loads"]):]
    check(guest, len(reloads) == 1, f"{len(reloads)} kexec -p runs for one plug: {reloads}")
    check(guest, settled["verify"]["in_sync"] and settled["verify"]["source"] == "kernel",
          f"crashhpctl verify: {settled['verify']}")
    check(guest, (status["kernel_header_in_sync"], status["uncovered_ram_bytes"]) == (True, 0), f"stale: {status}")
    check(guest, covered(settled["kernel_header"], HOTPLUG_BASE, BLOCKS) == BLOCKS,
          f"the header read back does not cover the plugged blocks: {settled['kernel_header']}")
    # the kdump initramfs was read from the loaded image, and has the module
    check(guest, status["kdump_initrd_missing_modules"] == [] and readiness(status, "kdump_initrd")["ok"] is True,
          f"virtio_mem flagged though the kdump initramfs has it: {status}")
    check(guest, str(status["kdump_initrd_source"]).startswith("the loaded crash image's initrd segment"),
          f"not read from the loaded image: {status['kdump_initrd_source']}")
    # saved: the whole of the blocks is in the vmcore, and the pattern written into plugged memory reads back
    vmcore, pattern, found = seen["vmcore"], seen["pattern"], seen["found"]
    check(guest, covered(vmcore["segments"], HOTPLUG_BASE, BLOCKS) == BLOCKS, f"the vmcore lacks them: {vmcore}")
    check(guest, seen["crashing"].get("pattern_moved") == 0, f"the kernel moved pattern pages: {seen['crashing']}")
    check(guest, (found["covered"], found["read"], found["sha256"]) == (pattern["count"], pattern["count"],
                                                                         pattern["sha256"]),
          f"the pattern's {pattern['count']} pages are not what was written: {found}")
    # the unplugged sub-blocks: the kdump kernel's virtio_mem, in its kdump mode, answers for them
    check(guest, "memory hot(un)plug disabled in kdump kernel" in seen["dmesg"],
          "the kdump kernel's virtio_mem did not start in its kdump mode")
    for page in seen["unplugged"]:
        check(guest, page["covered"] and page["bytes"] == PAGE and page.get("sha256") == ZERO_PAGE,
              f"an unplugged page did not read as zeros: {seen['unplugged']}")


def test_without_crashhpd_the_plugged_memory_is_missing_from_the_vmcore(
        qemu: Qemu, boot: Callable[[str], tuple[Kernel, Path]], archives: initramfs.Archives, tmp_path: Path) -> None:
    kernel, _ = boot("6.1")
    seen = run(qemu, archives, kernel, tmp_path, "control", kdump_has_virtio_mem=True)
    guest, vmcore, found = seen["guest"], seen["vmcore"], seen["found"]
    check(guest, covered(vmcore["segments"], HOTPLUG_BASE, BLOCKS) == 0, f"the stale header covers it: {vmcore}")
    check(guest, (found["covered"], found["read"]) == (0, 0), f"the pattern was found without crashhpd: {found}")
    check(guest, seen["pattern"]["count"] > 0, f"no pattern was written, so nothing was missed: {seen['pattern']}")


def test_a_kdump_initramfs_without_virtio_mem_is_flagged_before_any_crash(
        qemu: Qemu, boot: Callable[[str], tuple[Kernel, Path]], archives: initramfs.Archives, tmp_path: Path) -> None:
    kernel, _ = boot("6.1")
    seen = run(qemu, archives, kernel, tmp_path, "kexec", kdump_has_virtio_mem=False, crash=False)
    guest, ready, settled = seen["guest"], seen["ready"]["status"], seen["settled"]["status"]
    for when, status in (("at start", ready), ("after the plug", settled)):
        check(guest, status["kdump_initrd_missing_modules"] == ["virtio_mem"],
              f"virtio_mem not listed missing {when}: {status}")
        row = readiness(status, "kdump_initrd")
        check(guest, row["ok"] is False and "lacks virtio_mem" in row["reason"] and not status["protected"],
              f"not a failed readiness check {when}: {row}")
    check(guest, str(settled["kdump_initrd_source"]).startswith("the loaded crash image's initrd segment"),
          f"not read from the loaded image: {settled['kdump_initrd_source']}")
