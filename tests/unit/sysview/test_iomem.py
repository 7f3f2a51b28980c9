# SPDX-License-Identifier: GPL-2.0-only
"""/proc/iomem parsing: the resource tree, which lines are RAM, and refusing what cannot be trusted."""

import pytest

from crashhpd.errors import ParseError, SnapshotError
from crashhpd.sysview import iomem
from crashhpd.sysview.iomem import Resource

NESTED = """\
00001000-0009fbff : System RAM
00100000-bfffffff : System RAM
  01000000-01ffffff : Kernel code
  10000000-1fffffff : System RAM
  2a000000-340fffff : Crash kernel

100000000-13fffffff : System RAM
140000000-333ffffff : virtio0
  140000000-147ffffff : System RAM (virtio_mem)
480000000-243fffffff : Persistent Memory
  580000000-243fffffff : dax3.0
    580000000-243fffffff : System RAM (kmem)
      600000000-6ffffffff : System RAM
2440000000-2443ffffff : Reserved
2444000000-2447ffffff : RAM buffer
2448000000-244bffffff : system ram
"""


def test_parse_gives_every_line_with_its_depth():
    resources = iomem.parse(NESTED)
    assert resources[:5] == [
        Resource(0x1000, 0x9FBFF, "System RAM", 0),
        Resource(0x100000, 0xBFFFFFFF, "System RAM", 0),
        Resource(0x1000000, 0x1FFFFFF, "Kernel code", 1),
        Resource(0x10000000, 0x1FFFFFFF, "System RAM", 1),
        Resource(0x2A000000, 0x340FFFFF, "Crash kernel", 1),
    ]
    assert resources[11] == Resource(0x600000000, 0x6FFFFFFFF, "System RAM", 3)
    assert len(resources) == 15


def test_system_ram_at_any_depth_nested_ram_adds_nothing():
    resources = iomem.parse(NESTED)
    assert iomem.system_ram(resources) == [
        (0x1000, 0x9FBFF),
        (0x100000, 0xBFFFFFFF),  # its nested System RAM child adds nothing
        (0x100000000, 0x13FFFFFFF),
        (0x140000000, 0x147FFFFFF),  # virtio_mem under a virtio container
        (0x580000000, 0x243FFFFFFF),  # kmem three levels down; its nested RAM adds nothing
    ]  # Reserved, RAM buffer and a lower-case "system ram" are not RAM


def test_named_finds_every_crash_kernel_line_at_any_depth():
    text = "00100000-bfffffff : System RAM\n  af000000-beffffff : Crash kernel\n" \
           "100000000-43f7fffff : System RAM\n  433000000-43f7fffff : Crash kernel\n"
    assert iomem.named(iomem.parse(text), "Crash kernel") == [(0xAF000000, 0xBEFFFFFF), (0x433000000, 0x43F7FFFFF)]


@pytest.mark.parametrize(
    ("text", "lineno", "bad", "why"),
    [
        ("00001000-0009ffff : System RAM\n00100000-bfffffff System RAM\n", 2, "00100000-bfffffff System RAM", "not"),
        ("00001000-0009ffff : System RAM\n0010000g-bfffffff : System RAM\n", 2, "0010000g-bfffffff : System RAM",
         "not"),
        ("00001000-0009ffff : System RAM\n\n   00002000-00002fff : Kernel code\n", 3,
         "   00002000-00002fff : Kernel code", "odd indentation"),
        ("00100000-bfffffff : System RAM\nc0000000-bfffffff : Reserved\n", 2, "c0000000-bfffffff : Reserved",
         "start above end"),
        ("  00100000-bfffffff : System RAM\n", 1, "  00100000-bfffffff : System RAM", "nested deeper"),
        ("00100000-bfffffff : System RAM\n    01000000-01ffffff : Kernel code\n", 2,
         "    01000000-01ffffff : Kernel code", "nested deeper"),
        ("00100000-bfffffff : System RAM\n  b0000000-c0000000 : Crash kernel\n", 2,
         "  b0000000-c0000000 : Crash kernel", "outside its parent"),
        ("00100000-bfffffff : System RAM\nbfff0000-cfffffff : Reserved\n", 2, "bfff0000-cfffffff : Reserved",
         "overlaps"),
        ("00100000-bfffffff : System RAM\n00000000-00000fff : Reserved\n", 2, "00000000-00000fff : Reserved",
         "precedes"),
        ("00100000-bfffffff : System RAM\nc0000000-cfffffff :  \n", 2, "c0000000-cfffffff :  ", "empty name"),
    ],
    ids=["no-colon", "not-hex", "odd-indent", "start-above-end", "first-line-nested", "skips-a-level",
         "outside-parent", "overlaps-sibling", "precedes-sibling", "empty-name"],
)
def test_malformed_line_names_file_line_and_text(text, lineno, bad, why):
    with pytest.raises(ParseError) as info:
        iomem.parse(text, "/tmp/root/proc/iomem")
    err = info.value
    assert (err.path, err.lineno, err.text) == ("/tmp/root/proc/iomem", lineno, bad)
    assert why in err.why
    assert str(err).startswith(f"/tmp/root/proc/iomem:{lineno}: ")
    assert repr(bad) in str(err)


def test_non_root_view_with_every_address_zero_is_refused():
    text = "00000000-00000000 : Reserved\n00000000-00000000 : System RAM\n  00000000-00000000 : Kernel code\n"
    with pytest.raises(SnapshotError, match=r"^/r/proc/iomem: every address reads 0.*root"):
        iomem.parse(text, "/r/proc/iomem")


def test_a_zero_first_page_alone_is_not_the_non_root_view():
    resources = iomem.parse("00000000-00000000 : Reserved\n00001000-0009ffff : System RAM\n")
    assert iomem.system_ram(resources) == [(0x1000, 0x9FFFF)]


def test_address_beyond_64_bits_is_a_parse_error():
    with pytest.raises(ParseError) as info:
        iomem.parse("00100000-bfffffff : System RAM\n10000000000000000-10000000000000fff : System RAM\n")
    assert info.value.lineno == 2
