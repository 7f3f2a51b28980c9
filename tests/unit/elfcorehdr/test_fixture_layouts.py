# SPDX-License-Identifier: GPL-2.0-only
"""Every /proc/iomem fixture, in both layouts: the whole program-header list, written out by hand.

The expected tables are typed from the x86_64 elfcorehdr rules (kernel/crash_core.c for the
`kernel` layout, kexec-tools' crashdump-elf.c and crashdump-x86.c for `kexec-tools`, as the real
binary showed them: test_real_kexec_tools.py) and the fixture text, never computed with
crashhpd's own code: a change in RAM selection, hole subtraction, CPU choice, ordering, field
encoding or buffer rounding fails here.
"""

import struct
from pathlib import Path

import pytest
from faketree import kcore, make_tree
from layouts import (
    FIXTURES,
    NOTES_0_3,
    PAGE_OFFSET,
    VMCOREINFO,
    fixture_tree,
    generate,
    image,
    note,
    program_headers,
    ram,
)
from repo_paths import IOMEM_FIXTURES

from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.layout import preset
from crashhpd.elfcorehdr.validate import check, parse
from crashhpd.sysview.snapshot import read_snapshot

# fixture -> kexec-tools' backup copy of its first RAM range below 640 KiB: the top of the last Crash
# kernel range, less that range's size rounded up to 1 KiB and a page (None: no Crash kernel), and how
# many ranges its get_crash_memory_ranges() keeps (RAM at any depth, reserved, ACPI, Persistent Memory,
# plus a piece per range a Crash kernel splits), which the buffer has room for
KEXEC_TOOLS: dict[str, tuple[int | None, int]] = {
    "crashkernel-high-low": (0x43F800000 - 0x9F000, 4),  # 2 RAM below 4 GiB, Reserved, 1 RAM above
    "pmem-cxl-kmem": (0x7F000000 - 0x9F000, 7),  # 3 RAM + 1 split, Persistent Memory, 2 kmem
    "qemu-kvm-crashkernel": (0x34100000 - 0x9F000, 10),  # 3 RAM + 1 split, 6 reserved
    "thinkpad-bare-metal": (None, 17),  # 9 RAM, 6 Reserved, ACPI Tables, ACPI NVS
    "virtio-mem": (0x34100000 - 0x9F000, 8),  # 3 RAM + 1 split, 4 virtio_mem
}


