# SPDX-License-Identifier: GPL-2.0-only
"""Read a header back and check it the way the kdump kernel will rely on it.

The kdump kernel's own checks (fs/proc/vmcore.c) are few and it does not look
for overlaps, so the rules here go further: RAM entries sorted, disjoint,
inside System RAM and outside every crash-kernel range, notes matching the
running system. A header that fails here must never be applied.
"""

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from ..abi.elf import EHDR, EHDR_SIZE, EM_X86_64, ET_CORE, MAX_PHNUM, PF_RWX, PHDR, PHDR_SIZE, PT_LOAD
from ..abi.x86_64 import START_KERNEL_MAP
from ..sysview.ranges import Cover, Range, changed_span, touching
from ..sysview.snapshot import Snapshot
from ..sysview.splice import common_ends, rows_differing, spliced
from .layout import BACKUP_LIMIT, Layout, image_of


class Segment(NamedTuple):
    """One program header. A tuple, not a frozen dataclass: a header of 8192 is made in a few milliseconds."""

    type: str  # PT_NOTE, PT_LOAD, another <elf.h> name, or the number of a type without one
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int
    # what kind of PT_LOAD it is, decided once in parse(): the checks, the diff and the coverage ask 8192 times
    is_image: bool  # the kernel image, mapped at or above __START_KERNEL_map
    is_ram: bool  # any other PT_LOAD

    @property
    def end(self) -> int:
        return self.paddr + self.memsz - 1


@dataclass(frozen=True, slots=True)
class ParsedHeader:
    size: int  # bytes in the buffer, padding included
    ident: bytes
    e_type: int
    e_machine: int
    e_version: int
    e_phoff: int
    e_ehsize: int
    e_phentsize: int
    segments: tuple[Segment, ...]
    trailing: bytes  # everything after the program headers: must be zero padding
    ram: tuple[Range, ...] = field(compare=False)  # its RAM entries in order, the empty ones left out
    cover: Cover = field(compare=False, repr=False)  # the RAM they cover, merged
    # the indices of the segments that are not in `ram` (notes, the image, empty RAM): where a parse splices
    others: tuple[int, ...] = field(compare=False, repr=False)

    @property
    def notes(self) -> list[Segment]:
        return [s for s in self.non_ram if s.type == "PT_NOTE"]

    @property
    def non_ram(self) -> list[Segment]:
        """Every segment but the RAM entries: a few of 8192, found without walking them all."""
        return [self.segments[i] for i in self.others]

    def to_json(self) -> dict[str, Any]:  # JSON: values of every kind
        return {
            "size": self.size,
            "phnum": len(self.segments),
            "segments": [{name: getattr(s, name) for name in SEGMENT_FIELDS} for s in self.segments],
        }


ELF_MAGIC = b"\x7fELF"
SEGMENT_FIELDS = ("type", "flags", "offset", "vaddr", "paddr", "filesz", "memsz", "align")  # as the control reply has
# <elf.h>'s p_type names, as messages print them; any other type is shown as its number
_TYPE_NAMES = {0: "PT_NULL", 1: "PT_LOAD", 2: "PT_DYNAMIC", 3: "PT_INTERP", 4: "PT_NOTE", 5: "PT_SHLIB", 6: "PT_PHDR",
               7: "PT_TLS"}


class NotAHeader(ValueError):
    """The bytes cannot be read as an ELF64 program-header table at all."""


def parse(data: bytes, previous: tuple[bytes, ParsedHeader] | None = None) -> ParsedHeader:
    """The header's fields, read as ELF64 little-endian with `struct` (a maximal header of 65534 program headers
    is parsed inside the loop: pyelftools took 1.35 s for one); NotAHeader if it cannot be read at all.
    The format rules (class, byte order, sizes) are check()'s, so a header that breaks them is reported, not lost.
    `previous`, another header's bytes and their parse: only the program headers that differ are read."""
    if len(data) < EHDR_SIZE or data[:4] != ELF_MAGIC:
        raise NotAHeader("not an ELF file: no ELF magic in a 64-byte header")
    ident, e_type, e_machine, e_version, _entry, e_phoff, _shoff, _flags, e_ehsize, e_phentsize, e_phnum, \
        *_sections = EHDR.unpack_from(data)
    if e_phentsize < PHDR_SIZE and e_phnum:
        raise NotAHeader(f"e_phentsize {e_phentsize} is smaller than an ELF64 program header ({PHDR_SIZE})")
    table_end = e_phoff + e_phnum * e_phentsize
    if table_end > len(data):
        raise NotAHeader(f"program headers end past the {len(data)} bytes of the file")
    table = data[e_phoff:table_end]
    if previous is not None and e_phentsize == PHDR_SIZE and _same_table_shape(previous[1], e_phoff):
        segments, ram, others, cover = _splice_rows(previous, table)
    else:
        if e_phentsize == PHDR_SIZE:
            rows = PHDR.iter_unpack(table)
        else:
            rows = (PHDR.unpack_from(data, e_phoff + i * e_phentsize) for i in range(e_phnum))
        segments = _segments(rows)
        others = tuple(i for i, s in enumerate(segments) if not (s.is_ram and s.memsz))
        ram = tuple((s.paddr, s.paddr + s.memsz - 1) for s in segments if s.is_ram and s.memsz)
        cover = Cover(ram)
    return ParsedHeader(size=len(data), ident=ident, e_type=e_type, e_machine=e_machine, e_version=e_version,
                        e_phoff=e_phoff, e_ehsize=e_ehsize, e_phentsize=e_phentsize, segments=segments,
                        trailing=data[max(table_end, EHDR_SIZE):], ram=ram, cover=cover, others=others)


