# SPDX-License-Identifier: GPL-2.0-only
"""The kernel's kexec state: what is loaded, whether the kernel keeps the header itself, what it allows.

These attributes change under crashhpd's feet (another loader, the kernel's
own hotplug handling, a failed load that freed the image), so they are read
with every snapshot, in this one place, and handed to whoever decides:
the backends never read them on their own.
"""

import os
from dataclasses import dataclass

from .files import read_int, read_text, under

CRASH_LOADED = "sys/kernel/kexec_crash_loaded"
CRASH_SIZE = "sys/kernel/kexec_crash_size"
# since Linux commit 88a6f8994421 ("crash: memory and CPU hotplug sysfs attributes", v6.6)
CRASH_HOTPLUG_CPU = "sys/devices/system/cpu/crash_hotplug"
CRASH_HOTPLUG_MEMORY = "sys/devices/system/memory/crash_hotplug"
ELFCOREHDR_SIZE = "sys/kernel/crash_elfcorehdr_size"
LOAD_LIMIT = "proc/sys/kernel/kexec_load_limit_panic"
LOCKDOWN = "sys/kernel/security/lockdown"
BOOT_ID = "proc/sys/kernel/random/boot_id"
# Since "kexec: move sysfs entries to /sys/kernel/kexec" (merged after v6.18) the kexec attributes are
# there, the old names deprecated ("removed after 2028"): each is read under its new name, else its old one.
NEW_NAMES = {
    CRASH_LOADED: "sys/kernel/kexec/crash_loaded",
    CRASH_SIZE: "sys/kernel/kexec/crash_size",
    ELFCOREHDR_SIZE: "sys/kernel/kexec/crash_elfcorehdr_size",
    "sys/kernel/kexec_crash_cma_ranges": "sys/kernel/kexec/crash_cma_ranges",
}


def kexec_path(root: str, rel: str) -> str:
    """Where the attribute is on this kernel: its new name under /sys/kernel/kexec/, else its old one."""
    if rel in NEW_NAMES and os.path.lexists(under(root, NEW_NAMES[rel])):
        return NEW_NAMES[rel]
    return rel


def kexec_sysfs(root: str) -> str:
    """Which spelling this kernel publishes, as status reports it: "kernel/kexec" or "kernel"."""
    return "kernel/kexec" if kexec_path(root, CRASH_LOADED) != CRASH_LOADED else "kernel"


@dataclass(frozen=True, slots=True)
class KernelState:
    """Each value as the kernel published it; None where this kernel does not have the file."""

    crash_loaded: int | None  # 1 while a crash kernel is loaded
    crash_size: int | None  # bytes reserved by crashkernel=
    elfcorehdr_size: int | None  # phdr bytes of the segment the kernel sizes (Linux 6.6+, CONFIG_CRASH_HOTPLUG)
    crash_hotplug_cpu: int | None  # 1: the kernel rewrites the loaded header on CPU hotplug
    crash_hotplug_memory: int | None  # 1: the same for memory
    load_limit: int | None  # kexec_load_limit_panic: crash loads still allowed, -1 unlimited
    lockdown: str | None  # the lockdown LSM's modes, the active one in brackets
    boot_id: str | None
    sysfs: str = "kernel"  # where the kexec attributes were read: /sys/"kernel/kexec"/ (after v6.18) or /sys/"kernel"/
    # filled by the snapshot (read_snapshot), left unknown by read_kernel_state alone: the loaded crash kernel's
    # command line as its boot parameters hold it (None: not read), and the memory devices ACPI lists
    crash_cmdline: str | None = None
    acpi_memory_devices: int = 0

    @property
    def updates_header(self) -> bool:
        """Whether the kernel keeps the loaded image current itself: since Linux commit 247262756121
        ("crash: add generic infrastructure for crash hotplug support", v6.6), when the loader asked."""
        return 1 in (self.crash_hotplug_cpu, self.crash_hotplug_memory)

    @property
    def kexec_load_forbidden(self) -> bool:
        """Lockdown (e.g. under Secure Boot) refuses kexec_load; only kexec_file_load (-s) still works."""
        return lockdown_forbids_kexec_load(self.lockdown)


def lockdown_forbids_kexec_load(text: str | None) -> bool:
    return text is not None and ("[integrity]" in text or "[confidentiality]" in text)


def read_kernel_state(root: str) -> KernelState:
    """Every attribute, read now; a malformed one is a ParseError naming the file."""
    boot_id = read_text(root, BOOT_ID)
    return KernelState(
        crash_loaded=read_int(root, kexec_path(root, CRASH_LOADED)),
        crash_size=read_int(root, kexec_path(root, CRASH_SIZE)),
        elfcorehdr_size=read_int(root, kexec_path(root, ELFCOREHDR_SIZE)),
        crash_hotplug_cpu=read_int(root, CRASH_HOTPLUG_CPU),
        crash_hotplug_memory=read_int(root, CRASH_HOTPLUG_MEMORY),
        load_limit=read_int(root, LOAD_LIMIT, signed=True),
        lockdown=read_text(root, LOCKDOWN),
        boot_id=boot_id.strip() if boot_id else None,
        sysfs=kexec_sysfs(root),
    )
