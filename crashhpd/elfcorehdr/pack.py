# SPDX-License-Identifier: GPL-2.0-only
"""Pack a HeaderModel into the bytes of an ELF64 core header, exactly as the kernel lays them out.

This runs on every hotplug burst and at 16k program headers, so it is plain
`struct` with precompiled formats writing into one zeroed buffer.
"""

import struct

from ..abi.elf import (
    E_IDENT,
    EHDR,
    EHDR_SIZE,
    EM_X86_64,
    ET_CORE,
    EV_CURRENT,
    MAX_PHNUM,
    P_OFFSET,
    PF_RWX,
    PHDR,
    PHDR_SIZE,
    PT_LOAD,
    PT_NOTE,
    header_size,
)
from ..errors import HeaderError
from .layout import HeaderModel

DEFAULT_MAX_MEMORY_RANGES = 8192  # CRASH_MAX_MEMORY_RANGES


def capacity(max_cpus: int, max_memory_ranges: int = DEFAULT_MAX_MEMORY_RANGES) -> int:
    """Bytes the seed patch reserves for the segment: room for every CPU and range there can be."""
    pnum = 2 + max_cpus + max_memory_ranges
    if pnum > MAX_PHNUM:
        raise HeaderError(
            f"{max_cpus} CPUs + {max_memory_ranges} memory ranges need {pnum} program headers; "
            f"ELF allows at most {MAX_PHNUM}"
        )
    return EHDR_SIZE + PHDR_SIZE * pnum


def build(model: HeaderModel) -> bytes:
    """The header bytes: Ehdr, CPU notes, VMCOREINFO note, kernel image, RAM; zero padded to a buffer
    rounded up to the layout's alignment, with room for model.sized_for program headers if that is more."""
    phnum = model.phnum
    if max(phnum, model.sized_for) > MAX_PHNUM:
        raise HeaderError(f"{max(phnum, model.sized_for)} program headers; ELF allows at most {MAX_PHNUM}")
    try:
        return _pack(model, phnum)
    except struct.error:
        raise HeaderError(_overflow(model)) from None


def _overflow(model: HeaderModel) -> str:
    """Which value does not fit its 64-bit field: checked only after packing failed, off the fast path."""
    top = max((end for _start, end in model.ram), default=0)
    if top + model.page_offset >= 1 << 64:
        return f"page offset 0x{model.page_offset:x} + RAM up to 0x{top:x} overflows a 64-bit p_vaddr"
    return "a note, image or RAM value does not fit its 64-bit ELF field"


def _pack(model: HeaderModel, phnum: int) -> bytes:
    buf = bytearray(header_size(max(phnum, model.sized_for), model.align))
    EHDR.pack_into(buf, 0, E_IDENT, ET_CORE, EM_X86_64, EV_CURRENT, 0, EHDR_SIZE, 0, 0,
                   EHDR_SIZE, PHDR_SIZE, phnum, 0, 0, 0)
    pack = PHDR.pack_into
    off = EHDR_SIZE
    for _cpu, addr, size in model.cpu_notes:
        pack(buf, off, PT_NOTE, 0, addr, 0, addr, size, size, 0)
        off += PHDR_SIZE
    if model.vmcoreinfo is not None:
        addr, size = model.vmcoreinfo
        pack(buf, off, PT_NOTE, 0, addr, 0, addr, size, size, 0)
        off += PHDR_SIZE
    if model.image is not None:
        paddr, vaddr, size = model.image
        pack(buf, off, PT_LOAD, PF_RWX, paddr, vaddr, paddr, size, size, 0)
        off += PHDR_SIZE
    page_offset = model.page_offset
    ram_base = off
    for start, end in model.ram:
        size = end - start + 1
        pack(buf, off, PT_LOAD, PF_RWX, start, start + page_offset, start, size, size, 0)
        off += PHDR_SIZE
    for index, p_offset in model.ram_offsets:
        P_OFFSET.pack_into(buf, ram_base + PHDR_SIZE * index + 8, p_offset)
    return bytes(buf)
