# SPDX-License-Identifier: GPL-2.0-only
"""crashhpd against Debian's udev rule on a real kernel: a 2 GiB hot-add each, in one QEMU guest on Linux 6.1.

Run (as the e2e tests do, it fetches Debian's parts into .cache/e2e on first use):
    .venv/bin/python tests/bench/guest_hotplug.py [--gib 2]

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

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e import initramfs, parts
from e2e.vm import GIB, HOTPLUG_BASE, Guest


def phase(guest: Guest, name: str, address: int, size: int, dimm: str) -> dict:
    guest.send("BENCH", "ARM", name)
    guest.expect("BENCHED")
    guest.hot_add_memory(size, address, dimm)
    guest.send("BENCH", "MEASURE", name, hex(address), hex(size))
    return guest.expect("BENCHED")


def row(label: str, a: object, b: object, ratio: str = "") -> str:
    return f"{label:<44} {a!s:>12} {b!s:>12} {ratio:>10}"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def ratio(baseline: float | None, ours: float | None) -> str:
    if not baseline or ours is None:
        return ""
    return f"{baseline / ours:.1f}x" if ours else "inf"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=int, default=2, help="size of each hot-added DIMM (default 2)")
    ap.add_argument("--keep", action="store_true", help="keep the guest's logs and print where")
    args = ap.parse_args()
    size = args.gib * GIB
    work = Path(tempfile.mkdtemp(prefix="crashhpd-bench-"))
    started = time.monotonic()
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
    print(row("", "crashhpd", "udev rule", "rule/ours"))
    print(row("memory uevents", ours["uevents"], rule["uevents"]))
    print(row("runs of the rule (kdump-config try-reload)", "-", rule["rule_runs"]))
    print(row("kexec -p loads", ours["loads"], rule["loads"], ratio(rule["loads"], ours["loads"])))
    print(row("kexec -p -u unloads", ours["unloads"], rule["unloads"]))
    print(row("burst: first to last uevent", ms(ours["burst_s"]), ms(rule["burst_s"])))
    print(row("last uevent -> newest load returned", ms(ours["lag_s"]), ms(rule["lag_s"]),
              ratio(rule["lag_s"], ours["lag_s"])))
    print(row("no crash kernel: unload -> load returned", ms(ours["unload_window_s"]), ms(rule["unload_window_s"])))
    print(row("no crash kernel: sampled every 1 ms", ms(ours["sampled_unloaded_s"]),
              ms(rule["sampled_unloaded_s"]), ratio(rule["sampled_unloaded_s"], ours["sampled_unloaded_s"])))
    print(row("  longest single stretch, sampled", ms(ours["sampled_unloaded_max_s"]),
              ms(rule["sampled_unloaded_max_s"])))
    print(row("median kexec -p load", ms(sorted(ours["load_s"])[len(ours["load_s"]) // 2]),
              ms(sorted(rule["load_s"])[len(rule["load_s"]) // 2])))
    if args.keep:
        print(f"\nguest logs: {work / 'guest'}")
    else:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
