# SPDX-License-Identifier: GPL-2.0-only
"""The ELF64 core-header format (<elf.h>): struct layouts and constants, below every stage.

The header crashhpd builds (elfcorehdr/), the one it reads back from the kernel
(sysview/) and the segments its backends hold are all this one format.
"""

import functools
import struct

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
EHDR_SIZE = EHDR.size  # 64
PHDR_SIZE = PHDR.size  # 56
P_OFFSET = struct.Struct("<Q")  # at byte 8 of a Phdr

PT_LOAD = 1
PT_NOTE = 4
PF_RWX = 7  # PF_R | PF_W | PF_X
ET_CORE = 4
EM_X86_64 = 62
EV_CURRENT = 1
PN_XNUM = 0xFFFF
MAX_PHNUM = PN_XNUM - 1
E_IDENT = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # ELFCLASS64, LSB, EV_CURRENT, SYSV


def is_core_header(head: bytes) -> bool:
    """Whether `head` begins with an ELF64 little-endian ET_CORE header (ELFMAG, ELFCLASS64, ELFDATA2LSB)."""
    return len(head) >= EHDR_SIZE and head.startswith(E_IDENT[:6]) and EHDR.unpack_from(head)[1] == ET_CORE


@functools.lru_cache(maxsize=2)
def notes_of(header: bytes) -> tuple[tuple[int, int], ...]:
    """(p_paddr, p_memsz) of every PT_NOTE of an ELF64 header, in order; () when it is not one. Memoised: each
    snapshot asks it of the kernel's header, which seldom changes."""
    if len(header) < EHDR_SIZE or header[:4] != E_IDENT[:4]:
        return ()
    phoff, phnum = EHDR.unpack_from(header)[5], EHDR.unpack_from(header)[10]
    whole = max(min(phnum, (len(header) - phoff) // PHDR_SIZE), 0)  # the complete entries there are
    table = header[phoff:phoff + whole * PHDR_SIZE]
    return tuple((paddr, memsz) for p_type, _flags, _offset, _vaddr, paddr, _filesz, memsz, _align
                 in PHDR.iter_unpack(table) if p_type == PT_NOTE)


def align_up(value: int, align: int) -> int:
    return (value + align - 1) // align * align


def header_size(phnum: int, align: int) -> int:
    return align_up(EHDR_SIZE + PHDR_SIZE * phnum, align)


MAX_HEADER_SIZE = header_size(MAX_PHNUM, 4096)  # the largest header or segment: no layout rounds past a page
