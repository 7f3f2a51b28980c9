# SPDX-License-Identifier: GPL-2.0-only
"""The differ on headers built from real trees before and after a hotplug: the lines an admin reads."""

from pathlib import Path

from faketree import make_tree, note_addr

from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.diff import diff
from crashhpd.elfcorehdr.layout import HeaderModel, preset
from crashhpd.elfcorehdr.pack import build
from crashhpd.elfcorehdr.validate import ParsedHeader, parse
from crashhpd.sysview.snapshot import read_snapshot

BASE = """\
00001000-0009fbff : System RAM
00100000-bffdffff : System RAM
  01000000-01ffffff : Kernel code
  2a000000-340fffff : Crash kernel
100000000-13fffffff : System RAM
"""
CPUS = {note_addr(cpu): cpu for cpu in range(8)}


def header(root: Path, iomem: str = BASE, **tree: object) -> ParsedHeader:
    return build_valid(read_snapshot(str(make_tree(root, iomem, **tree))), preset("kernel")).parsed


def model_header(ram: tuple[tuple[int, int], ...]) -> ParsedHeader:
    # packed from a hand-made model, with no snapshot to check it against: build_valid cannot make it
    return parse(build(HeaderModel(cpu_notes=((0, 0x5000, 368),), vmcoreinfo=None, image=None, ram=ram,
                                   page_offset=0xFFFF888000000000, align=4096)))


def test_equal_headers_give_nothing(tmp_path):
    assert diff(header(tmp_path / "a"), header(tmp_path / "b"), CPUS) == []


def test_hot_added_block_extending_a_range(tmp_path):
    grown = BASE.replace("100000000-13fffffff", "100000000-17fffffff")
    assert diff(header(tmp_path / "a"), header(tmp_path / "b", grown), CPUS) == [
        "+ RAM 0x140000000-0x17fffffff (1 GiB)"]


def test_hot_added_block_as_its_own_line(tmp_path):
    kmem = BASE + "140000000-17fffffff : dax0.0\n  140000000-17fffffff : System RAM (kmem)\n"
    assert diff(header(tmp_path / "a"), header(tmp_path / "b", kmem), CPUS) == ["+ RAM 0x140000000-0x17fffffff (1 GiB)"]


def test_hot_removed_block_in_the_middle(tmp_path):
    holed = BASE.replace("100000000-13fffffff : System RAM\n",
                         "100000000-107ffffff : System RAM\n110000000-13fffffff : System RAM\n")
    assert diff(header(tmp_path / "a"), header(tmp_path / "b", holed), CPUS) == [
        "- RAM 0x108000000-0x10fffffff (128 MiB)"]


def test_cpu_going_offline_and_coming_back(tmp_path):
    four = header(tmp_path / "a", possible="0-3")
    three = header(tmp_path / "b", possible="0-3", online="0-2")
    assert diff(four, three, CPUS) == ["- CPU 3 note"]
    assert diff(three, four, CPUS) == ["+ CPU 3 note"]


def test_note_of_an_unknown_cpu_and_the_vmcoreinfo_note(tmp_path):
    old = header(tmp_path / "a", possible="0-1")
    new = header(tmp_path / "b", possible="0-1", vmcoreinfo="0x0000000100d00000 1024\n")
    assert diff(old, new, {}, vmcoreinfo_addr=0x100C66000) == ["- VMCOREINFO note 0x100c66000"] + [
        "+ note 0x100d00000 (4132 bytes)"]


def test_notes_then_image_then_ram_in_one_report(tmp_path):
    old = header(tmp_path / "a", possible="0-3")
    new = header(tmp_path / "b", BASE.replace("100000000-13fffffff", "100000000-17fffffff").replace(
        "01000000-01ffffff : Kernel code", "02000000-02ffffff : Kernel code"), possible="0-3", online="0,2-3")
    assert diff(old, new, CPUS) == [
        "- CPU 1 note",
        "~ kernel image 0x1000000+0x3a00000@0xffffffff81000000 -> 0x2000000+0x3a00000@0xffffffff81000000",
        "+ RAM 0x140000000-0x17fffffff (1 GiB)",
    ]


def test_same_coverage_split_differently_is_named_as_an_encoding_change():
    whole = model_header(((0x100000000, 0x17FFFFFFF),))
    split = model_header(((0x100000000, 0x13FFFFFFF), (0x140000000, 0x17FFFFFFF)))
    assert diff(whole, split) == [
        "~ same CPUs and RAM, different encoding (2 -> 3 program headers, 4096 -> 4096 bytes)"]
    assert diff(split, model_header(((0x100000000, 0x13FFFFFFF), (0x140000000, 0x17FFFFFFF)))) == []


def test_ram_lines_are_those_of_every_range_against_the_other_cover():
    """The differ compares only the merged ranges between the covers' common ends; the oracle here asks
    missing() of every range, in both directions, on random hot-adds and removes."""
    import random

    from crashhpd.elfcorehdr.diff import _ram_line

    rng = random.Random(7)
    for _ in range(300):
        rows = sorted({(s, s + rng.randrange(1, 4)) for s in rng.sample(range(0, 400, 5), rng.randrange(1, 30))})
        edited = list(rows)
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(edited) + 1)
            if rng.random() < 0.5 and edited:
                del edited[min(at, len(edited) - 1)]
            else:
                start = rng.randrange(0, 400)
                edited.insert(at, (start, start + rng.randrange(0, 6)))
        edited = sorted(set(edited))
        old, new = model_header(tuple(rows)), model_header(tuple(edited))
        expected = ([_ram_line("-", r) for r in new.cover.missing(old.cover.ranges)]
                    + [_ram_line("+", r) for r in old.cover.missing(new.cover.ranges)])
        assert [line for line in diff(old, new) if " RAM " in line] == expected
