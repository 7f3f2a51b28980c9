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

from ..sysview.loaded_header import LoadedHeader
from ..sysview.ranges import Cover, Range
from .build import Built, changes_from
from .validate import NotAHeader, ParsedHeader, parse


@dataclass(frozen=True, slots=True)
class Coverage:
    sha256: str  # of the kernel's header, as read back
    uncovered_ram_bytes: int  # RAM a dump taken now would miss
    stale_ram_bytes: int  # RAM the header covers that the system no longer lists
    missing_cpu_notes: int  # CPUs of the fresh header without a note in the kernel's
    changes: list[str]  # the human diff from the kernel's header to the fresh one

    @property
    def in_sync(self) -> bool:
        return not (self.uncovered_ram_bytes or self.stale_ram_bytes or self.missing_cpu_notes)


def _bytes(ranges: list[Range]) -> int:
    return sum(end - start + 1 for start, end in ranges)


def compare(kernel_header: bytes, fresh: Built) -> Coverage:
    """The kernel's header (as read back) against `fresh`; NotAHeader when the kernel's cannot be parsed."""
    held: ParsedHeader = parse(kernel_header)  # its RAM leaves out the empty PT_LOAD kexec-tools may write
    held_notes = {s.paddr for s in held.notes}
    return Coverage(
        sha256=hashlib.sha256(kernel_header).hexdigest(),
        uncovered_ram_bytes=_bytes(held.cover.missing(fresh.parsed.cover.ranges)),
        stale_ram_bytes=_bytes(Cover(fresh.snapshot.ram).missing(held.cover.ranges)),
        missing_cpu_notes=sum(1 for _cpu, addr, _size in fresh.model.cpu_notes if addr not in held_notes),
        changes=changes_from(held, fresh),
    )



@dataclass(frozen=True, slots=True)
class KernelView:
    """The header the kernel holds as status reports it: read or not (and why), and what it would miss."""

    readable: bool = False
    unreadable_reason: str | None = "not read yet"
    segment_bytes: int | None = None  # the segment's memsz: the real capacity
    coverage: Coverage | None = None
    # what the coverage was computed from: the kernel's header bytes and the fresh header's parse
    basis: tuple[bytes, ParsedHeader] | None = field(default=None, repr=False, compare=False)


def view(loaded: LoadedHeader | None, fresh: Built, previous: KernelView | None = None) -> KernelView:
    """`previous`, computed from the same kernel header against the same build, is taken as it is: an update
    that finds both unchanged then costs a comparison of bytes, not a parse and a diff of 8192 ranges."""
    if loaded is None:
        return KernelView(unreadable_reason="not read: no reader of the kernel's memory here")
    if not loaded.readable:
        return KernelView(unreadable_reason=loaded.reason)
    basis = previous.basis if previous is not None else None
    if previous is not None and basis is not None and basis[1] is fresh.parsed and basis[0] == loaded.header:
        return replace(previous, segment_bytes=loaded.memsz)
    try:
        return KernelView(True, None, loaded.memsz, compare(loaded.header, fresh), (loaded.header, fresh.parsed))
    except NotAHeader as err:
        return KernelView(unreadable_reason=f"the kernel's segment does not hold an ELF core header: {err}")
