# SPDX-License-Identifier: GPL-2.0-only
"""What the crash kernel's command line must hold on this host, and the one to reload with when it does not.

A kdump kernel that finds hot-added DIMMs in the ACPI tables takes them as its own System RAM
(drivers/acpi/acpi_memhotplug.c), and /proc/vmcore then cannot read them: ioremap refuses RAM, so
each of their pages reads EFAULT (measured on Debian 6.1, 6.12 and 7.2 guests, issue 20).
`acpi_no_memhotplug` keeps that driver out; Fedora's kdumpctl appends it, Debian's kdump-tools does
not. Pure functions: the facts come from the snapshot.
"""

from collections.abc import Sequence

from .kdump_discovery import edit_cmdline, param_name, split_params

ACPI_NO_MEMHOTPLUG = "acpi_no_memhotplug"
# what the loaders add on their own: the kernel's kexec_file_load prefixes "elfcorehdr=0x... " (setup_cmdline()
# in arch/x86/kernel/kexec-bzimage64.c; kernels with the x86 dm-crypt key passing also "dmcryptkeys=0x... "),
# kexec-tools appends "acpi_rsdp=0x... elfcorehdr=...K" (seen from kexec-tools 2.0.25 in a Debian 6.1 guest).
# Passed back to a loader they would point at the old image's segments, or be added twice.
LOADER_PARAMS = frozenset({"elfcorehdr", "dmcryptkeys", "acpi_rsdp"})


def needed(acpi_memory_devices: int) -> tuple[str, ...]:
    """The parameters this host needs in its crash kernel's command line: `acpi_no_memhotplug` wherever
    ACPI lists memory devices (PNP0C80/PNP0C81), which is where it can hot-add a DIMM."""
    return (ACPI_NO_MEMHOTPLUG,) if acpi_memory_devices > 0 else ()


def missing(cmdline: str | None, wanted: Sequence[str]) -> list[str]:
    """The wanted parameters the command line lacks; none when it is not known (status says why)."""
    if cmdline is None:
        return []
    present = {param_name(p) for p in split_params(cmdline)}
    return [p for p in wanted if param_name(p) not in present]


def completed(cmdline: str, wanted: Sequence[str]) -> str:
    """The command line with each wanted parameter it lacks appended: what crashhpd loads itself."""
    return edit_cmdline(cmdline, (), *missing(cmdline, wanted))


def for_reload(loaded: str, wanted: Sequence[str]) -> str:
    """The command line read from a loaded image, without what its loader added, completed: a loader
    given it back adds its own again."""
    return completed(edit_cmdline(loaded, LOADER_PARAMS), wanted)
