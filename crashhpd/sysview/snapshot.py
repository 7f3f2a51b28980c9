# SPDX-License-Identifier: GPL-2.0-only
"""The system as the header needs it: every kernel file read once per update, under a configurable root.

One snapshot is what one update sees, read together so that every stage after
it decides on the same view; what stays fixed from boot to shutdown is read
once (BootConstants). A missing optional file is None: older kernels lack half.
"""

import os
import re
from dataclasses import dataclass, field, replace

from ..abi.elf import notes_of
from ..errors import ParseError, SnapshotError
from . import cpulist, iomem, kallsyms, kcore, virtio_mem
from .files import parse_int, read_int, read_int_in, read_text, under
from .iomem import Resource
from .kernel_state import KernelState, kexec_path, read_kernel_state
from .loaded_header import LoadedHeader, LoadedHeaderReader
from .ranges import Range

CPU_DIR = "sys/devices/system/cpu"
_CPU_NAME = re.compile(r"cpu(\d{1,5})")
IOMEM_READS = 4  # reads of /proc/iomem before giving up on one that never holds still
ACPI_DEVICES = "sys/bus/acpi/devices"
ACPI_MEMORY_HIDS = frozenset({"PNP0C80", "PNP0C81"})  # drivers/acpi/acpi_memhotplug.c's memory_device_ids


@dataclass(frozen=True, slots=True)
class BootConstants:
    """What stays fixed from boot to shutdown: read once, not on every hotplug burst."""

    kernel_text: int | None  # _text, KASLR'd
    kernel_end: int | None  # _end, when kallsyms lists it
    direct_map_base: int | None  # kexec-tools' rule, kcore.kexec_tools_page_offset(): RAM p_vaddr = base + paddr
    kernel_stext: int | None = None  # _stext: kexec-tools picks the kcore PT_LOAD holding it
    kcore_kernel_map: tuple[tuple[int, int], ...] = ()  # kcore.kernel_map(): (vaddr, memsz) in the image's mapping
    # each CPU directory's crash note, read when the directory first appears (see _read_crash_notes)
    cpu_notes: dict[str, "CpuNote"] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class CpuNote:
    addr: int
    size: int | None  # None: no crash_notes_size, an older kernel's (its ABI entry dates from April 2013)


@dataclass(frozen=True, slots=True)
class Snapshot:
    root: str
    ram: tuple[Range, ...]
    crash_kernel: tuple[Range, ...]
    kernel_code: Range | None
    kernel_bss: Range | None
    cpus_possible: frozenset[int] | None
    cpus_present: frozenset[int] | None
    cpus_online: frozenset[int] | None
    crash_notes: dict[int, CpuNote] = field(hash=False)
    vmcoreinfo: tuple[int, int] | None
    boot: BootConstants
    kernel: KernelState
    kernel_max: int | None = None
    crash_cma: tuple[Range, ...] = ()
    loaded_header: LoadedHeader | None = None  # the header the kernel holds, when a reader was asked to look
    resources: tuple[Resource, ...] = ()  # every /proc/iomem line, in file order
    virtio_mem_devices: int = 0  # virtio_mem.count_devices(): the kdump kernel then needs virtio_mem

    def cpu_set(self, which: str) -> frozenset[int]:
        """CPUs listed in possible/present/online; falls back to the CPUs that have notes."""
        value = {"possible": self.cpus_possible, "present": self.cpus_present, "online": self.cpus_online}[which]
        return value if value is not None else frozenset(self.crash_notes)


# --- pure parsers: text in, values out -------------------------------------------------


def parse_vmcoreinfo(text: str, path: str) -> tuple[int, int]:
    """`ADDR SIZE`, both hex (the kernel prints `%pa %x`): 0x...100c66000 1024 is 4132 bytes."""
    parts = text.split()
    if len(parts) != 2:
        raise ParseError(path, 1, text.strip(), "expected 'ADDR SIZE'")
    return parse_int(parts[0], path, 16), parse_int(parts[1], path, 16)


