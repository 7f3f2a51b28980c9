# SPDX-License-Identifier: GPL-2.0-only
"""/proc/kcore's one reader on real files: its table, reads by address, the two direct-map rules, hostile files."""

import os

import pytest
from fakekcore import FakeKcore
from faketree import kcore as kcore_headers

from crashhpd.abi.elf import EHDR, PHDR, PT_LOAD, PT_NOTE
from crashhpd.abi.x86_64 import GIB, PAGE_OFFSET_BASE_L4
from crashhpd.sysview.kcore import (
    MAX_READ,
    NO_PADDR,
    Kcore,
    KcoreError,
    Load,
    Unmapped,
    direct_map_offset,
    kernel_map,
    kernel_page_offset,
    kexec_tools_page_offset,
    read_loads,
)

TEXT = 0xFFFFFFFF9A000000
KASLR_BASE = 0xFFFF9D5C40000000  # page_offset_base under KASLR: 1 GiB aligned
VMALLOC = 0xFFFFC90000000000
MODULES = 0xFFFFFFFFC0000000
IDENT = b"\x7fELF\x02\x01\x01" + bytes(9)


def kcore_file(root, loads: list[tuple[int, int, int]]) -> FakeKcore:
    """A kcore under `root` with a PT_NOTE, then one PT_LOAD per (vaddr, paddr, size), its memory zeros."""
    fake = FakeKcore(root / "proc/kcore", list(loads))
    fake.write()
    return fake


def header(phnum: int, *, phoff: int = EHDR.size, phentsize: int = PHDR.size, e_type: int = 4) -> bytes:
    return EHDR.pack(IDENT, e_type, 62, 1, 0, phoff, 0, 0, EHDR.size, phentsize, phnum, 0, 0, 0)


def load(vaddr: int, paddr: int, size: int = 0x1000) -> Load:
    return Load(vaddr=vaddr, paddr=paddr, offset=0x1000, filesz=size, memsz=size)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# --- the table, and memory by address -----------------------------------------------------------


def test_the_loads_are_every_pt_load_in_file_order_and_nothing_else(tmp_path):
    fake = kcore_file(tmp_path, [(TEXT, 0x1000000, 0x4000), (KASLR_BASE + 0x100000, 0x100000, 0x2000),
                                 (VMALLOC, NO_PADDR, 0x1000)])
    with Kcore(str(tmp_path)) as kcore:
        loads = kcore.loads
    offsets = [fake.offset_of(vaddr) for vaddr, _paddr, _size in fake.loads]
    assert loads == (Load(TEXT, 0x1000000, offsets[0], 0x4000, 0x4000),
                     Load(KASLR_BASE + 0x100000, 0x100000, offsets[1], 0x2000, 0x2000),
                     Load(VMALLOC, NO_PADDR, offsets[2], 0x1000, 0x1000))  # the PT_NOTE left out


def test_memory_is_read_by_virtual_address_across_adjacent_loads(tmp_path):
    fake = kcore_file(tmp_path, [(KASLR_BASE + 0x2000, 0x2000, 0x1000), (KASLR_BASE, 0, 0x2000)])
    fake.poke(KASLR_BASE + 0x1FFC, b"abcd")
    fake.poke(KASLR_BASE + 0x2000, b"efgh" + (0x1122334455667788).to_bytes(8, "little"))
    with Kcore(str(tmp_path)) as kcore:
        assert kcore.read(KASLR_BASE + 0x1FFC, 8, "x") == b"abcdefgh"  # the table's order does not matter
        assert kcore.read_pointer(KASLR_BASE + 0x2004, "a pointer") == 0x1122334455667788
        with pytest.raises(Unmapped, match=f"no .*/proc/kcore PT_LOAD maps y at 0x{KASLR_BASE + 0x3000:x}"):
            kcore.read(KASLR_BASE + 0x2FFC, 8, "y")  # runs off the end of the last load
        with pytest.raises(Unmapped, match="maps z at"):
            kcore.read(KASLR_BASE - 8, 8, "z")


