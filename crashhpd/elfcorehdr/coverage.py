# SPDX-License-Identifier: GPL-2.0-only
"""What a dump taken now would miss: the header the kernel holds, against the one a fresh snapshot gives.

Compared where it matters to a dump, not byte by byte: the RAM the
PT_LOADs cover (as coverage: a range split in two covers the same) and the
CPU notes. RAM the snapshot has outside every PT_LOAD of the kernel's
header would be missing from /proc/vmcore; RAM the header covers that the
system no longer has (hot-removed) makes the kdump kernel read memory that
is gone; a CPU without its note loses its registers.
"""

import hashlib
from dataclasses import dataclass, field, replace

from ..abi.elf import EHDR_SIZE, EM_X86_64, ET_CORE, EV_CURRENT, PHDR_SIZE
from ..sysview.loaded_header import LoadedHeader
from ..sysview.ranges import Cover, Missing, Range, total_bytes
from .build import Built, changes_from
from .layout import BACKUP_LIMIT
from .validate import NotAHeader, ParsedHeader, Segment, copy_in_crash_kernel, parse

ELFCLASS64 = 2


@dataclass(frozen=True, slots=True)
class Coverage:
    sha256: str  # of the kernel's header, as read back
    uncovered_ram_bytes: int  # RAM a dump taken now would miss
    stale_ram_bytes: int  # RAM the header covers that the system no longer lists
    missing_cpu_notes: int  # CPUs of the fresh header without a note in the kernel's
    changes: list[str]  # the human diff from the kernel's header to the fresh one
    rejected: str | None = None  # why the kdump kernel's vmcore code would refuse the header whole

    @property
    def in_sync(self) -> bool:
        return not (self.uncovered_ram_bytes or self.stale_ram_bytes or self.missing_cpu_notes or self.rejected)


def compare(kernel_header: bytes, fresh: Built, held: ParsedHeader | None = None) -> Coverage:
    """The kernel's header (as read back) against `fresh`, as the kdump kernel's /proc/vmcore would read it;
    NotAHeader when it cannot be parsed at all. `held`: those bytes, parsed already."""
    return _compare(kernel_header, fresh, held if held is not None else parse(kernel_header), None)[0]


@dataclass(frozen=True, slots=True)
class _Basis:
    """What a comparison was computed from and found, for the next one to start from: a hotplug moves a few of
    8192 RAM rows, and each Missing is then computed again only around them."""

    header: bytes  # the kernel's header
    sha256: str  # its digest: 460 KB at 8192 ranges costs more to hash than to compare
    held: ParsedHeader  # its parse
    fresh: ParsedHeader  # the fresh header's parse
    read: Cover  # the RAM /proc/vmcore would read from `held`
    held_notes: frozenset[int]
    system_ram: Cover  # the fresh snapshot's System RAM
    uncovered: Missing  # read.missing(fresh RAM)
    stale: Missing  # system_ram.missing(read)


def _compare(kernel_header: bytes, fresh: Built, held: ParsedHeader, before: _Basis | None) \
        -> tuple[Coverage, _Basis | None]:
    same_header = before is not None and before.header == kernel_header
    sha256 = before.sha256 if same_header else hashlib.sha256(kernel_header).hexdigest()  # type: ignore[union-attr]
    rejected = vmcore_refuses(held)
    if rejected is not None:  # nothing of it is read: every byte of RAM and every CPU is missing
        return Coverage(sha256, fresh.parsed.cover.bytes(), 0, len(fresh.model.cpu_notes),
                        changes_from(held, fresh), rejected), None
    same_held = before is not None and before.held is held
    read = before.read if same_held else _as_vmcore_reads(held, fresh)  # type: ignore[union-attr]
    held_notes = before.held_notes if same_held else frozenset(  # type: ignore[union-attr]
        s.paddr for s in held.notes if s.memsz)  # an empty note saves no registers
    system_ram = Cover.of(fresh.snapshot.ram, before.system_ram if before is not None else None)
    basis = _Basis(
        kernel_header, sha256, held, fresh.parsed, read, held_notes, system_ram,
        Missing.of(read, fresh.parsed.cover.ranges, before.uncovered if before is not None else None),
        Missing.of(system_ram, read.ranges, before.stale if before is not None else None))
    return Coverage(
        sha256=sha256,
        uncovered_ram_bytes=total_bytes(basis.uncovered.ranges),
        stale_ram_bytes=total_bytes(basis.stale.ranges),
        missing_cpu_notes=sum(1 for _cpu, addr, _size in fresh.model.cpu_notes if addr not in held_notes),
        changes=changes_from(held, fresh),
    ), basis