def parse_ranges(text: str, path: str) -> tuple[Range, ...]:
    """Lines of `START-END` in hex (kexec_crash_cma_ranges)."""
    out: list[Range] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        first, dash, last = line.strip().partition("-")
        try:
            start, end = parse_int(first, path, 16), parse_int(last, path, 16)  # int() would take '+' and '_'
        except ParseError:
            raise ParseError(path, lineno, line, "expected 'START-END' in hex") from None
        if not dash or start > end:
            raise ParseError(path, lineno, line, "expected 'START-END' in hex")
        out.append((start, end))
    return tuple(out)


# --- I/O at the edge --------------------------------------------------------------------


def _read_cpus(root: str, name: str) -> frozenset[int] | None:
    text = read_text(root, f"{CPU_DIR}/{name}")
    return None if text is None else cpulist.parse(text, under(root, f"{CPU_DIR}/{name}"))


def _read_crash_notes(root: str, seen: dict[str, CpuNote]) -> dict[int, CpuNote]:
    """The crash note of each CPU sysfs lists; `seen`, the notes of the directories listed before, is not read
    again. show_crash_notes() (drivers/base/cpu.c) prints per_cpu_ptr_to_phys(per_cpu_ptr(crash_notes, cpu)),
    a per-CPU area crash_notes_memory_init() allocates once at boot for every possible CPU, and
    crash_notes_size is sizeof(note_buf_t): both are fixed from boot to shutdown, and 128 reads at 64 CPUs
    were the largest part of an update's snapshot (tests/bench/update_cost.py)."""
    notes: dict[int, CpuNote] = {}
    path = under(root, CPU_DIR)
    try:  # opened once: listed and read through the same fd
        directory = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return notes
    except OSError as err:
        raise SnapshotError(f"{path}: {err.strerror}") from None
    try:
        try:
            entries = os.listdir(directory)
        except OSError as err:
            raise SnapshotError(f"{path}: {err.strerror}") from None
        for entry in entries:
            match = _CPU_NAME.fullmatch(entry)
            if not match:
                continue
            note = seen.get(entry)
            if note is None:
                addr = read_int_in(directory, path, f"{entry}/crash_notes", 16)
                if addr is None:
                    continue
                note = seen[entry] = CpuNote(addr, read_int_in(directory, path, f"{entry}/crash_notes_size"))
            notes[int(match.group(1))] = note
    finally:
        os.close(directory)
    return notes


def _count_acpi_memory_devices(root: str) -> int:
    """ACPI memory devices (named HID:instance under /sys/bus/acpi/devices): where a DIMM can be hot-added."""
    try:
        return sum(name.partition(":")[0] in ACPI_MEMORY_HIDS for name in os.listdir(under(root, ACPI_DEVICES)))
    except (FileNotFoundError, NotADirectoryError):
        return 0  # no ACPI
    except OSError as err:
        raise SnapshotError(f"{under(root, ACPI_DEVICES)}: {err.strerror}") from None


def _read_iomem(root: str) -> str:
    """/proc/iomem as one consistent text: the kernel prints it a page per read(), so a hot-add between
    two pages can tear it; it is read again until two reads agree."""
    path = under(root, "proc/iomem")
    previous = None
    for _ in range(IOMEM_READS):
        text = read_text(root, "proc/iomem")
        if text is None:
            raise SnapshotError(f"{path}: missing; is {root!r} the root of a Linux system?")
        if text == previous:
            return text
        previous = text
    raise SnapshotError(f"{path}: changed during each of {IOMEM_READS} reads; the next event reads it again")


def read_boot_constants(root: str = "/") -> BootConstants:
    """One pass over kallsyms, one parse of kcore's table. A kcore that cannot be read leaves its values
    unknown (the header says so); a kallsyms that is there but cannot be read is a SnapshotError."""
    symbols = kallsyms.read_symbols(root, ("_text", "_end", "_stext")) or {}
    loads = kcore.read_loads(root) or ()
    return BootConstants(kernel_text=symbols.get("_text"), kernel_end=symbols.get("_end"),
                         direct_map_base=kcore.kexec_tools_page_offset(loads), kernel_stext=symbols.get("_stext"),
                         kcore_kernel_map=kcore.kernel_map(loads))


