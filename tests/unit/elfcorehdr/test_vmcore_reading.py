# SPDX-License-Identifier: GPL-2.0-only
""""In sync" only for a header the kdump kernel's /proc/vmcore would read as it must.

fs/proc/vmcore.c refuses a header whose ELF identity is not ELF64 x86_64 core (nothing is saved), reads
each PT_LOAD from its p_offset, and an empty note saves no registers. Each case edits the bytes of a good
header (the negative control: unedited, it is in sync) and must come out not in sync, for that reason.
"""

import struct

import pytest
from layouts import fixture_tree

from crashhpd.abi.elf import EHDR_SIZE, PHDR_SIZE, PT_LOAD, PT_NOTE
from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.coverage import compare
from crashhpd.elfcorehdr.layout import preset
from crashhpd.sysview.snapshot import read_snapshot

GIB = 1 << 30


@pytest.fixture
def built(tmp_path):
    return build_valid(read_snapshot(str(fixture_tree(tmp_path, "qemu-kvm-crashkernel"))), preset("kernel"))


def phdrs(data: bytes) -> list[int]:
    """The offset of every program header."""
    return [EHDR_SIZE + i * PHDR_SIZE for i in range(struct.unpack_from("<H", data, 56)[0])]


def edited(data: bytes, at: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


def test_the_unedited_header_is_in_sync(built):
    coverage = compare(built.data, built)
    assert coverage.in_sync and coverage.rejected is None


@pytest.mark.parametrize(("at", "fmt", "value", "reason"), [
    (18, "<H", 0, "e_machine 0, not EM_X86_64"),
    (6, "<B", 0, "EI_VERSION or e_version is not EV_CURRENT"),
    (20, "<I", 0, "EI_VERSION or e_version is not EV_CURRENT"),
    (16, "<H", 2, "e_type 2, not ET_CORE"),
    (4, "<B", 1, "EI_CLASS 1, not ELFCLASS64"),
])
def test_a_header_the_kdump_kernel_refuses_misses_everything(built, at, fmt, value, reason):
    coverage = compare(edited(built.data, at, fmt, value), built)
    assert not coverage.in_sync and coverage.rejected == f"the kdump kernel would refuse this header: {reason}"
    assert coverage.uncovered_ram_bytes == built.parsed.cover.bytes()
    assert coverage.missing_cpu_notes == len(built.model.cpu_notes) > 0


def test_program_headers_of_64_bytes_are_refused(built):
    """A wider e_phentsize: parse reads it at that stride, vmcore refuses it."""
    data = built.data
    count = len(phdrs(data))
    wide = bytearray(data[:EHDR_SIZE])
    struct.pack_into("<H", wide, 54, 64)
    for at in phdrs(data):
        wide += data[at:at + PHDR_SIZE] + bytes(8)
    coverage = compare(bytes(wide) + bytes(4096 - (EHDR_SIZE + 64 * count) % 4096), built)
    assert coverage.rejected is not None and "e_phentsize" in coverage.rejected and not coverage.in_sync


def test_an_empty_cpu_note_saves_no_registers(built):
    data = built.data
    first_note = next(at for at in phdrs(data) if struct.unpack_from("<I", data, at)[0] == PT_NOTE)
    data = edited(edited(data, first_note + 32, "<Q", 0), first_note + 40, "<Q", 0)  # p_filesz, p_memsz
    coverage = compare(data, built)
    assert coverage.missing_cpu_notes == 1 and not coverage.in_sync


def test_ram_is_read_from_p_offset_so_a_wrong_offset_is_ram_missed(built):
    data = built.data
    loads = [at for at in phdrs(data) if struct.unpack_from("<I", data, at)[0] == PT_LOAD
             and struct.unpack_from("<Q", data, at + 16)[0] < 0xFFFFFFFF80000000]
    at = loads[-1]
    paddr, memsz = struct.unpack_from("<Q", data, at + 24)[0], struct.unpack_from("<Q", data, at + 40)[0]
    coverage = compare(edited(data, at + 8, "<Q", paddr + 64 * GIB), built)  # p_paddr right, p_offset not
    assert coverage.uncovered_ram_bytes == memsz and coverage.stale_ram_bytes == memsz and not coverage.in_sync


def test_kexec_tools_copy_of_low_ram_is_read_from_its_copy_and_is_in_sync(tmp_path):
    """kexec-tools points the first RAM range below 640 KiB at its copy in the crash kernel's memory."""
    built = build_valid(read_snapshot(str(fixture_tree(tmp_path, "crashkernel-high-low"))), preset("kexec-tools"))
    backup = [s for s in built.parsed.segments if s.is_ram and s.offset != s.paddr]
    assert len(backup) == 1 and backup[0].end <= 0xA0000  # the case this test is about is there
    assert compare(built.data, built).in_sync
