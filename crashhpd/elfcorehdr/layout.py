# SPDX-License-Identifier: GPL-2.0-only
"""What a header says, decided from a snapshot: the two producers crashhpd can stand in for.

`kernel` is what Linux 6.6+ builds in crash_prepare_elf64_headers() (x86:
prepare_elf_headers()); `kexec-tools` is what kexec-tools' kexec_load path
builds in crash_create_elf64_headers(), byte for byte (the real binary is the
oracle: tests/unit/elfcorehdr/test_real_kexec_tools.py). The difference is
policy, so it is data here (a Layout), and plan() is one pure function for both.
"""

from dataclasses import dataclass, field, replace
from typing import Literal

from ..abi.elf import EHDR, EHDR_SIZE, PHDR_SIZE
from ..abi.x86_64 import PAGE_OFFSET_BASE_L4, START_KERNEL_MAP
from ..errors import HeaderError
from ..sysview.iomem import Resource
from ..sysview.ranges import MIB, Cover, Missing, Range
from ..sysview.snapshot import Snapshot

# "nprocs": CPUs 0..N-1 that have crash_notes, N = sysconf(_SC_NPROCESSORS_CONF), which glibc counts
# in /sys/devices/system/cpu/possible ("0-3,6" is 5, so CPU 6 is never looked at); "notes": every CPU
# with crash_notes
CpuSet = Literal["online", "present", "possible", "notes", "nprocs"]
LayoutName = Literal["kernel", "kexec-tools"]
# "kernel": System RAM lines minus Crash kernel, crash CMA and (exclude_low_mib) the first MiB, the
# buffer sized for what is written; "kexec-tools": get_crash_memory_ranges(), see kexec_tools_ranges()
Memory = Literal["kernel", "kexec-tools"]
# "kallsyms": _text to _end; "kcore": the /proc/kcore PT_LOAD kexec-tools picks, kallsyms without one
ImageSource = Literal["kallsyms", "kcore"]

KERNEL_NOTE_SIZE = 368  # sizeof(note_buf_t) on x86_64
KEXEC_TOOLS_NOTE_SIZE = 1024  # kexec-tools' MAX_NOTE_BYTES when crash_notes_size is missing


@dataclass(frozen=True, slots=True)
class Layout:
    name: LayoutName
    cpus: CpuSet
    exclude_low_mib: bool  # the kernel drops [0, 1 MiB); kexec-tools keeps it
    align: int  # header buffer rounding: a page for the kernel, 1 KiB for kexec-tools
    note_size: int  # used when crash_notes_size is missing
    page_offset: int | None = None  # override of the direct-map base
    memory: Memory = "kernel"
    image: ImageSource = "kallsyms"


def preset(name: LayoutName, cpus: CpuSet | None = None, page_offset: int | None = None) -> Layout:
    """The layout a producer uses; `cpus` picks the kernel layout's CPU set (default online)."""
    if name == "kernel":
        layout = Layout("kernel", "online", True, 4096, KERNEL_NOTE_SIZE)
    elif name == "kexec-tools":
        layout = Layout("kexec-tools", "nprocs", False, 1024, KEXEC_TOOLS_NOTE_SIZE,
                        memory="kexec-tools", image="kcore")
    else:
        raise HeaderError(f"unknown layout {name!r}; expected 'kernel' or 'kexec-tools'")
    if cpus is not None:
        layout = replace(layout, cpus=cpus)
    return replace(layout, page_offset=page_offset)


@dataclass(frozen=True, slots=True)
class HeaderModel:
    """The header's content before packing: plain tuples, so 16k entries stay cheap."""

    cpu_notes: tuple[tuple[int, int, int], ...]  # (cpu, addr, size), ascending cpu
    vmcoreinfo: tuple[int, int] | None  # (addr, size)
    image: tuple[int, int, int] | None  # (paddr, vaddr, size)
    ram: tuple[Range, ...]  # ascending, disjoint, inclusive ends
    page_offset: int
    align: int
    cpus_without_notes: tuple[int, ...] = ()
    sized_for: int = 0  # program headers the buffer has room for, when more than it holds (kexec-tools)
    ram_offsets: tuple[tuple[int, int], ...] = ()  # (index in ram, p_offset) where p_offset is not the start
    page_offset_guessed: bool = False  # neither configured nor read from /proc/kcore: the non-KASLR default
    # how `ram` was cut from System RAM (kernel layout), kept so the next plan cuts again only what changed
    ram_cut: Missing | None = field(default=None, compare=False, repr=False)

    @property
    def phnum(self) -> int:
        return len(self.cpu_notes) + (self.vmcoreinfo is not None) + (self.image is not None) + len(self.ram)


