"""What a header says, decided from a snapshot: the two producers crashhpd can stand in for.

`kernel` is what Linux 6.6+ builds in crash_prepare_elf64_headers() (x86:
prepare_elf_headers()); `kexec-tools` is what kexec-tools' kexec_load path
builds in crash_create_elf64_headers(). The difference is policy, so it is
data here (a Layout), and plan() is one pure function for both.
"""

from dataclasses import dataclass, replace
from typing import Literal

from ..errors import HeaderError
from ..sysview.ranges import MIB, Range, subtract
from ..sysview.snapshot import Snapshot

CpuSet = Literal["online", "present", "possible", "notes"]
LayoutName = Literal["kernel", "kexec-tools"]

DEFAULT_PAGE_OFFSET = 0xFFFF888000000000  # x86_64 direct map, 4-level paging, no KASLR
KERNEL_HALF = 0xFF00_0000_0000_0000  # any direct-map base lies above this, for 4- and 5-level paging
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


def preset(name: LayoutName, cpus: CpuSet | None = None, page_offset: int | None = None) -> Layout:
    """The layout a producer uses; `cpus` picks the kernel layout's CPU set (default online)."""
    if name == "kernel":
        layout = Layout("kernel", "online", True, 4096, KERNEL_NOTE_SIZE)
    elif name == "kexec-tools":
        layout = Layout("kexec-tools", "notes", False, 1024, KEXEC_TOOLS_NOTE_SIZE)
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

    @property
    def phnum(self) -> int:
        return len(self.cpu_notes) + (self.vmcoreinfo is not None) + (self.image is not None) + len(self.ram)


def excluded_ranges(snapshot: Snapshot, layout: Layout) -> list[Range]:
    """Memory that is RAM but must not be dumped: the crash kernel's own, and low memory for the kernel."""
    holes = list(snapshot.crash_kernel) + list(snapshot.crash_cma)
    if layout.exclude_low_mib:
        holes.append((0, MIB - 1))
    return holes


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


def plan(snapshot: Snapshot, layout: Layout) -> HeaderModel:
    """Decide every program header of the layout for this snapshot."""
    wanted = sorted(snapshot.crash_notes) if layout.cpus == "notes" else sorted(snapshot.cpu_set(layout.cpus))
    notes = []
    missing = []
    for cpu in wanted:
        note = snapshot.crash_notes.get(cpu)
        if note is None:
            missing.append(cpu)
        else:
            notes.append((cpu, note.addr, note.size if note.size is not None else layout.note_size))
    ram = tuple(subtract(snapshot.ram, excluded_ranges(snapshot, layout)))
    page_offset = next((v for v in (layout.page_offset, snapshot.boot.direct_map_base) if v is not None),
                       DEFAULT_PAGE_OFFSET)
    return HeaderModel(
        cpu_notes=tuple(notes),
        vmcoreinfo=snapshot.vmcoreinfo,
        image=image_of(snapshot),
        ram=ram,
        page_offset=page_offset,
        align=layout.align,
        cpus_without_notes=tuple(missing),
    )