def _segments(rows: Iterable[tuple[int, ...]]) -> tuple[Segment, ...]:
    return tuple(Segment(_TYPE_NAMES.get(p_type) or f"0x{p_type:x}", flags, offset, vaddr, paddr, filesz, memsz,
                         align, p_type == PT_LOAD and vaddr >= START_KERNEL_MAP,
                         p_type == PT_LOAD and vaddr < START_KERNEL_MAP)
                 for p_type, flags, offset, vaddr, paddr, filesz, memsz, align in rows)


def _same_table_shape(old: ParsedHeader, e_phoff: int) -> bool:
    return old.e_phoff == e_phoff and old.e_phentsize == PHDR_SIZE


def _splice_rows(previous: tuple[bytes, ParsedHeader], table: bytes) \
        -> tuple[tuple[Segment, ...], tuple[Range, ...], tuple[int, ...], Cover]:
    """segments, ram, others and cover of `table`, from the previous header's where their rows are the same."""
    old_data, old = previous
    old_table = old_data[old.e_phoff:old.e_phoff + PHDR_SIZE * len(old.segments)]
    head, tail = rows_differing(old_table, table, PHDR_SIZE)
    new_count = len(table) // PHDR_SIZE
    middle = _segments(PHDR.iter_unpack(table[head * PHDR_SIZE:(new_count - tail) * PHDR_SIZE]))
    segments = spliced(old.segments, head, tail, middle)
    old_stop = len(old.segments) - tail  # the old rows from here on are the new rows from new_count - tail on
    others_head = bisect.bisect_left(old.others, head)
    others_tail = bisect.bisect_left(old.others, old_stop)
    shift = new_count - len(old.segments)
    others = old.others[:others_head] + tuple(head + i for i, s in enumerate(middle) if not (s.is_ram and s.memsz)) \
        + tuple(i + shift for i in old.others[others_tail:])
    ram_head = head - others_head
    ram_tail = tail - (len(old.others) - others_tail)
    ram = spliced(old.ram, ram_head, ram_tail, ((s.paddr, s.paddr + s.memsz - 1) for s in middle
                                                 if s.is_ram and s.memsz))
    return segments, ram, others, Cover.of(ram, old.cover)


def copy_in_crash_kernel(s: Segment, crash: tuple[Range, ...]) -> bool:
    """Whether the bytes at p_offset lie inside a Crash kernel range, where kexec-tools keeps its copy of low RAM."""
    return any(low <= s.offset and s.offset + s.memsz - 1 <= high for low, high in crash)


def check(header: ParsedHeader, snapshot: Snapshot | None = None, layout: Layout | None = None,
          previous: "tuple[ParsedHeader, Snapshot] | None" = None) -> list[str]:
    """Every rule the header breaks, one line each; an empty list means valid.

    `layout` names the producer: a kexec-tools header may dump the crash CMA ranges, which
    kexec-tools never reads; without it, RAM must stay out of them too. `previous`, a header that
    passed check() against its snapshot in this layout: where the two differ only in RAM rows, and the
    snapshots only in RAM, the rows that changed and the RAM whose System RAM changed are checked.
    """
    problems = _check_format(header)
    if problems:
        return problems
    window = _ram_window(header, snapshot, previous) if snapshot is not None and previous is not None else None
    if window is not None:
        return _check_window(header, snapshot, layout, *window)  # type: ignore[arg-type]  # snapshot is not None
    problems += _check_order(header)
    if snapshot is not None:
        problems += _check_against(header, snapshot, layout)
    return problems


