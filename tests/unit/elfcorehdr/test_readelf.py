# SPDX-License-Identifier: GPL-2.0-only
"""A second, unrelated ELF reader: binutils' `readelf -lW` must list the program headers crashhpd wrote."""

import shutil
import subprocess
from pathlib import Path

import pytest
from layouts import FIXTURES, Phdr, fixture_tree, generate, program_headers

pytestmark = pytest.mark.skipif(shutil.which("readelf") is None, reason="needs readelf (binutils)")

TYPES = {"NOTE": 4, "LOAD": 1}
FLAG_BITS = {"R": 4, "W": 2, "E": 1}


def readelf(path: Path) -> tuple[str, list[Phdr]]:
    """readelf's whole report and its program headers as numbers."""
    result = subprocess.run(["readelf", "-lW", str(path)], capture_output=True, text=True, timeout=30, check=True)
    assert result.stderr == ""
    rows = result.stdout.split("Program Headers:\n", 1)[1].splitlines()[1:]
    return result.stdout, [_row(row.split()) for row in rows if row.strip()]


def _row(cells: list[str]) -> Phdr:
    """`Type Offset VirtAddr PhysAddr FileSiz MemSiz Flg Align`; Flg is absent when p_flags is 0."""
    offset, vaddr, paddr, filesz, memsz = (int(c, 16) for c in cells[1:6])
    flags = sum(FLAG_BITS[c] for c in "".join(cells[6:-1]))
    return (TYPES[cells[0]], flags, offset, vaddr, paddr, filesz, memsz, int(cells[-1], 16))


@pytest.mark.parametrize("layout", ["kernel", "kexec-tools"])
@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_readelf_lists_the_same_program_headers(tmp_path, name, layout):
    path = tmp_path / "elfcorehdr"
    data = generate(fixture_tree(tmp_path / "root", name), layout)
    path.write_bytes(data)
    expected = program_headers(data)
    report, headers = readelf(path)
    assert "Elf file type is CORE (Core file)" in report
    assert f"There are {len(expected)} program headers, starting at offset 64" in report
    assert headers == expected
