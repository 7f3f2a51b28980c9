# SPDX-License-Identifier: GPL-2.0-only
"""An update that finds nothing changed reuses the last build and view; any change in their inputs rebuilds.

The reuse is what makes such an update cost a comparison (tests/bench/update_cost.py); each test
here holds a negative control: the same call on changed input must not reuse.
"""

import dataclasses

from faketree import BLOCK, QEMU_GUEST, QEMU_HOT_ADD_BASE, hot_added, make_tree, replace_iomem

from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.coverage import view
from crashhpd.elfcorehdr.layout import preset
from crashhpd.elfcorehdr.validate import parse
from crashhpd.sysview import iomem
from crashhpd.sysview.loaded_header import LoadedHeader
from crashhpd.sysview.snapshot import CpuNote, read_snapshot


def test_the_same_iomem_text_is_parsed_once_and_another_is_parsed_again():
    first = iomem.view_of(QEMU_GUEST, "/proc/iomem")
    assert iomem.view_of(str(QEMU_GUEST), "/proc/iomem") is first
    grown = iomem.view_of(hot_added(QEMU_GUEST, 1, QEMU_HOT_ADD_BASE), "/proc/iomem")
    assert grown is not first and len(grown.ram) == len(first.ram) + 1


def test_a_build_on_the_same_inputs_is_reused_and_any_change_rebuilds(tmp_path):
    root = make_tree(tmp_path, QEMU_GUEST)
    layout = preset("kernel")
    built = build_valid(read_snapshot(str(root)), layout)
    again = build_valid(read_snapshot(str(root)), layout, built)
    assert again.parsed is built.parsed and again.data is built.data
    # negative controls: other RAM, another note, another layout
    replace_iomem(root, hot_added(QEMU_GUEST, 1, QEMU_HOT_ADD_BASE))
    grown = build_valid(read_snapshot(str(root)), layout, built)
    assert grown.parsed is not built.parsed and len(grown.model.ram) == len(built.model.ram) + 1
    moved = dataclasses.replace(built.snapshot, crash_notes={**built.snapshot.crash_notes, 0: CpuNote(0x1000, 368)})
    assert build_valid(moved, layout, built).data != built.data
    assert build_valid(built.snapshot, preset("kexec-tools"), built).layout == preset("kexec-tools")


def test_a_view_is_reused_only_for_the_same_kernel_header_against_the_same_build(tmp_path):
    root = make_tree(tmp_path, QEMU_GUEST)
    built = build_valid(read_snapshot(str(root)), preset("kernel"))
    held = LoadedHeader(True, header=built.data, memsz=len(built.data))
    first = view(held, built)
    assert first.coverage is not None and first.coverage.in_sync
    assert view(LoadedHeader(True, header=bytes(built.data), memsz=8192), built, first).coverage is first.coverage
    # negative controls: the kernel's header changed, the build changed
    replace_iomem(root, hot_added(QEMU_GUEST, 1, QEMU_HOT_ADD_BASE))
    grown = build_valid(read_snapshot(str(root)), preset("kernel"), built)
    stale = view(held, grown, first)
    assert stale.coverage is not None and stale.coverage.uncovered_ram_bytes == BLOCK
    other = dataclasses.replace(held, header=grown.data)
    assert view(other, built, first).coverage is not first.coverage


def test_the_kernels_header_is_parsed_from_the_fresh_one_and_shares_its_rows(tmp_path):
    """A kernel's header that differs from the fresh one (stale: a block fewer) is parsed only where its rows
    differ: the parse is the whole parse, and every row equal to the fresh header's is the fresh row itself,
    which the diff and the covers then compare by identity."""
    root = make_tree(tmp_path, QEMU_GUEST)
    old = build_valid(read_snapshot(str(root)), preset("kernel"))
    replace_iomem(root, hot_added(QEMU_GUEST, 1, QEMU_HOT_ADD_BASE))
    grown = build_valid(read_snapshot(str(root)), preset("kernel"), old)
    seen = view(LoadedHeader(True, header=old.data, memsz=len(old.data)), grown)
    assert seen.basis is not None and seen.coverage is not None and seen.coverage.uncovered_ram_bytes == BLOCK
    held, whole = seen.basis.held, parse(old.data)
    assert (held, held.ram, held.others, held.cover.ranges) == (whole, whole.ram, whole.others, whole.cover.ranges)
    # every segment of the old header is one of the new; its last merged range grew by the block
    for mine, fresh, alike in ((held.segments, grown.parsed.segments, len(held.segments)),
                               (held.cover.ranges, grown.parsed.cover.ranges, len(held.cover.ranges) - 1)):
        equal = [i for i, (a, b) in enumerate(zip(mine, fresh)) if a == b]
        assert len(equal) == alike and all(mine[i] is fresh[i] for i in equal)