def _ram_window(h: ParsedHeader, snap: Snapshot, previous: tuple[ParsedHeader, Snapshot]) \
        -> tuple[tuple[Segment, ...], int, tuple[Range, Range] | None, int] | None:
    """(the rows that changed, the first of them, where System RAM changed, the old direct-map offset), or None
    where more than RAM rows changed and the whole header must be checked."""
    old, old_snap = previous
    if replace(old_snap, ram=snap.ram, resources=snap.resources, kernel=snap.kernel,
               loaded_header=snap.loaded_header) != snap:
        return None
    head, tail = common_ends(old.segments, h.segments)
    middle = h.segments[head:len(h.segments) - tail]
    if not all(s.is_ram for s in old.segments[head:len(old.segments) - tail] + middle):
        return None
    offset = next(((s.vaddr - s.paddr) for s in old.segments if s.is_ram and s.memsz), None)
    if offset is None:
        return None
    return middle, head, changed_span(old_snap.ram, snap.ram), offset


def _check_window(h: ParsedHeader, snap: Snapshot, layout: Layout | None, middle: tuple[Segment, ...], head: int,
                  ram_changed: tuple[Range, Range] | None, offset: int) -> list[str]:
    """check() where only the RAM rows `middle` (from `head` on) and System RAM around `ram_changed` moved,
    its problems in the words and order of a whole check."""
    p = [problem for i, s in enumerate(middle, head) for problem in _segment_problems(i, s, True)]
    if not h.ram:
        p.append("no RAM PT_LOAD: a dump would save no memory")
    entries = [(s.paddr, s.end) for s in middle if s.memsz]
    at = head - bisect.bisect_left(h.others, head)  # the first changed row's place in h.ram
    p += _overlaps(h.ram[max(at - 1, 0):at + len(entries) + 1])  # in order with the rows on either side
    p += _direct_map_problems({offset} | {s.vaddr - s.paddr for s in middle if s.memsz})
    if ram_changed is not None:
        i, j = touching(h.ram, *ram_changed[0])  # RAM whose System RAM range may be another now
        entries += h.ram[i:j]
    p += _copy_problems(middle, snap)
    p += _ram_problems(sorted(set(entries)), snap, layout)
    return p


def _check_format(h: ParsedHeader) -> list[str]:
    p = []
    if h.ident[:4] != b"\x7fELF":
        p.append("bad ELF magic")
    if h.ident[4] != 2:
        p.append(f"EI_CLASS {h.ident[4]}, expected 2 (ELFCLASS64)")
    if h.ident[5] != 1:
        p.append(f"EI_DATA {h.ident[5]}, expected 1 (little-endian)")
    if h.ident[6] != 1 or h.e_version != 1:
        p.append(f"EI_VERSION {h.ident[6]} / e_version {h.e_version}, both must be 1")
    if h.e_type != ET_CORE:
        p.append("e_type is not ET_CORE (4)")
    if h.e_machine != EM_X86_64:
        p.append("e_machine is not EM_X86_64 (62)")
    if h.e_ehsize != EHDR_SIZE:
        p.append(f"e_ehsize {h.e_ehsize}, expected {EHDR_SIZE}")
    if h.e_phentsize != PHDR_SIZE:
        p.append(f"e_phentsize {h.e_phentsize}, expected {PHDR_SIZE}")
    if h.e_phoff != EHDR_SIZE:
        p.append(f"e_phoff {h.e_phoff}: program headers must follow the Ehdr at {EHDR_SIZE}")
    if not h.segments:
        p.append("e_phnum is 0: no program headers")
    if len(h.segments) > MAX_PHNUM:
        p.append(f"e_phnum {len(h.segments)} exceeds {MAX_PHNUM}")
    if any(h.trailing):
        p.append("bytes after the program headers are not zero padding")
    return p


def _check_order(h: ParsedHeader) -> list[str]:
    p = []
    seen_load = False
    images = 0
    for i, s in enumerate(h.segments):
        if s.type == "PT_LOAD":
            seen_load = True
            images += s.is_image
        elif s.type == "PT_NOTE" and seen_load:
            p.append(f"phdr {i} ({s.type} 0x{s.paddr:x}): PT_NOTE after a PT_LOAD; every note must come first")
        p += _segment_problems(i, s, seen_load)
    if images > 1:
        p.append(f"{images} kernel-image PT_LOADs, expected at most one")
    ram = [s for s in h.segments if s.is_ram and s.memsz]
    if not ram:
        p.append("no RAM PT_LOAD: a dump would save no memory")
    p += _overlaps(h.ram)
    p += _direct_map_problems({s.vaddr - s.paddr for s in ram})
    return p


