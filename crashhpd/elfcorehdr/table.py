# SPDX-License-Identifier: GPL-2.0-only
"""A header's program headers as a table, the way `readelf -lW` shows them, plus what each one is."""

from ..sysview.ranges import size_text
from .validate import ParsedHeader


def table(header: ParsedHeader) -> str:
    """The program headers the way `readelf -lW` shows them, plus what each one is."""
    rows = ["Type Offset             VirtAddr           PhysAddr           FileSiz    MemSiz     Flg What"]
    for s in header.segments:
        kind = "NOTE" if s.type == "PT_NOTE" else "LOAD" if s.type == "PT_LOAD" else s.type
        what = "kernel image" if s.is_image else ("RAM " + size_text(s.memsz)) if s.is_ram else "note"
        flags = "".join(c if s.flags & bit else " " for c, bit in (("R", 4), ("W", 2), ("E", 1)))
        rows.append(f"{kind:<4} 0x{s.offset:016x} 0x{s.vaddr:016x} 0x{s.paddr:016x} "
                    f"0x{s.filesz:08x} 0x{s.memsz:08x} {flags} {what}")
    return "\n".join(rows)
