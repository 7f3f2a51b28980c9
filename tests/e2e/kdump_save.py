# SPDX-License-Identifier: GPL-2.0-only
"""A dump saved as Debian saves it: kdump-tools in the kdump kernel, makedumpfile into /var/crash.

The systemd guest of system.py with makedumpfile added (kdump-tools only
recommends it; without it kdump-config's `makedumpfile ... | compress` fails
unseen and it says "saved vmcore" over an empty file), and a kdump initrd that
does what initramfs-tools' does for kdump-tools: mount the root file system and
hand over to systemd, which kdump-config's `systemd.unit=kdump-tools-dump.service`
makes run `kdump-config savecore` and then `reboot -f` (QEMU exits: -no-reboot).
The image is built into a cache of its own (base_image deletes other images of
the same release in its cache). Shared by tests/e2e/test_headroom.py and
tests/bench/crashkernel_headroom.py.
"""

import re
import time
from pathlib import Path

from . import parts, system
from .parts import CACHE, Kernel, Qemu
from .system import SystemGuest

RELEASE = system.Release("bookworm", (*system.BOOKWORM.packages, "makedumpfile"))
SERIES = "6.1"
IMAGE_CACHE = CACHE.parent / "e2e-kdump-save"
PANIC = "Kernel panic - not syncing"
COMPLETE = "complete"


def kdump_initrd(kernel: Kernel, work: Path) -> Path:
    """system/init, busybox and the virtio modules: what mounts the root file system and starts systemd."""
    work.mkdir(parents=True, exist_ok=True)
    return system.boot_initrd(kernel, parts.guest() / "bin/busybox", work / "kdump-initrd.cpio")


def prepare(qemu: Qemu, kernel: Kernel, work: Path) -> system.System:
    """The image with makedumpfile, this run's .deb, and kdump_initrd() as kdump-tools' initrd for `kernel`."""
    return system.prepare(qemu, {SERIES: kernel}, kdump_initrd(kernel, work), work / "system", release=RELEASE,
                          cache=IMAGE_CACHE)


def outcome(kdump_console: str, exited: bool) -> str:
    """What the kdump kernel did, from its console: COMPLETE when makedumpfile wrote the dump (its "The dumpfile
    is saved to", which its --dump-dmesg run before it does not print) and kdump-tools saved it, else what came
    instead (the OOM killer, a panic, the cp fallback, nothing before the deadline)."""
    if "The dumpfile is saved to" in kdump_console and "saved vmcore in" in kdump_console:
        return COMPLETE
    reasons = []
    invoked = re.findall(r"\] (\S+) invoked oom-killer", kdump_console)
    if invoked:
        killed = re.findall(r"Killed process \d+ \(([^)]+)\)", kdump_console)
        reasons.append(f"OOM in {', '.join(dict.fromkeys(invoked))}"
                       + (f", killed {', '.join(dict.fromkeys(killed))}" if killed else ""))
    if PANIC in kdump_console:
        reasons.append("panic: " + kdump_console.split(PANIC, 1)[1].splitlines()[0].strip(" :"))
    if "falling back to 'cp'" in kdump_console:
        reasons.append("makedumpfile failed, cp fallback")
    if "failed to save vmcore" in kdump_console:
        reasons.append("kdump-tools: failed to save vmcore")
    if not exited and PANIC not in kdump_console:
        reasons.append("no reboot before the deadline")
    return "; ".join(reasons) or "no dump saved"


def crash_and_save(g: SystemGuest, timeout_s: float) -> tuple[str, str]:
    """Panic the guest; (outcome, the kdump kernel's console) once QEMU exits (reboot -f after savecore), the
    kdump kernel panics too, or `timeout_s` passes."""
    log_from = len(g.guest.console.read_text(errors="replace"))
    g.guest.send("CRASH")
    g.guest.expect("CRASHING")
    deadline = time.monotonic() + timeout_s
    while True:
        exited = g.guest.proc.poll() is not None
        text = g.guest.console.read_text(errors="replace")[log_from:]
        first = text.find(PANIC)
        kdump = text[first + len(PANIC):] if first >= 0 else ""
        if exited or PANIC in kdump or time.monotonic() > deadline:
            break
        time.sleep(1)
    if not exited and PANIC in kdump:
        time.sleep(2)  # the panic's last lines
        text = g.guest.console.read_text(errors="replace")[log_from:]
        kdump = text[text.find(PANIC) + len(PANIC):]
    return outcome(kdump, exited), kdump
