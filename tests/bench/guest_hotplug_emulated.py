# SPDX-License-Identifier: GPL-2.0-only
"""History: crashhpd against an emulation of Debian's udev rule, 2 GiB hot-added each, in the initramfs guest.

tests/bench/guest_hotplug.py replaced it: it runs the real rule under real
udevd in the systemd guest. This one stays to compare with the figures the
docs/benchmarks.md keeps under "history (emulated rule)".

Run (as the e2e tests do, it fetches Debian's parts into .cache/e2e on first use):
    .venv/bin/python tests/bench/guest_hotplug_emulated.py [--gib 2]

The guest (tests/e2e/guest/hotplug_bench.py) first runs `crashhpd run` with the kexec
backend and the host hot-adds one DIMM; then it stops crashhpd, emulates
Debian's 50-kdump-tools.rules (a `kdump-config try-reload` per memory online
uevent: flock, `kexec -p -u`, `kexec -p`) and the host hot-adds a second DIMM
of the same size. Both call the same kexec through a shim that logs every
call with its start and end time; a separate process reads
/sys/kernel/kexec_crash_loaded every millisecond.

Printed per phase: memory uevents, runs of the rule, kexec loads and unloads,
the lag from the last uevent until the newest load returned (the header is
correct from then on), and how long no crash kernel was loaded: from the
unload/load timestamps, and as sampled. Under TCG every kexec is slow; the
ratios between the phases are what carries over.

crashhpd never unloads, yet the sampler sees a few tens of milliseconds with
no crash kernel around its one load: inside kexec_load the kernel frees the
old crash image before it copies the new one into the same reserved memory.
The rule pays that too, plus everything between its unload and its load.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e import initramfs, parts
from e2e.vm import GIB, HOTPLUG_BASE, Guest
from guest_hotplug import arguments, done, table  # its successor's, beside it


def phase(guest: Guest, name: str, address: int, size: int, dimm: str) -> dict:
    guest.send("BENCH", "ARM", name)
    guest.expect("BENCHED")
    guest.hot_add_memory(size, address, dimm)
    guest.send("BENCH", "MEASURE", name, hex(address), hex(size))
    return guest.expect("BENCHED")


def main() -> int:
    args, work, started = arguments(__doc__ or "", 2)
    size = args.gib * GIB
    qemu, kernel = parts.qemu(), parts.kernel("6.1")
    initrd = initramfs.first_kernel_initrd(initramfs.build(parts.guest(), work / "initramfs"), kernel.vmlinuz,
                                           work / "initrd.cpio")
    memory = f"1G,slots=4,maxmem={1 + 2 * args.gib + 1}G"
    with Guest(qemu, kernel, initrd, work / "guest", "bench", deadline_s=900, memory=memory) as guest:
        guest.expect("LOADED")
        guest.expect("READY")
        ours = phase(guest, "crashhpd", HOTPLUG_BASE, size, "dimm0")
        rule = phase(guest, "rule", HOTPLUG_BASE + size, size, "dimm1")
        accel = guest.accel
    for result in (ours, rule):
        if result["failed"]:
            print(f"{result['phase']}: failed kexec runs: {result['failed']}", file=sys.stderr)
    print(f"Linux {kernel.version} under QEMU ({accel}); {args.gib} GiB hot-added per phase "
          f"({size // (128 << 20)} memory blocks); {time.monotonic() - started:.0f} s in all\n")
    table(ours, rule)
    return done(args, work)


if __name__ == "__main__":
    sys.exit(main())
