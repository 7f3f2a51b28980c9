# SPDX-License-Identifier: GPL-2.0-only
"""The /proc/iomem fixtures' expected program headers, typed by hand, and how to read a header's Phdr table.

The expected tables come from the x86_64 elfcorehdr rules and the fixture text, never from
crashhpd's own code (tests/unit/elfcorehdr/test_fixture_layouts.py says how); the CLI, readelf
and package tests compare against the same tables.
"""

import struct
from pathlib import Path

from faketree import make_tree
from repo_paths import IOMEM_FIXTURES

from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.layout import preset
from crashhpd.sysview.snapshot import read_snapshot

Phdr = tuple[int, int, int, int, int, int, int, int]  # type flags offset vaddr paddr filesz memsz align

PAGE_OFFSET = 0xFFFF888000000000
TEXT = 0xFFFFFFFF81000000  # _text in the fake kallsyms
IMAGE_SIZE = 0x3A00000  # _end 0xffffffff84a00000 - _text
VMCOREINFO = (0x100C66000, 4132)  # "0x0000000100c66000 1024": the size is hex
NOTES_0_3 = [(0x13FC17000, 368), (0x13FC18000, 368), (0x13FC19000, 368), (0x13FC1A000, 368)]


def program_headers(data: bytes) -> list[Phdr]:
    """The Phdr table as raw numbers, read with struct at e_phoff, e_phentsize and e_phnum."""
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    return [struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize) for i in range(phnum)]


def note(addr: int, size: int) -> Phdr:
    return (4, 0, addr, 0, addr, size, size, 0)


def image(code_start: int, size: int = IMAGE_SIZE, text: int = TEXT) -> Phdr:
    return (1, 7, code_start, text, code_start, size, size, 0)


def ram(start: int, end: int, page_offset: int = PAGE_OFFSET, offset: int | None = None) -> Phdr:
    return (1, 7, start if offset is None else offset, start + page_offset, start, end - start + 1, end - start + 1, 0)


def generate(root: Path, layout: str, **options: object) -> bytes:
    return build_valid(read_snapshot(str(root)), preset(layout, **options)).data


# fixture -> (Kernel code start, RAM below 1 MiB, RAM from 1 MiB up), crash kernels already cut out
FIXTURES: dict[str, tuple[int, list[tuple[int, int]], list[tuple[int, int]]]] = {
    "crashkernel-high-low": (
        0x1000000,
        [(0x1000, 0x9FFFF)],
        [(0x100000, 0xAEFFFFFF), (0x100000000, 0x432FFFFFF)],
    ),
    "pmem-cxl-kmem": (
        0x1000000,
        [(0x1000, 0x9FBFF)],
        [
            (0x100000, 0x6EFFFFFF),
            (0x7F000000, 0x7FFFFFFF),
            (0x100000000, 0x47FFFFFFF),
            (0x580000000, 0x243FFFFFFF),
            (0xF010000000, 0xF02FFFFFFF),
        ],
    ),
    "qemu-kvm-crashkernel": (
        0x14E800000,
        [(0x1000, 0x9FBFF)],
        [(0x100000, 0x29FFFFFF), (0x34100000, 0xBFFDFFFF), (0x100000000, 0x43FFFFFFF)],
    ),
    "thinkpad-bare-metal": (
        0x66600000,
        [(0x1000, 0x57FFF), (0x59000, 0x8BFFF)],
        [
            (0x100000, 0xC006D017),
            (0xC006D018, 0xC007D657),
            (0xC007D658, 0xC007E017),
            (0xC007E018, 0xC008E057),
            (0xC008E058, 0xCBD01FFF),
            (0xCCDFE000, 0xCCDFEFFF),
            (0x100000000, 0x12DFFFFFF),
        ],
    ),
    "virtio-mem": (
        0x1000000,
        [(0x1000, 0x9FBFF)],
        [
            (0x100000, 0x29FFFFFF),
            (0x34100000, 0xBFFDFFFF),
            (0x100000000, 0x13FFFFFFF),
            (0x140000000, 0x147FFFFFF),
            (0x338000000, 0x33FFFFFFF),
            (0x340000000, 0x347FFFFFF),
            (0x348000000, 0x34FFFFFFF),
        ],
    ),
}


def fixture_tree(tmp_path: Path, name: str, **tree: object) -> Path:
    return make_tree(tmp_path, (IOMEM_FIXTURES / f"{name}.txt").read_text(), **tree)