def _segment_problems(i: int, s: Segment, seen_load: bool) -> list[str]:
    """What one program header breaks on its own."""
    if s.type == "PT_LOAD":
        # kexec-tools copies the first RAM range that ends at or below 640 KiB into the crash kernel's
        # memory at load time and points its p_offset at the copy: valid there, and nowhere else
        bad = [s.flags != PF_RWX and f"flags {s.flags}, expected 7 (RWX)",
               s.offset != s.paddr and not (s.is_ram and s.end <= BACKUP_LIMIT)
               and f"p_offset 0x{s.offset:x} differs from p_paddr"]
    elif s.type == "PT_NOTE":
        bad = [s.offset != s.paddr and f"p_offset 0x{s.offset:x} differs from p_paddr",
               (s.vaddr != 0 or s.flags != 0) and "a note has p_vaddr 0 and p_flags 0"]
    else:
        bad = ["unexpected segment type"]
    # an empty RAM entry saves nothing and harms nothing: kexec-tools leaves one where a Crash kernel range
    # covers a whole RAM line
    bad += [(s.filesz != s.memsz or (s.memsz == 0 and not s.is_ram))
            and f"p_filesz {s.filesz} and p_memsz {s.memsz} must be equal and non-zero",
            s.align != 0 and f"p_align {s.align}, expected 0"]
    return [f"phdr {i} ({s.type} 0x{s.paddr:x}): {problem}" for problem in bad if problem]


def _direct_map_problems(offsets: set[int]) -> list[str]:
    """Every RAM entry's p_vaddr - p_paddr is the one direct-map base."""
    return [f"RAM entries disagree on the direct-map base ({len(offsets)} different offsets)"] if len(offsets) > 1 \
        else []


def _overlaps(ram: tuple[Range, ...] | list[Range]) -> list[str]:
    return [f"RAM 0x{cur[0]:x} overlaps or precedes RAM 0x{prev[0]:x}-0x{prev[1]:x}"
            for prev, cur in zip(ram, ram[1:]) if cur[0] <= prev[1]]


def _copy_problems(segments: Iterable[Segment], snap: Snapshot) -> list[str]:
    return [f"RAM 0x{s.paddr:x}-0x{s.end:x}: its copy at p_offset 0x{s.offset:x} is not inside a "
            "Crash kernel range, where kexec-tools keeps it"
            for s in segments
            if s.is_ram and s.memsz and s.offset != s.paddr and not copy_in_crash_kernel(s, snap.crash_kernel)]


def _ram_problems(ram: Iterable[Range], snap: Snapshot, layout: Layout | None) -> list[str]:
    """RAM entries outside System RAM or over crash-kernel memory."""
    p = []
    system_ram = sorted(snap.ram)
    cma = snap.crash_cma if layout is None or layout.memory == "kernel" else ()
    holes = sorted(snap.crash_kernel + cma)
    for start, end in ram:
        i = bisect.bisect_right(system_ram, (start, 1 << 64)) - 1
        if i < 0 or end > system_ram[i][1]:
            p.append(f"RAM 0x{start:x}-0x{end:x} is not inside a System RAM range")
        for hole in holes:
            if start <= hole[1] and hole[0] <= end:
                p.append(f"RAM 0x{start:x}-0x{end:x} overlaps crash-kernel memory 0x{hole[0]:x}-0x{hole[1]:x}")
    return p


def _check_against(h: ParsedHeader, snap: Snapshot, layout: Layout | None) -> list[str]:
    p = _copy_problems(h.segments, snap) + _ram_problems(h.ram, snap, layout)
    notes = {(n.addr) for n in snap.crash_notes.values()}
    vmcoreinfo = snap.vmcoreinfo
    # sysfs that cannot say which CPUs are online yields no note at all: never a header to apply (a kernel
    # without CONFIG_CRASH_DUMP, whose online CPUs have no crash_notes, has no kdump to apply one to)
    if snap.cpus_online is None and all(vmcoreinfo is not None and (s.paddr, s.memsz) == vmcoreinfo
                                        for s in h.notes):
        p.append("no CPU note: a dump would save no CPU's registers, and a running system has at least one CPU "
                 f"({snap.root.rstrip('/')}/sys/devices/system/cpu/online cannot be read)")
    for s in h.notes:
        if vmcoreinfo is not None and (s.paddr, s.memsz) == vmcoreinfo:
            continue
        if s.paddr not in notes:
            p.append(f"note at 0x{s.paddr:x} is neither a CPU's crash_notes nor VMCOREINFO")
    if vmcoreinfo is not None and not any((s.paddr, s.memsz) == vmcoreinfo for s in h.notes):
        p.append(f"no VMCOREINFO note at 0x{vmcoreinfo[0]:x} ({vmcoreinfo[1]} bytes)")
    if image_of(snap) is not None and not any(s.is_image for s in h.segments):
        p.append("no kernel-image PT_LOAD, though the system names the kernel's code and symbols")
    for s in h.segments:
        if s.is_image and snap.kernel_code is not None and s.paddr != snap.kernel_code[0]:
            p.append(f"kernel image at 0x{s.paddr:x}, but 'Kernel code' starts at 0x{snap.kernel_code[0]:x}")
    return p
