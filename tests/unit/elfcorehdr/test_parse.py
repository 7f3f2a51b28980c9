# SPDX-License-Identifier: GPL-2.0-only
"""validate.parse, crashhpd's own struct reader, against pyelftools reading the same bytes.

pyelftools is the oracle here, never the code under test: the daemon parses a header of up to
65534 program headers inside its loop, which pyelftools took 1.35 s to do.
"""

import io
import struct

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import given
from hypothesis import strategies as st
from layouts import FIXTURES, fixture_tree

from crashhpd.abi.elf import E_IDENT, EHDR, PHDR
from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.layout import preset
from crashhpd.elfcorehdr.validate import NotAHeader, parse
from crashhpd.sysview.snapshot import read_snapshot


def oracle(data: bytes) -> tuple[dict[str, int], list[tuple[int, ...]]]:
    elf = ELFFile(io.BytesIO(data))
    h = elf.header
    fields = {"e_phoff": h["e_phoff"], "e_ehsize": h["e_ehsize"], "e_phentsize": h["e_phentsize"]}
    types = {"PT_NULL": 0, "PT_LOAD": 1, "PT_NOTE": 4}
    rows = [(types.get(s["p_type"], s["p_type"]), s["p_flags"], s["p_offset"], s["p_vaddr"], s["p_paddr"],
             s["p_filesz"], s["p_memsz"], s["p_align"]) for s in elf.iter_segments()]
    return fields, rows


def ours(data: bytes) -> tuple[dict[str, int], list[tuple[int, ...]]]:
    p = parse(data)
    types = {"PT_NULL": 0, "PT_LOAD": 1, "PT_NOTE": 4}
    rows = [(types[s.type], s.flags, s.offset, s.vaddr, s.paddr, s.filesz, s.memsz, s.align) for s in p.segments]
    return {"e_phoff": p.e_phoff, "e_ehsize": p.e_ehsize, "e_phentsize": p.e_phentsize}, rows


@pytest.mark.parametrize("name", sorted(FIXTURES))
@pytest.mark.parametrize("layout", ["kernel", "kexec-tools"])
def test_every_fixture_header_reads_as_pyelftools_reads_it(tmp_path, name, layout):
    data = build_valid(read_snapshot(str(fixture_tree(tmp_path, name))), preset(layout)).data
    assert ours(data) == oracle(data)
    assert parse(data).trailing == data[64 + 56 * len(parse(data).segments):]


phdrs = st.lists(st.tuples(st.sampled_from([0, 1, 4]), st.integers(0, 7), *[st.integers(0, 2**64 - 1)] * 5,
                           st.integers(0, 2**64 - 1)), min_size=1, max_size=40)


@given(phdrs, st.integers(0, 300))
def test_any_program_header_table_reads_as_pyelftools_reads_it(rows, padding):
    data = EHDR.pack(E_IDENT, 4, 62, 1, 0, 64, 0, 0, 64, 56, len(rows), 0, 0, 0)
    data += b"".join(PHDR.pack(*row) for row in rows) + bytes(padding)
    assert ours(data) == oracle(data)
    assert parse(data).trailing == bytes(padding)


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "no ELF magic"),
    (b"\x7fELG" + bytes(60), "no ELF magic"),
    (EHDR.pack(E_IDENT, 4, 62, 1, 0, 64, 0, 0, 64, 56, 3, 0, 0, 0) + bytes(56), "past the 120 bytes"),
    (EHDR.pack(E_IDENT, 4, 62, 1, 0, 64, 0, 0, 64, 8, 3, 0, 0, 0) + bytes(56), "smaller than an ELF64 program"),
])
def test_what_cannot_be_read_is_not_a_header(data, reason):
    with pytest.raises(NotAHeader, match=reason):
        parse(data)


def test_a_wider_program_header_entry_is_read_at_its_stride():
    """e_phentsize 64 (check() reports it): each entry's first 56 bytes, as a reader that honours it does."""
    rows = [(4, 0, 0x1000, 0, 0x1000, 0x400, 0x400, 0), (1, 7, 0x2000, 0xFFFF888000002000, 0x2000, 8, 8, 0)]
    data = EHDR.pack(E_IDENT, 4, 62, 1, 0, 64, 0, 0, 64, 64, 2, 0, 0, 0)
    data += b"".join(PHDR.pack(*row) + bytes(8) for row in rows)
    assert ours(data) == oracle(data) and parse(data).e_phentsize == 64
    assert struct.unpack_from("<I", data, 64 + 64)[0] == 1  # the second entry is where the stride puts it


def _every_field(data: bytes, previous: tuple[bytes, object] | None = None) -> tuple[object, ...]:
    p = parse(data, previous)  # type: ignore[arg-type]
    return p, p.segments, p.ram, p.others, p.cover.ranges, p.trailing


ram_rows = st.lists(st.tuples(st.sampled_from([1, 4]), st.integers(0, 7), *[st.integers(0, 2**20)] * 2,
                              st.integers(0, 2**20), *[st.integers(0, 2**12)] * 2, st.just(0)), max_size=30)


@given(phdrs, st.integers(0, 40), st.integers(0, 5), ram_rows, st.integers(0, 100), st.integers(0, 100))
def test_a_parse_spliced_from_another_headers_is_the_parse_of_the_whole(rows, at, cut, insert, pad, new_pad):
    """Any table with any run of rows replaced (hot-add, hot-remove, hostile bytes): the rows read again and
    the rows taken from the previous parse give what a parse of the whole gives, every derived field too."""
    def header(table: list[tuple[int, ...]], padding: int) -> bytes:
        return (EHDR.pack(E_IDENT, 4, 62, 1, 0, 64, 0, 0, 64, 56, len(table), 0, 0, 0)
                + b"".join(PHDR.pack(*row) for row in table) + bytes(padding))
    old = header(rows, pad)
    new = header(rows[:at] + insert + rows[at + cut:], new_pad)
    assert _every_field(new, (old, parse(old))) == _every_field(new)