def _same_build(a, b) -> bool:
    return (a.data, a.model, a.parsed, a.parsed.ram, a.parsed.others, a.parsed.cover.ranges) == \
        (b.data, b.model, b.parsed, b.parsed.ram, b.parsed.others, b.parsed.cover.ranges)


def test_a_build_and_a_view_from_the_last_ones_are_those_made_from_scratch(tmp_path):
    """Hot-add, hot-remove (in the middle, at the end), a block beside another, in both layouts: each stage that
    starts from the last update's rows gives exactly what it gives from nothing, and so does the kernel's view."""
    steps = [hot_added(QEMU_GUEST, n, QEMU_HOT_ADD_BASE, stride=stride) for n, stride in
             ((3, 2 * BLOCK), (4, 2 * BLOCK), (2, 2 * BLOCK), (6, BLOCK), (5, BLOCK), (0, BLOCK), (8, 2 * BLOCK))]
    steps.insert(3, steps[2].replace(f"{QEMU_HOT_ADD_BASE:x}-", f"{QEMU_HOT_ADD_BASE + 4096:x}-"))  # a block shrunk
    root = make_tree(tmp_path, steps[0])
    for layout in (preset("kernel"), preset("kexec-tools")):
        last = build_valid(read_snapshot(str(root)), layout)
        held = LoadedHeader(True, header=last.data, memsz=len(last.data))
        last_view = view(held, last)
        for text in steps[1:] + steps[:1]:
            replace_iomem(root, text)
            snapshot = read_snapshot(str(root))
            built, whole = build_valid(snapshot, layout, last), build_valid(snapshot, layout)
            assert _same_build(built, whole)
            seen, fresh = view(held, built, last_view), view(held, whole)
            assert seen.coverage == fresh.coverage and seen.coverage is not None
            basis, fresh_basis = seen.basis, fresh.basis
            assert basis is not None and fresh_basis is not None
            assert (basis.uncovered.ranges, basis.stale.ranges) == (fresh_basis.uncovered.ranges,
                                                                     fresh_basis.stale.ranges)
            last, last_view = built, seen
        held = LoadedHeader(True, header=last.data, memsz=len(last.data))  # the kernel's header changes too
        assert view(held, last, last_view).coverage == view(held, last).coverage


def test_a_check_from_the_last_header_finds_what_a_whole_check_finds(tmp_path):
    """A negative control for the windowed check: RAM rows that changed and break a rule are found, with the
    words a whole check uses; System RAM that moved under unchanged rows is found too."""
    import struct

    from crashhpd.abi.elf import EHDR_SIZE, PHDR_SIZE
    from crashhpd.elfcorehdr.validate import check, parse

    root = make_tree(tmp_path, hot_added(QEMU_GUEST, 4, QEMU_HOT_ADD_BASE, stride=2 * BLOCK))
    layout = preset("kernel")
    last = build_valid(read_snapshot(str(root)), layout)
    replace_iomem(root, hot_added(QEMU_GUEST, 5, QEMU_HOT_ADD_BASE, stride=2 * BLOCK))
    snapshot = read_snapshot(str(root))
    grown = build_valid(snapshot, layout, last)
    row = EHDR_SIZE + PHDR_SIZE * (len(grown.parsed.segments) - 1)  # the new block's row
    crash = snapshot.crash_kernel[0][0]
    for field, value in ((4, 0), (8, QEMU_HOT_ADD_BASE + 9 * BLOCK), (16, 0xFFFF888000000000 + crash + 1),
                         (24, crash), (32, 1 << 40), (48, 1)):  # flags, p_offset, p_vaddr, p_paddr, memsz, align
        data = bytearray(grown.data)
        struct.pack_into("<I" if field == 4 else "<Q", data, row + field, value)
        parsed = parse(bytes(data), (last.data, last.parsed))
        windowed = check(parsed, snapshot, layout, (last.parsed, last.snapshot))
        assert windowed and windowed == check(parse(bytes(data)), snapshot, layout), (field, windowed)
    # System RAM shrunk under a row that did not change: that row is checked again
    shrunk = dataclasses.replace(snapshot, ram=snapshot.ram[:-2] + ((snapshot.ram[-2][0], snapshot.ram[-2][1] - 4096),
                                                                    snapshot.ram[-1]))
    windowed = check(grown.parsed, shrunk, layout, (last.parsed, last.snapshot))
    assert windowed and windowed == check(grown.parsed, shrunk, layout)