def excluded_ranges(snapshot: Snapshot, layout: Layout) -> list[Range]:
    """Memory that is RAM but must not be dumped: the crash kernel's own, and low memory for the kernel.

    kexec-tools never reads the crash CMA ranges, so its headers dump them.
    """
    holes = list(snapshot.crash_kernel)
    if layout.memory == "kernel":
        holes += snapshot.crash_cma
    if layout.exclude_low_mib:
        holes.append((0, MIB - 1))
    return holes


# --- kexec-tools' get_crash_memory_ranges() and get_backup_area() (kexec/arch/i386/crashdump-x86.c) -----

# the names kexec-tools keeps besides "System RAM" anywhere in a name; each costs a program header of room
KEXEC_TOOLS_KEPT = frozenset({"ACPI Tables", "ACPI Non-volatile Storage", "Persistent Memory (legacy)",
                              "Persistent Memory", "reserved", "Reserved"})
GART = "GART"
BACKUP_LIMIT = 0xA0000  # the first RAM range ending at or below 640 KiB is copied aside at load time
KEXEC_TOOLS_ALIGN = 1024  # its add_buffer() alignment
PAGE = 4096
KERNEL_TEXT_SIZE = 512 * MIB  # X86_64_KERNEL_TEXT_SIZE: the window it searches for the kernel image


def kexec_tools_ranges(resources: tuple[Resource, ...], crash_kernel: tuple[Range, ...]
                       ) -> list[tuple[int, int, bool]]:
    """Every range kexec-tools keeps, (start, end, is RAM) in /proc/iomem order, the way it cuts them.

    Lines at any depth count, a RAM line nested in another one too. Each Crash kernel range, then
    the last GART line, is cut out by exclude_region(), whose rules are not interval subtraction:
    a range the hole only touches at its first or last byte is left whole, a range it covers
    whole stays as an empty one (start = end + 1), and of several ranges it splits only the
    last one's upper part is inserted (as RAM, whatever that range was).
    """
    kept: list[list[int]] = []  # [start, end, 1 for RAM]
    gart = None
    for res in resources:
        if "System RAM" in res.name:
            kept.append([res.start, res.end, 1])
        elif res.name in KEXEC_TOOLS_KEPT:
            kept.append([res.start, res.end, 0])
        elif res.name == GART:
            gart = (res.start, res.end)
    for start, end in list(crash_kernel) + ([gart] if gart else []):
        split = None
        for i, piece in enumerate(kept):
            low, high = piece[0], piece[1]
            if start < high and end > low:
                if start != low and end != high:
                    piece[1] = start - 1
                    split = i + 1, [end + 1, high, 1]
                elif start != low:
                    piece[1] = start - 1
                else:
                    piece[0] = end + 1
        if split is not None:
            kept.insert(*split)
    return [(start, end, bool(ram)) for start, end, ram in kept]


def same_program_headers(old: bytes, new: bytes) -> bool:
    """Whether two headers say the same to a dump: the same Ehdr and program headers, whatever zero
    padding follows them.

    kexec-tools sizes its buffer for every range it keeps but writes only the RAM ones, so a
    Persistent Memory (or reserved, or ACPI) range that appears grows its header's zero padding and
    nothing else: /proc/vmcore reads the program headers only, so that is no reason to reload. (The
    load around it does change: the crash kernel's E820 map gains the range. The real binaries show
    both, 2.0.25 to 2.0.32: tests/unit/elfcorehdr/test_real_kexec_tools.py.)
    """
    if len(new) < EHDR_SIZE:
        return old == new
    end = EHDR_SIZE + PHDR_SIZE * EHDR.unpack_from(new)[10]  # e_phnum
    return (len(old) >= end and len(new) >= end and old[:end] == new[:end]
            and old.count(0, end) == len(old) - end and new.count(0, end) == len(new) - end)


