# SPDX-License-Identifier: GPL-2.0-only
"""The smallest crashkernel= with which kdump-tools saves a complete dump, for a guest grown by hot-add.

Run (it builds what the e2e suite builds: the Debian 12 image with makedumpfile, this run's .deb):
    .venv/bin/python tests/bench/crashkernel_headroom.py [--sizes 2,4,16,32] [--steps 64,96,128,192,256,384,512]
        [--initrd-pad MIB] [--keep] [--system DIR]

One boot of tests/e2e/kdump_save.py's Debian 12 guest (Linux 6.1, systemd, kdump-tools
with acpi_no_memhotplug appended, makedumpfile, crashhpd on the kexec backend) per
(size, crashkernel=) pair: 2 GiB at boot (the memmap of hot-added RAM comes out of
boot RAM), DIMMs of at most 16 GiB hot-added to reach the size, crashhpd's reload
waited for, then a sysrq crash. The kdump kernel saves the dump the way Debian does
it: its initrd (system/init: busybox and the virtio modules, smaller than initramfs-tools' one)
mounts the root file system and hands over to systemd with kdump-config's
`systemd.unit=kdump-tools-dump.service`, which runs `kdump-config savecore`
(`makedumpfile -F -c -d 31 /proc/vmcore | compress > /var/crash/.../dump-incomplete`,
renamed `dump.<stamp>` on success, a `cp` of /proc/vmcore if makedumpfile fails),
then `reboot -f`, which ends QEMU (-no-reboot). The outcome is read from the
console: "makedumpfile Completed." and "saved vmcore in" is a complete dump;
otherwise the run says what came instead (the OOM killer, a panic, the cp fallback,
kdump-tools not loading at all, or nothing before the deadline).

Per size, the steps are tried upward from one step below the previous size's
smallest success, until one saves: the table gives that smallest step and what
failed at the step below it. Figures are from one run each, under QEMU with TCG
(slow, but memory is what is measured, not time). Also printed per run: the
reservation the first kernel made (/sys/kernel/kexec_crash_size), the crash
image's segments as crashhpd's reader finds them in the kernel (kernel, initrd,
boot parameters, header, purgatory), and what the kdump kernel said it had
("Memory: ...K/...K available").
"""

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e import initramfs, kdump_save, parts, system
from e2e.kdump_save import COMPLETE, SERIES
from e2e.system import SystemGuest
from e2e.vm import GIB, HOTPLUG_BASE

BOOT_GIB = 2
DIMM_MAX_GIB = 16  # QEMU cannot mmap a backend larger than the host's RAM (overcommit heuristic): more DIMMs
AFTER_CRASH_S = 1500.0  # the kdump kernel's boot and makedumpfile, under TCG
SEGMENTS = ("/usr/lib/crashhpd/bin/python3 -c 'from crashhpd.sysview.loaded_header import LoadedHeaderReader as R; "
            "import json; print(json.dumps([list(s) for s in R().read().segments]))'")


def one_run(qemu: parts.Qemu, image: system.System, work: Path, size_gib: int, crash_mib: int) -> dict[str, Any]:
    started = time.monotonic()
    added_gib = max(size_gib - BOOT_GIB, 0)
    dimms = [min(DIMM_MAX_GIB, added_gib - i) for i in range(0, added_gib, DIMM_MAX_GIB)]
    memory = f"{BOOT_GIB}G,slots={max(len(dimms), 1)},maxmem={max(size_gib, BOOT_GIB + 1)}G"
    run: dict[str, Any] = {"size_gib": size_gib, "crashkernel_mib": crash_mib}
    with SystemGuest(qemu, image, SERIES, work / f"{size_gib}G-{crash_mib}M", deadline_s=AFTER_CRASH_S + 1200,
                     memory=memory, kernel_args=f"crashkernel={crash_mib}M loglevel=7") as g:
        g.booted()
        run["reserved"] = int(g.sh("cat /sys/kernel/kexec_crash_size"))
        run["loaded"] = g.sh("cat /sys/kernel/kexec_crash_loaded").strip() == "1"
        if not run["loaded"]:
            run["outcome"] = "kdump-tools could not load the crash kernel"
            run["seconds"] = time.monotonic() - started
            return run
        if dimms:
            before = g.status()["events_received"]
            for i, gib in enumerate(dimms):
                g.guest.hot_add_memory(gib * GIB, HOTPLUG_BASE + i * DIMM_MAX_GIB * GIB, f"dimm{i}")
            g.wait("online", hex(HOTPLUG_BASE), hex(added_gib * GIB))
            g.sh("udevadm settle --timeout=600", timeout=620)
            g.wait("idle", before)
        status = g.status()
        run["in_sync"] = status.get("in_sync")
        run["ram"] = int(g.sh("awk '/MemTotal/ {print $2}' /proc/meminfo")) << 10
        segments = g.run(SEGMENTS)
        run["segments"] = json.loads(segments["stdout"]) if segments["exit"] == 0 else segments["stderr"][-300:]
        run["outcome"], kdump = kdump_save.crash_and_save(g, AFTER_CRASH_S)
    available = re.search(r"Memory: (\d+)K/(\d+)K available", kdump)
    run["kdump_memory_kib"] = [int(available.group(1)), int(available.group(2))] if available else None
    run["seconds"] = round(time.monotonic() - started)
    return run


