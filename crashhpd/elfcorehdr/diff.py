# SPDX-License-Identifier: GPL-2.0-only
"""What changed between two headers, in words an admin reads in the journal.

RAM is compared as coverage, not entry by entry, so hot-adding a block that
extends a range reads "+ RAM 0x140000000-0x17fffffff (1 GiB)" instead of a
removed and an added entry.
"""

from ..sysview.ranges import Range, size_text
from ..sysview.splice import common_ends
from .validate import ParsedHeader, Segment


def _note_label(seg: Segment, cpu_by_addr: dict[int, int], vmcoreinfo_addr: int | None) -> str:
    if seg.paddr == vmcoreinfo_addr:
        return f"VMCOREINFO note 0x{seg.paddr:x}"
    cpu = cpu_by_addr.get(seg.paddr)
    return f"CPU {cpu} note" if cpu is not None else f"note 0x{seg.paddr:x} ({seg.memsz} bytes)"


def _ram_line(sign: str, r: Range) -> str:
    return f"{sign} RAM 0x{r[0]:x}-0x{r[1]:x} ({size_text(r[1] - r[0] + 1)})"


def diff(
    old: ParsedHeader,
    new: ParsedHeader,
    cpu_by_addr: dict[int, int] | None = None,
    vmcoreinfo_addr: int | None = None,
) -> list[str]:
    """Lines like '+ RAM ...', '- CPU 3 note', '~ kernel image ...'; empty when nothing differs."""
    cpu_by_addr = cpu_by_addr or {}
    lines: list[str] = []
    old_notes = {(s.paddr, s.memsz): s for s in old.notes}
    new_notes = {(s.paddr, s.memsz): s for s in new.notes}
    for key in sorted(old_notes.keys() - new_notes.keys()):
        lines.append("- " + _note_label(old_notes[key], cpu_by_addr, vmcoreinfo_addr))
    for key in sorted(new_notes.keys() - old_notes.keys()):
        lines.append("+ " + _note_label(new_notes[key], cpu_by_addr, vmcoreinfo_addr))
    old_image = [s for s in old.non_ram if s.is_image]
    new_image = [s for s in new.non_ram if s.is_image]
    if old_image != new_image:
        lines.append(f"~ kernel image {_image_text(old_image)} -> {_image_text(new_image)}")
    # a merged range both have is covered by the other: only those between the common ends can differ
    head, tail = common_ends(old.cover.ranges, new.cover.ranges)
    lines += [_ram_line("-", r) for r in new.cover.pieces(old.cover.ranges[head:len(old.cover.ranges) - tail])]
    lines += [_ram_line("+", r) for r in old.cover.pieces(new.cover.ranges[head:len(new.cover.ranges) - tail])]
    if not lines and old != new:
        lines.append(
            f"~ same CPUs and RAM, different encoding ({len(old.segments)} -> {len(new.segments)} "
            f"program headers, {old.size} -> {new.size} bytes)"
        )
    return lines


def _image_text(segs: list[Segment]) -> str:
    return ", ".join(f"0x{s.paddr:x}+0x{s.memsz:x}@0x{s.vaddr:x}" for s in segs) or "none"