def vmcore_refuses(h: ParsedHeader) -> str | None:
    """What makes the kdump kernel's parse_crash_elf64_headers() (fs/proc/vmcore.c) refuse the whole header
    ("Kdump: Incorrect Elf header"), else None."""
    checks = (
        (h.ident[:4] == b"\x7fELF", "no ELF magic"),
        (h.ident[4] == ELFCLASS64, f"EI_CLASS {h.ident[4]}, not ELFCLASS64"),
        (h.ident[6] == EV_CURRENT and h.e_version == EV_CURRENT, "EI_VERSION or e_version is not EV_CURRENT"),
        (h.e_type == ET_CORE, f"e_type {h.e_type}, not ET_CORE"),
        (h.e_machine == EM_X86_64, f"e_machine {h.e_machine}, not EM_X86_64"),
        (h.e_ehsize == EHDR_SIZE and h.e_phentsize == PHDR_SIZE, "e_ehsize or e_phentsize is not ELF64's"),
        (bool(h.segments), "e_phnum is 0"),
    )
    problems = [problem for ok, problem in checks if not ok]
    return "the kdump kernel would refuse this header: " + "; ".join(problems) if problems else None


def _as_vmcore_reads(h: ParsedHeader, fresh: Built) -> Cover:
    """The RAM /proc/vmcore serves from the header: each PT_LOAD's p_offset, not its p_paddr, is what it reads
    (set_vmcore_list in fs/proc/vmcore.c), except kexec-tools' copy of the first RAM range below 640 KiB,
    whose p_offset points at that copy inside the crash kernel's memory."""
    if all(s.offset == s.paddr for s in h.segments if s.is_ram):
        return h.cover
    crash = fresh.snapshot.crash_kernel
    return Cover((s.paddr, s.end) if _backup_copy(s, crash) else (s.offset, s.offset + s.memsz - 1)
                 for s in h.segments if s.is_ram and s.memsz)


def _backup_copy(s: Segment, crash: tuple[Range, ...]) -> bool:
    """kexec-tools' copy of low RAM: p_offset inside the crash kernel's memory stands for p_paddr's content."""
    return s.offset != s.paddr and s.end <= BACKUP_LIMIT and copy_in_crash_kernel(s, crash)



@dataclass(frozen=True, slots=True)
class KernelView:
    """The header the kernel holds as status reports it: read or not (and why), and what it would miss."""

    readable: bool = False
    unreadable_reason: str | None = "not read yet"
    segment_bytes: int | None = None  # the segment's memsz: the real capacity
    coverage: Coverage | None = None
    basis: _Basis | None = field(default=None, repr=False, compare=False)  # what the coverage was computed from


def view(loaded: LoadedHeader | None, fresh: Built, previous: KernelView | None = None) -> KernelView:
    """`previous`, computed from the same kernel header against the same build, is taken as it is: an update
    that finds both unchanged then costs a comparison of bytes, not a parse and a diff of 8192 ranges. Against
    another build, or another header, it is computed again where the RAM rows moved."""
    if loaded is None:
        return KernelView(unreadable_reason="not read: no reader of the kernel's memory here")
    if not loaded.readable:
        return KernelView(unreadable_reason=loaded.reason)
    basis = previous.basis if previous is not None else None
    same_header = basis is not None and basis.header == loaded.header
    if previous is not None and basis is not None and same_header and basis.fresh is fresh.parsed:
        return replace(previous, segment_bytes=loaded.memsz)
    try:
        # parsed once per bytes, only where its rows differ from the fresh header's: a kernel that keeps its
        # header right holds those bytes, and rows taken from the fresh parse are the same objects, which the
        # diff and the covers then compare by identity
        held = basis.held if basis is not None and same_header else parse(loaded.header, (fresh.data, fresh.parsed))
        coverage, new_basis = _compare(loaded.header, fresh, held, basis)
        return KernelView(True, None, loaded.memsz, coverage, new_basis)
    except NotAHeader as err:
        return KernelView(unreadable_reason=f"the kernel's segment does not hold an ELF core header: {err}")