def padded(image: system.System, kernel: parts.Kernel, mib: int, work: Path) -> system.System:
    """A copy of the image whose kdump initrd has `mib` MiB of random data more (a cpio member appended: the
    kernel unpacks it into the initramfs, then switch_root deletes it), written in with debugfs."""
    initrd = work / "kdump-initrd-padded.cpio"
    pad = work / "pad"
    pad.mkdir()
    (pad / "pad.bin").write_bytes(os.urandom(mib << 20))
    with open(initrd, "wb") as out:
        out.write(kdump_save.kdump_initrd(kernel, work).read_bytes())
    initramfs.write_cpio(work / "pad.cpio", pad)
    with open(initrd, "ab") as out:
        out.write((work / "pad.cpio").read_bytes())
    copy = work / "padded.raw"
    subprocess.run(["cp", "--sparse=always", str(image.image), str(copy)], check=True)
    target = f"/var/lib/kdump/initrd.img-{kernel.version}"
    subprocess.run(["debugfs", "-w", "-R", f"rm {target}", str(copy)], check=True, capture_output=True)
    subprocess.run(["debugfs", "-w", "-R", f"write {initrd} {target}", str(copy)], check=True, capture_output=True)
    print(f"kdump initrd padded by {mib} MiB: {initrd.stat().st_size} bytes", flush=True)
    return dataclasses.replace(image, image=copy)


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--sizes", default="2,4,16,32", help="guest RAM after the hot-add, GiB (default 2,4,16,32)")
    ap.add_argument("--steps", default="64,96,128,192,256,384,512", help="crashkernel= sizes tried, MiB")
    ap.add_argument("--keep", action="store_true", help="keep the guests' logs and print where")
    ap.add_argument("--system", type=Path, help="reuse the prepared image of an earlier --keep run (its system/)")
    ap.add_argument("--initrd-pad", type=int, default=0, metavar="MIB",
                    help="that much random data appended to the kdump initrd: does the need grow by its size?")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    steps = sorted(int(s) for s in args.steps.split(","))
    work = Path(tempfile.mkdtemp(prefix="crashhpd-bench-"))
    started = time.monotonic()
    qemu, kernel = parts.qemu(), parts.kernel(SERIES)
    # the kdump kernel boots the root file system with systemd, as Debian's kdump-tools has it do
    if args.system:
        image = system.System(args.system / "system.raw", {SERIES: kernel},
                              {SERIES: args.system / f"boot-{SERIES}.cpio"}, 0.0, "bookworm")
    else:
        image = kdump_save.prepare(qemu, kernel, work)
    if args.initrd_pad:
        image = padded(image, kernel, args.initrd_pad, work)
    print(f"Debian 12, Linux {kernel.version}", flush=True)
    runs = []
    first = 0
    for size in sizes:
        smallest = None
        for i in range(first, len(steps)):
            run = one_run(qemu, image, work, size, steps[i])
            runs.append(run)
            print(json.dumps(run), flush=True)
            if run["outcome"] == COMPLETE:
                smallest = i
                break
        first = max(0, smallest - 1) if smallest is not None else first
    print(f"\n{len(runs)} runs, {time.monotonic() - started:.0f} s\n")
    print("| RAM after hot-add | smallest crashkernel= that saved | below it |")
    print("| --- | --- | --- |")
    for size in sizes:
        mine = [r for r in runs if r["size_gib"] == size]
        ok = [r["crashkernel_mib"] for r in mine if r["outcome"] == COMPLETE]
        below = "; ".join(f"{r['crashkernel_mib']} MiB: {r['outcome']}" for r in mine
                          if ok and r["crashkernel_mib"] < ok[0])
        print(f"| {size} GiB | {f'{ok[0]} MiB' if ok else 'none of the steps'} | {below or '-'} |")
    if args.keep:
        print(f"\nguest logs: {work}")
    else:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