def backup_offset(ranges: list[tuple[int, int, bool]], crash_kernel: tuple[Range, ...]) -> tuple[Range, int] | None:
    """The low RAM range kexec-tools copies aside, and where the copy lives: p_offset of its PT_LOAD.

    The bzImage64 loader adds the copy first, top-down in the last Crash kernel range (the one it
    loads into), sized up to 1 KiB, then to a page.
    """
    source = next(((start, end) for start, end, ram in ranges if ram and end <= BACKUP_LIMIT), None)
    if source is None or not crash_kernel:
        return None
    size = _align_up(_align_up(source[1] - source[0] + 1, KEXEC_TOOLS_ALIGN), PAGE)
    return source, (crash_kernel[-1][1] + 1 - size) // KEXEC_TOOLS_ALIGN * KEXEC_TOOLS_ALIGN


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def kcore_image(snapshot: Snapshot) -> tuple[int, int, int] | None:
    """kexec-tools' kernel image (get_kernel_vaddr_and_size): the kcore PT_LOAD holding _stext, or
    without _stext the first one inside the kernel text window; its start rounded down to 1 MiB,
    its size up to a page. Without such a PT_LOAD, the kallsyms image."""
    loads = snapshot.boot.kcore_kernel_map
    stext = snapshot.boot.kernel_stext
    chosen = next((load for load in loads if stext and load[0] <= stext < load[0] + load[1]), None)
    if chosen is None:
        chosen = next((load for load in loads if load[0] + load[1] <= START_KERNEL_MAP + KERNEL_TEXT_SIZE), None)
    if chosen is None or snapshot.kernel_code is None:
        return image_of(snapshot)
    vaddr = chosen[0] // MIB * MIB
    return snapshot.kernel_code[0], vaddr, _align_up(chosen[0] + chosen[1] - vaddr, PAGE)


def _nprocs(snapshot: Snapshot) -> int:
    """sysconf(_SC_NPROCESSORS_CONF): how many CPUs `possible` lists; without it, every CPU with notes."""
    if snapshot.cpus_possible is not None:
        return len(snapshot.cpus_possible)
    return max(snapshot.crash_notes, default=-1) + 1


def image_of(snapshot: Snapshot) -> tuple[int, int, int] | None:
    """The kernel image's (paddr, vaddr, size), where the snapshot tells all three."""
    text = snapshot.boot.kernel_text
    if snapshot.kernel_code is None or text is None:
        return None
    if snapshot.boot.kernel_end is not None:
        size = snapshot.boot.kernel_end - text
    elif snapshot.kernel_bss is not None:
        size = snapshot.kernel_bss[1] - snapshot.kernel_code[0] + 1
    else:
        return None
    return snapshot.kernel_code[0], text, size


def plan(snapshot: Snapshot, layout: Layout, previous: HeaderModel | None = None) -> HeaderModel:
    """Decide every program header of the layout for this snapshot; `previous`, this layout's plan for another
    snapshot, saves cutting again the System RAM ranges that did not change."""
    if layout.cpus == "notes":
        wanted = sorted(snapshot.crash_notes)
    elif layout.cpus == "nprocs":
        wanted = [cpu for cpu in range(_nprocs(snapshot)) if cpu in snapshot.crash_notes]
    else:
        wanted = sorted(snapshot.cpu_set(layout.cpus))
    notes = []
    missing = []
    for cpu in wanted:
        note = snapshot.crash_notes.get(cpu)
        if note is None:
            missing.append(cpu)
        else:
            notes.append((cpu, note.addr, note.size if note.size is not None else layout.note_size))
    image = kcore_image(snapshot) if layout.image == "kcore" else image_of(snapshot)
    sized_for = 0
    offsets: tuple[tuple[int, int], ...] = ()
    cut = None
    if layout.memory == "kexec-tools":
        ranges = kexec_tools_ranges(snapshot.resources, snapshot.crash_kernel)
        ram = tuple((start, end) for start, end, is_ram in ranges if is_ram and (start, end) != (0, 0))
        # it sizes the buffer for every CPU sysconf counts and every range it kept, RAM or not
        sized_for = _nprocs(snapshot) + (snapshot.vmcoreinfo is not None) + (image is not None) + len(ranges)
        backup = backup_offset(ranges, snapshot.crash_kernel)
        if backup is not None:
            offsets = tuple((i, backup[1]) for i, r in enumerate(ram) if r == backup[0])
    else:
        cut = Missing.of(Cover(excluded_ranges(snapshot, layout)), snapshot.ram,
                         previous.ram_cut if previous is not None else None)
        ram = cut.ranges
    page_offset = next((v for v in (layout.page_offset, snapshot.boot.direct_map_base) if v is not None),
                       PAGE_OFFSET_BASE_L4)
    return HeaderModel(
        cpu_notes=tuple(notes),
        vmcoreinfo=snapshot.vmcoreinfo,
        image=image,
        ram=ram,
        page_offset=page_offset,
        align=layout.align,
        cpus_without_notes=tuple(missing),
        sized_for=sized_for,
        ram_offsets=offsets,
        page_offset_guessed=layout.page_offset is None and snapshot.boot.direct_map_base is None,
        ram_cut=cut,
    )
