# SPDX-License-Identifier: GPL-2.0-only
"""Pack a HeaderModel into the bytes of an ELF64 core header, exactly as the kernel lays them out.

This runs on every hotplug burst and at 16k program headers, so it is plain
`struct` with precompiled formats writing into one zeroed buffer.
"""

import struct
from dataclasses import replace

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
from ..sysview.splice import common_ends
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


def build(model: HeaderModel, previous: tuple[HeaderModel, bytes] | None = None) -> bytes:
    """The header bytes: Ehdr, CPU notes, VMCOREINFO note, kernel image, RAM; zero padded to a buffer
    rounded up to the layout's alignment, with room for model.sized_for program headers if that is more.
    `previous`, another model and its bytes: where only RAM differs, only the RAM rows that differ are packed."""
    phnum = model.phnum
    if max(phnum, model.sized_for) > MAX_PHNUM:
        raise HeaderError(f"{max(phnum, model.sized_for)} program headers; ELF allows at most {MAX_PHNUM}")
    try:
        if previous is not None and replace(previous[0], ram=model.ram) == model and not model.ram_offsets:
            return _repack(model, phnum, *previous)
        return _pack(model, phnum)
    except struct.error:
        raise HeaderError(_overflow(model)) from None


def _repack(model: HeaderModel, phnum: int, old: HeaderModel, old_data: bytes) -> bytes:
    """_pack(model) from the bytes of a model that differs only in its RAM rows."""
    head, tail = common_ends(old.ram, model.ram)
    ram_base = EHDR_SIZE + PHDR_SIZE * (old.phnum - len(old.ram))
    middle = bytearray(PHDR_SIZE * (len(model.ram) - head - tail))
    _pack_ram(middle, 0, model.ram[head:len(model.ram) - tail], model.page_offset)
    table = (_ehdr(phnum) + old_data[EHDR_SIZE:ram_base + PHDR_SIZE * head] + middle
             + old_data[ram_base + PHDR_SIZE * (len(old.ram) - tail):ram_base + PHDR_SIZE * len(old.ram)])
    return table + bytes(header_size(max(phnum, model.sized_for), model.align) - len(table))


def _ehdr(phnum: int) -> bytes:
    return EHDR.pack(E_IDENT, ET_CORE, EM_X86_64, EV_CURRENT, 0, EHDR_SIZE, 0, 0, EHDR_SIZE, PHDR_SIZE, phnum, 0, 0, 0)


def _pack_ram(buf: bytearray, off: int, ram: tuple[tuple[int, int], ...], page_offset: int) -> None:
    pack = PHDR.pack_into
    for start, end in ram:
        size = end - start + 1
        pack(buf, off, PT_LOAD, PF_RWX, start, start + page_offset, start, size, size, 0)
        off += PHDR_SIZE


def _overflow(model: HeaderModel) -> str:
    """Which value does not fit its 64-bit field: checked only after packing failed, off the fast path."""
    top = max((end for _start, end in model.ram), default=0)
    if top + model.page_offset >= 1 << 64:
        return f"page offset 0x{model.page_offset:x} + RAM up to 0x{top:x} overflows a 64-bit p_vaddr"
    return "a note, image or RAM value does not fit its 64-bit ELF field"


def _pack(model: HeaderModel, phnum: int) -> bytes:
    buf = bytearray(header_size(max(phnum, model.sized_for), model.align))
    buf[:EHDR_SIZE] = _ehdr(phnum)
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
    ram_base = off
    _pack_ram(buf, off, model.ram, model.page_offset)
    for index, p_offset in model.ram_offsets:
        P_OFFSET.pack_into(buf, ram_base + PHDR_SIZE * index + 8, p_offset)
    return bytes(buf)
