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