def test_a_load_without_file_bytes_is_listed_but_reads_nothing(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/kcore").write_bytes(kcore_headers([(MODULES, 0, 0)]))  # filesz 0
    with Kcore(str(tmp_path)) as kcore:
        assert kernel_map(kcore.loads) == ((MODULES, 0),)
        with pytest.raises(Unmapped):
            kcore.read(MODULES, 1, "a module")


def test_a_read_larger_than_any_the_callers_make_is_refused_before_it_allocates(tmp_path):
    kcore_file(tmp_path, [(KASLR_BASE, 0, 0x1000)])
    with Kcore(str(tmp_path)) as kcore, pytest.raises(KcoreError, match=f"more than any read of .*\\({MAX_READ}\\)"):
        kcore.read(KASLR_BASE, MAX_READ + 1, "struct kimage")


def test_the_kernel_image_mapping_is_what_lies_above_start_kernel_map_in_file_order():
    loads = (load(TEXT, 0x1000000, 0x3A00000), load(KASLR_BASE, 0), load(MODULES, NO_PADDR, 0x1000000),
             load(0xFFFFFFFF7FFFF000, NO_PADDR))
    assert kernel_map(loads) == ((TEXT, 0x3A00000), (MODULES, 0x1000000))


# --- the two direct-map rules ----------------------------------------------------------------------


def test_on_a_usual_machine_both_rules_give_the_kernels_base():
    loads = (load(TEXT, 0x1000000), load(VMALLOC, NO_PADDR), load(KASLR_BASE + 0x1000, 0x1000),
             load(KASLR_BASE + 0x100000, 0x100000))
    assert kexec_tools_page_offset(loads) == direct_map_offset(loads) == KASLR_BASE


@pytest.mark.parametrize(("loads", "kexec_tools", "kernel"), [
    # the lowest load is not RAM (a region below the direct map, NO_PADDR): kexec-tools takes it anyway
    ((load(0xFF11000000001000, NO_PADDR), load(KASLR_BASE + 0x1000, 0x1000)), 0xFF11000000000000, KASLR_BASE),
    # RAM starting at 5 GiB: rounding the lowest load gives base + 5 GiB, p_vaddr - p_paddr the base
    ((load(KASLR_BASE + 5 * GIB, 5 * GIB),), KASLR_BASE + 5 * GIB, KASLR_BASE),
    # a load without file bytes counts for kexec-tools, not for reading memory
    ((load(KASLR_BASE - GIB, 0, 0), load(KASLR_BASE + 0x1000, 0x1000)), KASLR_BASE - GIB, KASLR_BASE),
], ids=["not-ram-below", "ram-above-1gib", "empty-load"])
def test_where_the_rules_differ_each_keeps_its_own(loads, kexec_tools, kernel):
    assert kexec_tools_page_offset(loads) == kexec_tools
    assert direct_map_offset(loads) == kernel


def test_a_kcore_before_linux_4_11_has_no_paddr_and_the_base_is_rounded_down_to_1_gib():
    loads = (load(TEXT, 0), load(KASLR_BASE + 0x1000, 0), load(KASLR_BASE + 0x100000, 0))
    assert direct_map_offset(loads) == KASLR_BASE


@pytest.mark.parametrize(("loads", "expected"), [
    ((load(KASLR_BASE, 0), load(0x1000, 0)), None),  # kexec-tools' 0 means none found: a last 0 wins, then falls back
    ((load(0x1000, 0), load(KASLR_BASE, 0)), KASLR_BASE),  # a first 0 is overwritten by the next load
    ((), None),
], ids=["zero-last", "zero-first", "no-loads"])
def test_kexec_tools_rule_is_mirrored_with_its_zero_meaning_none(loads, expected):
    assert kexec_tools_page_offset(loads) == expected


@pytest.mark.parametrize("loads", [
    (load(TEXT, 0x1000000), load(MODULES, NO_PADDR)),  # nothing in the direct map's range
    (load(KASLR_BASE, NO_PADDR),),  # in its range, but not RAM
    (load(0xFF00000000100000, 0x200000),),  # p_vaddr - p_paddr below the kernel half
], ids=["none", "not-ram", "below-kernel-half"])
def test_without_a_direct_map_load_there_is_no_base(loads):
    assert direct_map_offset(loads) is None


def test_the_kernels_base_is_page_offset_base_when_the_kernel_has_it(tmp_path):
    variable = TEXT + 0x2812818
    fake = kcore_file(tmp_path, [(TEXT, 0x1000000, 0x4000000), (PAGE_OFFSET_BASE_L4 + 5 * GIB, 5 * GIB, 0x1000)])
    fake.poke(variable, KASLR_BASE.to_bytes(8, "little"))
    with Kcore(str(tmp_path)) as kcore:
        assert kernel_page_offset(kcore, variable) == KASLR_BASE  # the variable, not the loads
        assert kernel_page_offset(kcore, None) == PAGE_OFFSET_BASE_L4  # no variable: p_vaddr - p_paddr
        fake.poke(variable, (KASLR_BASE + 0x1000).to_bytes(8, "little"))
        with pytest.raises(KcoreError, match=f"page_offset_base reads 0x{KASLR_BASE + 0x1000:x}, not a direct-map"):
            kernel_page_offset(kcore, variable)
        with pytest.raises(Unmapped, match="maps page_offset_base"):
            kernel_page_offset(kcore, VMALLOC)


def test_without_variable_or_direct_map_the_kernels_base_is_an_error(tmp_path):
    kcore_file(tmp_path, [(TEXT, 0x1000000, 0x1000)])
    with Kcore(str(tmp_path)) as kcore, pytest.raises(KcoreError, match="maps no direct-map memory"):
        kernel_page_offset(kcore, None)


# --- hostile files: a clear error, no hang, no fd left open ------------------------------------------


@pytest.mark.parametrize(("data", "message"), [
    (b"", "short read at offset 0x0: 0 of 64 bytes"),
    (header(1)[:40], "short read at offset 0x0: 40 of 64 bytes"),
    (b"\x7fELF\x02\x01\x01" + b"\xff" * 80, "is not an ELF64 little-endian core file"),
    (bytes(range(256)) * 4, "is not an ELF64 little-endian core file"),
    (b"\x7fELF\x01\x01\x01" + bytes(57), "is not an ELF64 little-endian core file"),  # ELFCLASS32
    (header(1, e_type=2), "is not an ELF64 little-endian core file"),  # ET_EXEC
    (header(1, phentsize=32), "is not an ELF64 little-endian core file"),
    (header(0xFFFF), "counts 0xffff program headers (PN_XNUM)"),
    (header(0xFFFE), "short read at offset 0x40: 0 of 3669904 bytes"),  # the most it reads: 3.5 MiB, then stops
    (header(2) + PHDR.pack(PT_LOAD, 7, 0x1000, KASLR_BASE, 0, 0x1000, 0x1000, 0), "short read at offset 0x40: 56 of"),
    (header(1, phoff=(1 << 64) - 1), "offset 0xffffffffffffffff is past any file's end"),
], ids=["empty", "truncated-ehdr", "not-core", "garbage", "elf32", "not-core-type", "phentsize", "pn-xnum",
        "huge-phnum", "truncated-table", "huge-phoff"])
def test_a_hostile_kcore_is_a_clear_error(tmp_path, data, message):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/kcore").write_bytes(data)
    before = open_fds()
    with pytest.raises(KcoreError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Kcore(str(tmp_path))
    assert read_loads(str(tmp_path)) is None
    assert open_fds() == before


def test_a_load_whose_offset_is_past_any_file_is_a_clear_error_when_read(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/kcore").write_bytes(header(1) + PHDR.pack(PT_LOAD, 7, (1 << 63) - 8, KASLR_BASE, 0, 64, 64, 0))
    with Kcore(str(tmp_path)) as kcore, pytest.raises(KcoreError, match="past any file's end"):
        kcore.read(KASLR_BASE, 16, "x")


def test_the_notes_and_other_types_are_skipped_not_refused(tmp_path):
    (tmp_path / "proc").mkdir()
    table = PHDR.pack(PT_NOTE, 0, 0x200, 0, 0, 16, 16, 4) + PHDR.pack(0x6474E551, 6, 0, 0, 0, 0, 0, 16)
    (tmp_path / "proc/kcore").write_bytes(header(2) + table)
    assert read_loads(str(tmp_path)) == ()


def test_no_kcore_a_directory_or_a_fifo_is_an_error_without_blocking(tmp_path, deadline):
    path = tmp_path / "proc/kcore"
    path.parent.mkdir()
    with pytest.raises(KcoreError, match=f"no {path} \\(a kernel without CONFIG_PROC_KCORE\\)"):
        Kcore(str(tmp_path))
    path.mkdir()
    with pytest.raises(KcoreError, match=f"{path} is not a regular file"):
        Kcore(str(tmp_path))
    path.rmdir()
    os.mkfifo(path)
    before = open_fds()
    with pytest.raises(KcoreError, match=f"{path} is not a regular file"):
        Kcore(str(tmp_path))
    assert read_loads(str(tmp_path)) is None
    assert open_fds() == before


def test_a_refused_read_says_what_reading_kcore_needs(tmp_path):
    kcore_file(tmp_path, [(KASLR_BASE, 0, 0x1000)])

    def refused(fd: int, length: int, offset: int) -> bytes:
        raise PermissionError(1, "Operation not permitted")

    with pytest.raises(KcoreError, match="permission denied \\(reading it needs root with CAP_SYS_RAWIO"):
        Kcore(str(tmp_path), refused)
