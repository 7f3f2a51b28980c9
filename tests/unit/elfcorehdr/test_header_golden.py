# SPDX-License-Identifier: GPL-2.0-only
"""Golden bytes: one small system, every Ehdr and Phdr field read at its hand-computed offset.

The values are worked out by hand from the ELF64 layout (Ehdr 64 bytes, Phdr 56 bytes,
little-endian) and the tree below, so an encoding slip (a swapped field, a wrong width, a
missing pad) shows up as the exact field that moved. The segment-capacity arithmetic of the
seed patch is checked here too.
"""

import struct
from pathlib import Path

import pytest
from faketree import make_tree

from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.layout import HeaderModel, preset
from crashhpd.elfcorehdr.pack import build, capacity
from crashhpd.errors import HeaderError
from crashhpd.sysview.snapshot import read_snapshot

IOMEM = """\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
00100000-3fffffff : System RAM
  01000000-01ffffff : Kernel code
  02a00000-02dfffff : Kernel bss
  20000000-27ffffff : Crash kernel
"""
# CPU 1 is offline and has no crash_notes_size file
NOTES = {0: (0x13FC17000, 368), 1: (0x13FC18000, None)}

EHDR_FIELDS = [  # name, struct format, offset
    ("e_type", "<H", 16), ("e_machine", "<H", 18), ("e_version", "<I", 20), ("e_entry", "<Q", 24),
    ("e_phoff", "<Q", 32), ("e_shoff", "<Q", 40), ("e_flags", "<I", 48), ("e_ehsize", "<H", 52),
    ("e_phentsize", "<H", 54), ("e_phnum", "<H", 56), ("e_shentsize", "<H", 58), ("e_shnum", "<H", 60),
    ("e_shstrndx", "<H", 62),
]
PHDR_FIELDS = [  # name, struct format, offset inside the 56-byte entry
    ("p_type", "<I", 0), ("p_flags", "<I", 4), ("p_offset", "<Q", 8), ("p_vaddr", "<Q", 16),
    ("p_paddr", "<Q", 24), ("p_filesz", "<Q", 32), ("p_memsz", "<Q", 40), ("p_align", "<Q", 48),
]
IDENT = bytes([0x7F, 0x45, 0x4C, 0x46, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0])

CPU0 = (4, 0, 0x13FC17000, 0, 0x13FC17000, 368, 368, 0)
CPU1 = (4, 0, 0x13FC18000, 0, 0x13FC18000, 1024, 1024, 0)
VMCOREINFO = (4, 0, 0x100C66000, 0, 0x100C66000, 4132, 4132, 0)
IMAGE = (1, 7, 0x1000000, 0xFFFFFFFF81000000, 0x1000000, 0x3A00000, 0x3A00000, 0)
# kexec-tools reads the low range from the copy it loads at the top of the Crash kernel range:
# 0x28000000 - 0x9ec00 rounded up to 1 KiB and to a page (the real binary, test_real_kexec_tools.py)
LOW = (1, 7, 0x27F61000, 0xFFFF888000001000, 0x1000, 0x9EC00, 0x9EC00, 0)
BELOW_CRASH = (1, 7, 0x100000, 0xFFFF888000100000, 0x100000, 0x1FF00000, 0x1FF00000, 0)
ABOVE_CRASH = (1, 7, 0x28000000, 0xFFFF888028000000, 0x28000000, 0x18000000, 0x18000000, 0)

GOLDEN = {  # layout -> (buffer bytes, program headers in order)
    "kernel": (4096, [CPU0, VMCOREINFO, IMAGE, BELOW_CRASH, ABOVE_CRASH]),
    "kexec-tools": (1024, [CPU0, CPU1, VMCOREINFO, IMAGE, LOW, BELOW_CRASH, ABOVE_CRASH]),
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_tree(tmp_path, IOMEM, possible="0-1", online="0", notes=NOTES)


@pytest.mark.parametrize("layout", sorted(GOLDEN))
def test_ehdr_field_by_field(root, layout):
    size, phdrs = GOLDEN[layout]
    data = build_valid(read_snapshot(str(root)), preset(layout)).data
    assert len(data) == size
    assert data[0:16] == IDENT
    expected = {"e_type": 4, "e_machine": 62, "e_version": 1, "e_entry": 0, "e_phoff": 64, "e_shoff": 0,
                "e_flags": 0, "e_ehsize": 64, "e_phentsize": 56, "e_phnum": len(phdrs), "e_shentsize": 0,
                "e_shnum": 0, "e_shstrndx": 0}
    assert {name: struct.unpack_from(fmt, data, off)[0] for name, fmt, off in EHDR_FIELDS} == expected


@pytest.mark.parametrize("layout", sorted(GOLDEN))
def test_phdrs_field_by_field_then_zero_padding(root, layout):
    size, phdrs = GOLDEN[layout]
    data = build_valid(read_snapshot(str(root)), preset(layout)).data
    for index, values in enumerate(phdrs):
        base = 64 + 56 * index
        got = {name: struct.unpack_from(fmt, data, base + off)[0] for name, fmt, off in PHDR_FIELDS}
        assert got == dict(zip([f[0] for f in PHDR_FIELDS], values)), f"phdr {index}"
    table_end = 64 + 56 * len(phdrs)  # 344 for the kernel layout, 456 for kexec-tools
    assert data[table_end:] == bytes(size - table_end)


@pytest.mark.parametrize(
    ("cpus", "ranges", "expected"),
    [
        (64, 8192, 64 + 56 * 8258),  # NR_CPUS default, CRASH_MAX_MEMORY_RANGES default: 462512
        (8192, 8192, 917680),  # MAXSMP
        (0, 0, 176),
        (57340, 8192, 64 + 56 * 0xFFFE),  # the largest table ELF allows
    ],
)
def test_capacity_reserves_room_for_every_cpu_and_range(cpus, ranges, expected):
    assert capacity(cpus, ranges) == expected


def test_capacity_default_ranges_is_8192():
    assert capacity(64) == 462512


@pytest.mark.parametrize(("cpus", "ranges"), [(57341, 8192), (8192, 57341), (0, 0xFFFD)])
def test_capacity_refuses_more_than_0xfffe_phdrs(cpus, ranges):
    with pytest.raises(HeaderError, match="65535 program headers"):
        capacity(cpus, ranges)


def _model_with_ram_entries(count: int) -> HeaderModel:
    ram = tuple((0x100000 + k * 0x2000, 0x100FFF + k * 0x2000) for k in range(count))
    return HeaderModel(cpu_notes=(), vmcoreinfo=None, image=None, ram=ram, page_offset=0, align=4096)


def test_build_accepts_0xfffe_phdrs():
    data = build(_model_with_ram_entries(0xFFFE))
    assert struct.unpack_from("<H", data, 56) == (0xFFFE,)
    assert len(data) == (64 + 56 * 0xFFFE + 4095) // 4096 * 4096
    last = 64 + 56 * 0xFFFD
    assert struct.unpack_from("<IIQQQQQQ", data, last) == (
        1, 7, 0x100000 + 0xFFFD * 0x2000, 0x100000 + 0xFFFD * 0x2000, 0x100000 + 0xFFFD * 0x2000, 0x1000, 0x1000, 0)


def test_build_refuses_pn_xnum_phdrs():
    with pytest.raises(HeaderError, match="65535 program headers"):
        build(_model_with_ram_entries(0xFFFF))