def test_every_fixture_is_covered():
    assert sorted(FIXTURES) == sorted(p.stem for p in IOMEM_FIXTURES.glob("*.txt"))


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_kernel_layout(tmp_path, name):
    code, _low, high = FIXTURES[name]
    data = generate(fixture_tree(tmp_path, name), "kernel")
    expected = [note(*n) for n in NOTES_0_3] + [note(*VMCOREINFO), image(code)] + [ram(*r) for r in high]
    assert program_headers(data) == expected
    assert len(data) == 4096
    assert data[64 + 56 * len(expected):] == bytes(4096 - 64 - 56 * len(expected))


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_kexec_tools_layout_keeps_low_memory_read_from_its_backup_copy(tmp_path, name):
    code, low, high = FIXTURES[name]
    backup, kept = KEXEC_TOOLS[name]
    data = generate(fixture_tree(tmp_path, name), "kexec-tools")
    expected = [note(*n) for n in NOTES_0_3] + [note(*VMCOREINFO), image(code)]
    expected += [ram(*low[0], offset=backup)] + [ram(*r) for r in low[1:] + high]
    assert program_headers(data) == expected
    size = -(-(64 + 56 * (4 + 1 + 1 + kept)) // 1024) * 1024  # room for every range kept, written or not
    assert len(data) == {"thinkpad-bare-metal": 2048}.get(name, 1024) == size
    assert data[64 + 56 * len(expected):] == bytes(size - 64 - 56 * len(expected))


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
    """16 CPUs + VMCOREINFO + image + 9 RAM = 27 phdrs written = 1576 bytes; room for 16 + 1 + 1 + 17 kept
    ranges = 35 = 2024 bytes -> 2048."""
    data = generate(fixture_tree(tmp_path, "thinkpad-bare-metal", possible="0-15"), "kexec-tools")
    assert struct.unpack_from("<H", data, 56) == (27,)
    assert len(data) == 2048
    assert data[1576:] == bytes(2048 - 1576)


# --- kexec-tools' own rules, each shown by the real binary (test_real_kexec_tools.py) ----------

QEMU_CODE = 0x14E800000
QEMU_BACKUP = 0x34100000 - 0x9F000
QEMU_RAM = [(0x100000, 0x29FFFFFF), (0x34100000, 0xBFFDFFFF), (0x100000000, 0x43FFFFFFF)]
NOTE_ADDRS = {c: 0x13FC17000 + 0x1000 * c for c in range(8)}


def qemu_tree(tmp_path: Path, iomem: str | None = None, **tree: object) -> Path:
    text = iomem if iomem is not None else (IOMEM_FIXTURES / "qemu-kvm-crashkernel.txt").read_text()
    return make_tree(tmp_path, text, **tree)  # type: ignore[arg-type]


def test_kexec_tools_looks_at_as_many_cpus_as_possible_lists(tmp_path):
    """possible "0-3,6" is 5 CPUs to sysconf(_SC_NPROCESSORS_CONF): CPUs 0-4 are asked, so CPU 6's note is left out."""
    headers = program_headers(generate(qemu_tree(tmp_path, possible="0-3,6"), "kexec-tools"))
    assert headers[:6] == [note(NOTE_ADDRS[c], 368) for c in range(4)] + [note(*VMCOREINFO), image(QEMU_CODE)]


def test_kexec_tools_buffer_has_room_for_possible_cpus_without_notes(tmp_path):
    """CPUs 6 and 7 are possible, absent, without notes: 6 notes + 6 more phdrs are written (736 bytes),
    room is made for 8 CPUs + VMCOREINFO + image + 10 kept ranges = 20 (1184 bytes) -> 2048."""
    data = generate(qemu_tree(tmp_path, possible="0-7", present="0-5", online="0-3,5"), "kexec-tools")
    assert program_headers(data)[:7] == [note(NOTE_ADDRS[c], 368) for c in range(6)] + [note(*VMCOREINFO)]
    assert struct.unpack_from("<H", data, 56) == (12,)
    assert len(data) == 2048 and data[736:] == bytes(2048 - 736)


def test_kexec_tools_cuts_gart_out_of_ram(tmp_path):
    iomem = (IOMEM_FIXTURES / "qemu-kvm-crashkernel.txt").read_text().replace(
        "  14f764000-14fa71fff : Kernel bss\n", "  14f764000-14fa71fff : Kernel bss\n  200000000-203ffffff : GART\n")
    headers = program_headers(generate(qemu_tree(tmp_path, iomem), "kexec-tools"))
    assert headers[6:] == [ram(0x1000, 0x9FBFF, offset=QEMU_BACKUP), ram(0x100000, 0x29FFFFFF),
                           ram(0x34100000, 0xBFFDFFFF), ram(0x100000000, 0x1FFFFFFFF), ram(0x204000000, 0x43FFFFFFF)]
    kernel = program_headers(generate(qemu_tree(tmp_path / "k", iomem), "kernel"))
    assert kernel[6:] == [ram(*r) for r in QEMU_RAM]  # the kernel's walk has no GART rule


def test_kexec_tools_dumps_crash_cma_the_kernel_does_not(tmp_path):
    root = qemu_tree(tmp_path, extra={"sys/kernel/kexec_crash_cma_ranges": "80000000-8fffffff\n"})
    kexec_tools = build_valid(read_snapshot(str(root)), preset("kexec-tools"))  # valid: CMA is not its rule
    assert program_headers(kexec_tools.data)[6:] == [ram(0x1000, 0x9FBFF, offset=QEMU_BACKUP)] + [
        ram(*r) for r in QEMU_RAM]
    assert program_headers(generate(root, "kernel"))[6:] == [
        ram(0x100000, 0x29FFFFFF), ram(0x34100000, 0x7FFFFFFF), ram(0x90000000, 0xBFFDFFFF),
        ram(0x100000000, 0x43FFFFFFF)]
    # checked as no particular producer's, dumping CMA is a fault
    assert check(kexec_tools.parsed, kexec_tools.snapshot) == [
        "RAM 0x34100000-0xbffdffff overlaps crash-kernel memory 0x80000000-0x8fffffff"]


def test_kexec_tools_backup_copy_must_be_in_crash_kernel_memory(tmp_path):
    built = build_valid(read_snapshot(str(qemu_tree(tmp_path))), preset("kexec-tools"))
    assert program_headers(built.data)[6][2] == QEMU_BACKUP
    moved = bytearray(built.data)
    struct.pack_into("<Q", moved, 64 + 56 * 6 + 8, 0x200000)
    assert check(parse(bytes(moved)), built.snapshot, preset("kexec-tools")) == [
        "RAM 0x1000-0x9fbff: its copy at p_offset 0x200000 is not inside a Crash kernel range, where kexec-tools "
        "keeps it"]


def test_kexec_tools_leaves_an_empty_entry_for_a_ram_line_that_is_all_crash_kernel(tmp_path):
    iomem = ((IOMEM_FIXTURES / "qemu-kvm-crashkernel.txt").read_text()
             .replace("  2a000000-340fffff : Crash kernel\n", "")
             + "440000000-47fffffff : System RAM\n  440000000-47fffffff : Crash kernel\n")
    built = build_valid(read_snapshot(str(qemu_tree(tmp_path, iomem))), preset("kexec-tools"))
    assert program_headers(built.data)[6:] == [
        ram(0x1000, 0x9FBFF, offset=0x480000000 - 0x9F000), ram(0x100000, 0xBFFDFFFF), ram(0x100000000, 0x43FFFFFFF),
        (1, 7, 0x480000000, 0x480000000 + PAGE_OFFSET, 0x480000000, 0, 0, 0)]
    assert built.parsed.ram[-1] == (0x100000000, 0x43FFFFFFF)  # it covers nothing


KASLR_TEXT = 0xFFFFFFFF9A000000
KASLR_DIRECT_MAP = 0xFFFF9F0000000000
HIDDEN = "0000000000000000 T _text\n0000000000000000 T _stext\n0000000000000000 B _end\n"


@pytest.mark.parametrize(("kallsyms", "loads", "expected", "kernel_image"), [
    # hidden symbols: the first kcore PT_LOAD in the 512 MiB kernel text window, not the modules after it
    (HIDDEN, [(KASLR_TEXT, QEMU_CODE, 0x2345000), (KASLR_DIRECT_MAP, 0, 1 << 32), (0xFFFFFFFFC0000000, 0, 1 << 24)],
     image(QEMU_CODE, size=0x2345000, text=KASLR_TEXT), None),
    # the PT_LOAD holding _stext, its start rounded down to 1 MiB, its size up to a page
    ("ffffffff9a200000 T _text\nffffffff9a200000 T _stext\nffffffff9c000000 B _end\n",
     [(KASLR_DIRECT_MAP, 0, 1 << 32), (0xFFFFFFFF9A123000, QEMU_CODE, 0x2345123)],
     image(QEMU_CODE, size=0x2369000, text=0xFFFFFFFF9A100000), image(QEMU_CODE, 0x1E00000, 0xFFFFFFFF9A200000)),
    # no kallsyms at all: the text window again
    (None, [(KASLR_TEXT, QEMU_CODE, 0x3A00000), (KASLR_DIRECT_MAP, 0, 1 << 32)],
     image(QEMU_CODE, text=KASLR_TEXT), None),
], ids=["hidden", "stext", "no-kallsyms"])
def test_kexec_tools_takes_the_kernel_image_from_kcore(tmp_path, kallsyms, loads, expected, kernel_image):
    root = qemu_tree(tmp_path, kallsyms=kallsyms, extra={})
    (root / "proc" / "kcore").write_bytes(kcore(loads))
    headers = program_headers(generate(root, "kexec-tools"))
    assert headers[5] == expected
    assert headers[6] == ram(0x1000, 0x9FBFF, page_offset=KASLR_DIRECT_MAP, offset=QEMU_BACKUP)
    kernel = program_headers(generate(root, "kernel"))  # the kernel layout's image is kallsyms' _text to _end
    assert [h for h in kernel if h[0] == 1 and h[3] >= 0xFFFFFFFF80000000] == ([kernel_image] if kernel_image else [])


def test_kexec_tools_exclude_region_cuts_every_line_but_inserts_one_piece(tmp_path):
    """A Crash kernel inside a `reserved` line inside RAM: both are cut, only the reserved line's upper
    part comes back (as RAM), so RAM 0x30000000-0x3fffffff is lost; the binary does the same."""
    iomem = ("00001000-0009fbff : System RAM\n00100000-3fffffff : System RAM\n  01000000-01ffffff : Kernel code\n"
             "  20000000-2fffffff : reserved\n    24000000-27ffffff : Crash kernel\n")
    headers = program_headers(generate(make_tree(tmp_path, iomem), "kexec-tools"))
    assert headers[6:] == [ram(0x1000, 0x9FBFF, offset=0x28000000 - 0x9F000), ram(0x100000, 0x23FFFFFF),
                           ram(0x28000000, 0x2FFFFFFF)]
