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


# iomem.reparse() against parse(): every fixture, and the NESTED text above, with any run of lines replaced by
# lines of any depth (well formed, out of order, malformed, blank): the incremental parse gives what parse() gives,
# or raises the error parse() raises.
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from repo_paths import IOMEM_FIXTURES  # noqa: E402

TEXTS = [NESTED] + [path.read_text() for path in sorted(IOMEM_FIXTURES.glob("*.txt"))]
new_lines = st.lists(st.one_of(
    st.tuples(st.integers(0, 3), st.integers(0, 2**36), st.integers(0, 2**30),
              st.sampled_from(["System RAM", "Reserved", "Kernel code", "System RAM (virtio_mem)"]))
    .map(lambda t: f"{'  ' * t[0]}{t[1]:08x}-{t[1] + t[2]:08x} : {t[3]}"),
    st.sampled_from(["", "   ", "garbage", " 1000-2000 : odd", "00000000-00000000 : zero"])), max_size=4)


def _whole_view(text):
    iomem._LAST.pop("/whole", None)
    return iomem.view_of(text, "/whole")


def _views(view):
    return view.resources, view.ram, view.crash_kernel, view.kernel_code, view.kernel_bss, view.marks


def _outcome(parse, *args):
    try:
        return tuple(parse(*args))
    except (ParseError, SnapshotError) as err:
        return type(err), str(err)


@settings(max_examples=300)
@given(st.sampled_from(TEXTS), st.integers(0, 200), st.integers(0, 4), new_lines, st.booleans())
def test_a_reparse_from_the_last_text_is_the_parse_of_the_whole(text, at, cut, insert, from_edit):
    lines = text.splitlines(keepends=True)
    at = min(at, len(lines))
    edited = "".join(lines[:at] + [line + "\n" for line in insert] + lines[at + cut:])
    old, new = (edited, text) if from_edit else (text, edited)  # from a text that failed, or to one
    old_parse = _outcome(iomem.parse, old)
    if old_parse and isinstance(old_parse[0], type):
        return  # the daemon keeps only views it could parse
    expected = _outcome(iomem.parse, new)
    again = _outcome(lambda *a: iomem.reparse(*a)[0], old, old_parse, new)
    assert again == expected
    if not isinstance(expected[0], type):  # and the views taken from the old ones are those of the new text
        assert _views(iomem._view_again(_whole_view(old), new, "/proc/iomem")) == _views(_whole_view(new))
    # and not by falling back to parse() where it need not: the lines it reads again give the same verdict
    try:
        assert iomem._reparse(old, old_parse, new, "/proc/iomem", iomem._dense(old, old_parse))[0] == expected
    except iomem._Whole:
        assert any(not line.strip() for line in (old + new).split("\n")[:-1]) or not new.endswith("\n")
    except ParseError:  # reparse() then parses the whole text for parse()'s own message
        assert expected[0] is ParseError


@pytest.mark.parametrize(("line", "edit", "why"), [
    ("  2a000000-340fffff : Crash kernel\n", "  2a000000-340fffff : Crash kernel\nc0000000-100000fff : Reserved\n",
     "overlaps or precedes"),  # a top-level line added over the next one, which is unchanged
    ("140000000-333ffffff : virtio0\n", "140000000-140ffffff : virtio0\n", "outside its parent"),  # a parent shrunk
])
def test_a_reparse_checks_the_lines_after_the_change_against_it(line, edit, why):
    """The lines after the change keep their text but not their context: they are placed again."""
    text = NESTED.replace("\n\n", "\n")  # a blank line makes it parse the whole text
    edited = text.replace(line, edit)
    with pytest.raises(ParseError, match=why):
        iomem._reparse(text, tuple(iomem.parse(text)), edited, "/proc/iomem", True)
    with pytest.raises(ParseError, match=why):
        iomem.reparse(text, tuple(iomem.parse(text)), edited)


DEEP = """\
00000000-0fffffff : System RAM
  00100000-001fffff : Kernel code
    00100000-0010ffff : deep
  00200000-002fffff : Kernel data
10000000-1fffffff : System RAM
"""


@pytest.mark.parametrize("edit", [
    ("Kernel data", "Kernel rodata"),  # a line after a deeper one: its parent is found above that
    ("    00100000-0010ffff : deep\n", ""),  # the deeper line gone
    ("10000000-1fffffff : System RAM\n", "10000000-1fffffff : System RAM\n  10000000-10ffffff : Kernel bss\n"),
])
def test_a_reparse_of_a_valid_edit_is_the_parse_of_the_whole_without_falling_back(edit):
    edited = DEEP.replace(*edit)
    assert iomem._reparse(DEEP, tuple(iomem.parse(DEEP)), edited, "/proc/iomem", True)[0] == tuple(iomem.parse(edited))


def test_a_view_after_a_hot_add_parses_only_the_new_lines(monkeypatch):
    """A negative control for the memo: the lines parsed one by one are those of the block added, not 8192."""
    from faketree import BLOCK, QEMU_GUEST, QEMU_HOT_ADD_BASE, hot_added
    before = hot_added(QEMU_GUEST, 8190, QEMU_HOT_ADD_BASE, stride=2 * BLOCK)
    iomem.view_of(before, "/reparse-test/iomem")
    parsed: list[str] = []
    real = iomem._resource
    monkeypatch.setattr(iomem, "_resource", lambda line, *rest: parsed.append(line) or real(line, *rest))
    grown = iomem.view_of(hot_added(QEMU_GUEST, 8191, QEMU_HOT_ADD_BASE, stride=2 * BLOCK), "/reparse-test/iomem")
    assert len(parsed) == 1 and parsed[0].endswith(": System RAM")
    assert grown.resources == tuple(iomem.parse(grown.text))
