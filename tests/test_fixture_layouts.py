"""Every /proc/iomem fixture, in both layouts: the whole program-header list, written out by hand.

The expected tables are typed from the x86_64 elfcorehdr rules (kernel/crash_core.c for the
`kernel` layout, kexec-tools' crashdump-elf.c for `kexec-tools`) and the fixture text, never
computed with crashhpd's own code: a change in RAM selection, hole subtraction, CPU choice,
ordering, field encoding or buffer rounding fails here.
"""

import struct
from pathlib import Path

import pytest
from faketree import make_tree

from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.layout import preset
from crashhpd.sysview.snapshot import read_snapshot

IOMEM = Path(__file__).parent / "fixtures" / "iomem"

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


def ram(start: int, end: int, page_offset: int = PAGE_OFFSET) -> Phdr:
    return (1, 7, start, start + page_offset, start, end - start + 1, end - start + 1, 0)


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
    return make_tree(tmp_path, (IOMEM / f"{name}.txt").read_text(), **tree)


def test_every_fixture_is_covered():
    assert sorted(FIXTURES) == sorted(p.stem for p in IOMEM.glob("*.txt"))


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_kernel_layout(tmp_path, name):
    code, _low, high = FIXTURES[name]
    data = generate(fixture_tree(tmp_path, name), "kernel")
    expected = [note(*n) for n in NOTES_0_3] + [note(*VMCOREINFO), image(code)] + [ram(*r) for r in high]
    assert program_headers(data) == expected
    assert len(data) == 4096
    assert data[64 + 56 * len(expected):] == bytes(4096 - 64 - 56 * len(expected))


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_kexec_tools_layout_keeps_low_memory(tmp_path, name):
    code, low, high = FIXTURES[name]
    data = generate(fixture_tree(tmp_path, name), "kexec-tools")
    expected = [note(*n) for n in NOTES_0_3] + [note(*VMCOREINFO), image(code)] + [ram(*r) for r in low + high]
    assert program_headers(data) == expected
    assert len(data) == 1024
    assert data[64 + 56 * len(expected):] == bytes(1024 - 64 - 56 * len(expected))


@pytest.mark.parametrize(
    ("cpus", "expected_cpus"),
    [(None, [0, 1, 2, 3, 5]), ("online", [0, 1, 2, 3, 5]), ("present", [0, 1, 2, 3, 4, 5]),
     ("possible", [0, 1, 2, 3, 4, 5])],
)
def test_kernel_layout_cpu_set_in_ascending_order_only_cpus_with_notes(tmp_path, cpus, expected_cpus):
    """CPUs 6 and 7 are possible but absent: they have no crash_notes, so no note."""
    root = fixture_tree(tmp_path, "qemu-kvm-crashkernel", possible="0-7", present="0-5", online="0-3,5")
    headers = program_headers(generate(root, "kernel", cpus=cpus))
    addrs = {0: 0x13FC17000, 1: 0x13FC18000, 2: 0x13FC19000, 3: 0x13FC1A000, 4: 0x13FC1B000, 5: 0x13FC1C000}
    assert headers[: len(expected_cpus) + 1] == [note(addrs[c], 368) for c in expected_cpus] + [note(*VMCOREINFO)]
    assert headers[len(expected_cpus) + 1] == image(0x14E800000)


def test_kexec_tools_layout_lists_every_cpu_with_notes_and_1024_without_size(tmp_path):
    """Offline CPU 2 still has a note; CPU 3 has no crash_notes_size file (kernels before 4.10)."""
    notes = {0: (0x7000, 368), 2: (0x9000, 368), 3: (0xA000, None)}
    root = fixture_tree(tmp_path, "qemu-kvm-crashkernel", possible="0-3", online="0-1", notes=notes)
    headers = program_headers(generate(root, "kexec-tools"))
    assert headers[:4] == [note(0x7000, 368), note(0x9000, 368), note(0xA000, 1024), note(*VMCOREINFO)]
    kernel = program_headers(generate(root, "kernel"))
    assert kernel[:2] == [note(0x7000, 368), note(*VMCOREINFO)]  # CPU 1 is online but has no note


def test_page_offset_override_moves_every_ram_vaddr_but_not_the_image(tmp_path):
    code, _low, high = FIXTURES["virtio-mem"]
    root = fixture_tree(tmp_path, "virtio-mem")
    headers = program_headers(generate(root, "kernel", page_offset=0xFF11000000000000))
    assert headers[5] == image(code)
    assert headers[6:] == [ram(s, e, page_offset=0xFF11000000000000) for s, e in high]


def test_image_size_from_bss_when_kallsyms_has_no_end(tmp_path):
    root = fixture_tree(tmp_path, "qemu-kvm-crashkernel", kallsyms="ffffffff9a000000 T _text\n")
    headers = program_headers(generate(root, "kernel"))
    # Kernel bss ends at 0x14fa71fff, Kernel code starts at 0x14e800000
    assert headers[5] == image(0x14E800000, size=0x1272000, text=0xFFFFFFFF9A000000)


@pytest.mark.parametrize(
    ("iomem", "kallsyms"),
    [
        ("00100000-3fffffff : System RAM\n", "ffffffff81000000 T _text\nffffffff84a00000 B _end\n"),  # no Kernel code
        ("00100000-3fffffff : System RAM\n  01000000-01ffffff : Kernel code\n", None),  # no kallsyms
        ("00100000-3fffffff : System RAM\n  01000000-01ffffff : Kernel code\n", "ffffffff84a00000 B _end\n"),
        ("00100000-3fffffff : System RAM\n  01000000-01ffffff : Kernel code\n",
         "0000000000000000 T _text\n0000000000000000 B _end\n"),  # kptr_restrict hides addresses
    ],
    ids=["no-kernel-code", "no-kallsyms", "no-text", "hidden-text"],
)
def test_image_omitted_without_kernel_code_or_text(tmp_path, iomem, kallsyms):
    headers = program_headers(generate(make_tree(tmp_path, iomem, possible="0", kallsyms=kallsyms), "kernel"))
    assert headers == [note(0x13FC17000, 368), note(*VMCOREINFO), ram(0x100000, 0x3FFFFFFF)]


def test_kernel_buffer_grows_by_whole_pages(tmp_path):
    """80 CPUs + VMCOREINFO + image + 7 RAM = 89 phdrs = 5048 bytes -> two pages."""
    data = generate(fixture_tree(tmp_path, "thinkpad-bare-metal", possible="0-79"), "kernel")
    assert struct.unpack_from("<H", data, 56) == (89,)
    assert len(data) == 8192
    assert data[5048:] == bytes(8192 - 5048)


def test_kexec_tools_buffer_grows_by_whole_kibs(tmp_path):
    """16 CPUs + VMCOREINFO + image + 9 RAM = 27 phdrs = 1576 bytes -> 2048."""
    data = generate(fixture_tree(tmp_path, "thinkpad-bare-metal", possible="0-15"), "kexec-tools")
    assert struct.unpack_from("<H", data, 56) == (27,)
    assert len(data) == 2048
    assert data[1576:] == bytes(2048 - 1576)