def read_snapshot(root: str = "/", boot: BootConstants | None = None,
                  header_reader: LoadedHeaderReader | None = None) -> Snapshot:
    """Everything the header depends on, read now; `boot` saves re-reading kallsyms, kcore and the CPU notes."""
    iomem_path = under(root, "proc/iomem")
    memory = iomem.view_of(_read_iomem(root), iomem_path)
    ram = memory.ram
    if not ram:
        raise SnapshotError(f"{iomem_path}: no System RAM listed; a header without RAM would save nothing")
    online = _read_cpus(root, "online")
    if online == frozenset():
        raise SnapshotError(f"{under(root, CPU_DIR)}/online: no CPU online; a running kernel always has one")
    vmcoreinfo_text = read_text(root, "sys/kernel/vmcoreinfo")
    cma_rel = kexec_path(root, "sys/kernel/kexec_crash_cma_ranges")
    cma_text = read_text(root, cma_rel)
    kernel_max = read_int(root, f"{CPU_DIR}/kernel_max")
    possible = _read_cpus(root, "possible")
    vmcoreinfo = None if vmcoreinfo_text is None else parse_vmcoreinfo(vmcoreinfo_text,
                                                                       under(root, "sys/kernel/vmcoreinfo"))
    loaded = None if header_reader is None else header_reader.read()
    crash_notes = _read_crash_notes(root, boot.cpu_notes if boot is not None else {})
    if loaded is not None and loaded.readable and possible is not None:
        crash_notes = _with_notes_of_absent_cpus(crash_notes, possible, vmcoreinfo, loaded.header)
    return Snapshot(
        root=root,
        ram=ram,
        crash_kernel=memory.crash_kernel,
        kernel_code=memory.kernel_code,
        kernel_bss=memory.kernel_bss,
        cpus_possible=possible,
        cpus_present=_read_cpus(root, "present"),
        cpus_online=online,
        crash_notes=crash_notes,
        vmcoreinfo=vmcoreinfo,
        boot=boot if boot is not None else read_boot_constants(root),
        kernel=replace(read_kernel_state(root), crash_cmdline=None if loaded is None else loaded.cmdline.text,
                       acpi_memory_devices=_count_acpi_memory_devices(root)),
        kernel_max=kernel_max,
        crash_cma=() if cma_text is None else parse_ranges(cma_text, under(root, cma_rel)),
        resources=memory.resources,
        loaded_header=loaded,
        virtio_mem_devices=virtio_mem.count_devices(root),
    )


def _with_notes_of_absent_cpus(notes: dict[int, CpuNote], possible: frozenset[int],
                               vmcoreinfo: tuple[int, int] | None, kernel_header: bytes) -> dict[int, CpuNote]:
    """The notes sysfs lists, and those of possible CPUs it cannot (not present), from the kernel's own header.

    Linux 6.6+ writes one note per possible CPU, in CPU order, beside VMCOREINFO; sysfs has crash_notes only
    for present CPUs. Where the kernel's header has exactly one note per possible CPU and agrees with every
    address sysfs gives, the rest are taken from it; otherwise nothing is guessed.
    """
    cpu_notes = [note for note in notes_of(kernel_header) if vmcoreinfo is None or note[0] != vmcoreinfo[0]]
    if len(cpu_notes) != len(possible):
        return notes
    by_cpu = dict(zip(sorted(possible), cpu_notes))
    if any(by_cpu.get(cpu, (None,))[0] != note.addr for cpu, note in notes.items()):
        return notes  # the order is not what it seems: guess nothing
    return {**{cpu: CpuNote(addr, size) for cpu, (addr, size) in by_cpu.items()}, **notes}
