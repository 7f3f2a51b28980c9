# SPDX-License-Identifier: GPL-2.0-only
"""Property tests: random valid nested /proc/iomem trees, and random garbage in every kernel file.

The RAM a header must cover is computed by an independent point sweep (expected_ram, in
tests/support/ram_reference.py), not with crashhpd's interval subtraction.
"""

import io
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from faketree import make_tree, note_addr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ram_reference import MIB, expected_ram

from crashhpd.elfcorehdr import validate
from crashhpd.elfcorehdr.layout import HeaderModel, plan, preset
from crashhpd.elfcorehdr.pack import build
from crashhpd.errors import ParseError, SnapshotError
from crashhpd.sysview.snapshot import read_snapshot

SPACE_END = (1 << 40) - 1  # 1 TiB of physical address space is plenty to nest in
RAM_NAMES = ("System RAM", "System RAM (kmem)", "System RAM (virtio_mem)")
TOP_NAMES = RAM_NAMES + ("Reserved", "PCI Bus 0000:00", "Persistent Memory", "dax0.0", "virtio0", "RAM buffer")
IN_RAM_NAMES = RAM_NAMES + ("Crash kernel", "Kernel code", "Kernel data", "Reserved")
LEAVES = ("Crash kernel",)
MAX_DEPTH = 3
PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True, slots=True)
class Line:
    start: int
    end: int
    name: str
    depth: int
    under_ram: bool  # an ancestor is a System RAM line, so this line adds no RAM of its own

    @property
    def text(self) -> str:
        return f"{'  ' * self.depth}{self.start:08x}-{self.end:08x} : {self.name}"

    @property
    def taken_ram(self) -> bool:
        return self.name.startswith("System RAM") and not self.under_ram


def addresses(lo: int, hi: int) -> st.SearchStrategy[int]:
    """Anywhere in [lo, hi], often right at the 1 MiB line the kernel layout cuts at."""
    near_mib = [v for v in (MIB - 2, MIB - 1, MIB, MIB + 1) if lo <= v <= hi]
    small = st.integers(lo, min(hi, lo + 4 * MIB))
    return st.one_of(st.integers(lo, hi), small, st.sampled_from(near_mib)) if near_mib else st.one_of(
        st.integers(lo, hi), small)


@st.composite
def children(draw: st.DrawFn, lo: int, hi: int, depth: int, under_ram: bool) -> list[Line]:
    """Ascending, disjoint lines inside [lo, hi], often adjacent, each with its own nested children."""
    if depth > MAX_DEPTH:
        return []
    bounds = sorted(set(draw(st.lists(addresses(lo, hi + 1), max_size=9))))
    pieces = [(start, following - 1) for start, following in zip(bounds, bounds[1:])]
    lines: list[Line] = []
    for start, end in (piece for piece in pieces if draw(st.booleans())):
        name = draw(st.sampled_from(IN_RAM_NAMES if under_ram else TOP_NAMES))
        lines.append(Line(start, end, name, depth, under_ram))
        if name not in LEAVES:
            lines += draw(children(start, end, depth + 1, under_ram or name.startswith("System RAM")))
    return lines


iomem_trees = children(0, SPACE_END, 0, False)
cma_ranges = st.lists(st.tuples(addresses(0, SPACE_END), addresses(0, SPACE_END)).map(sorted).map(tuple), max_size=3)


def model_segments(model: HeaderModel) -> list[tuple[str, int, int, int, int, int, int, int]]:
    """The program headers a model stands for, in the order and encoding the spec fixes."""
    notes = [(a, s) for _cpu, a, s in model.cpu_notes] + ([model.vmcoreinfo] if model.vmcoreinfo else [])
    segs = [("PT_NOTE", 0, a, 0, a, s, s, 0) for a, s in notes]
    if model.image:
        paddr, vaddr, size = model.image
        segs.append(("PT_LOAD", 7, paddr, vaddr, paddr, size, size, 0))
    segs += [("PT_LOAD", 7, s, s + model.page_offset, s, e - s + 1, e - s + 1, 0) for s, e in model.ram]
    return segs


def pyelftools_segments(data: bytes) -> list[tuple[str, int, int, int, int, int, int, int]]:
    elf = ELFFile(io.BytesIO(data))
    fields = ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_align")
    return [tuple(seg[f] for f in fields) for seg in elf.iter_segments()]


@PROPERTY
@given(lines=iomem_trees, cma=cma_ranges, ncpus=st.integers(1, 8))
def test_random_nested_layout_gives_a_valid_header_covering_exactly_the_dumpable_ram(lines, cma, ncpus):
    """The kernel layout. The kexec-tools layout is what kexec-tools builds, which on such trees is not
    always this (nested RAM twice, CMA dumped, its exclude_region() cuts): the real binary is its
    reference, test_real_kexec_tools.py."""
    iomem = "".join(line.text + "\n" for line in lines)
    extra = {"sys/kernel/kexec_crash_cma_ranges": "".join(f"{s:x}-{e:x}\n" for s, e in cma)}
    with tempfile.TemporaryDirectory() as tmp:
        root = make_tree(Path(tmp), iomem, possible=f"0-{ncpus - 1}", extra=extra)
        if not any(line.taken_ram for line in lines):  # nothing to dump: refused before any header is built
            with pytest.raises(SnapshotError, match="no System RAM listed"):
                read_snapshot(str(root))
            return
        snapshot = read_snapshot(str(root))
    # plan and build apart, not build_valid: the model is compared with the bytes below, and the checks
    # run on their own so that a failure names the rule, not only build_valid's refusal
    model = plan(snapshot, preset("kernel"))
    data = build(model)

    holes = [(line.start, line.end) for line in lines if line.name == "Crash kernel"] + cma + [(0, MIB - 1)]
    want = expected_ram([(line.start, line.end) for line in lines if line.taken_ram], holes)
    if not want:  # all the RAM is the crash kernel's, CMA or low memory: such a header is never applied
        assert "no RAM PT_LOAD: a dump would save no memory" in validate.check(validate.parse(data), snapshot)
        return
    assert validate.check(validate.parse(data), snapshot) == []
    notes = [(note_addr(cpu), 368) for cpu in range(ncpus)] + [(0x100C66000, 4132)]
    code = [line.start for line in lines if line.name == "Kernel code"][:1]
    segments = pyelftools_segments(data)
    assert segments == (
        [("PT_NOTE", 0, a, 0, a, size, size, 0) for a, size in notes]
        + [("PT_LOAD", 7, c, 0xFFFFFFFF81000000, c, 0x3A00000, 0x3A00000, 0) for c in code]
        + [("PT_LOAD", 7, s, s + 0xFFFF888000000000, s, e - s + 1, e - s + 1, 0) for s, e in want]
    )
    assert segments == model_segments(model)
    assert len(data) == -(-(64 + 56 * len(segments)) // 4096) * 4096
    assert not any(data[64 + 56 * len(segments):])


def test_expected_ram_reference_on_a_worked_example():
    """The reference itself, on numbers checked by hand: a hole splits, another trims, a third misses."""
    ram = [(0x1000, 0x9FFFF), (0x100000, 0xBFFFFFFF)]
    holes = [(0, MIB - 1), (0x2A000000, 0x340FFFFF), (0xB0000000, 0xCFFFFFFF), (0xF0000000, 0xF0000FFF)]
    assert expected_ram(ram, holes) == [(0x100000, 0x29FFFFFF), (0x34100000, 0xAFFFFFFF)]
    assert expected_ram([(0x10, 0x1F), (0x20, 0x2F)], []) == [(0x10, 0x1F), (0x20, 0x2F)]  # adjacent lines stay apart


WELL_FORMED = re.compile(r" *[0-9a-fA-F]+-[0-9a-fA-F]+ : .*")  # the shape of an iomem line
printable_lines = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=60)
shapeless = printable_lines.filter(lambda t: t.strip() != "" and not WELL_FORMED.fullmatch(t))
hex_numbers = st.integers(0, SPACE_END).map(lambda v: f"{v:x}")
odd_indent = st.tuples(st.sampled_from([" ", "   "]), hex_numbers, st.sampled_from(TOP_NAMES)).map(
    lambda t: f"{t[0]}{t[1]}-{t[1]} : {t[2]}")
reversed_range = st.tuples(st.integers(1, SPACE_END), st.sampled_from(TOP_NAMES)).map(
    lambda t: f"{t[0]:x}-{t[0] - 1:x} : {t[1]}")
empty_name = st.tuples(hex_numbers, st.sampled_from(["", " ", "   "])).map(lambda t: f"{t[0]}-{t[0]} : {t[1]}")
garbage_lines = st.one_of(shapeless, odd_indent, reversed_range, empty_name)


@PROPERTY
@given(lines=iomem_trees, garbage=garbage_lines, data=st.data())
def test_garbage_iomem_line_is_a_parse_error_naming_file_line_and_text(lines, garbage, data):
    texts = [line.text for line in lines]
    index = data.draw(st.integers(0, len(texts)))
    texts.insert(index, garbage)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_tree(Path(tmp), "".join(t + "\n" for t in texts))
        with pytest.raises(ParseError) as info:
            read_snapshot(str(root))
    err = info.value
    path = f"{root}/proc/iomem"
    assert (err.path, err.lineno, err.text) == (path, index + 1, garbage)
    assert str(err).startswith(f"{path}:{index + 1}: ") and str(err).endswith(repr(garbage))


KERNEL_FILES = [
    "sys/devices/system/cpu/possible", "sys/devices/system/cpu/present", "sys/devices/system/cpu/online",
    "sys/devices/system/cpu/kernel_max", "sys/devices/system/cpu/cpu0/crash_notes",
    "sys/devices/system/cpu/cpu0/crash_notes_size", "sys/kernel/vmcoreinfo", "sys/kernel/kexec_crash_cma_ranges",
    "sys/kernel/kexec_crash_loaded", "sys/kernel/crash_elfcorehdr_size", "sys/devices/system/cpu/crash_hotplug",
    "sys/devices/system/memory/crash_hotplug", "proc/kallsyms",
]
# numbers, separators and anything printable; CPU numbers of at most 5 digits, as NR_CPUS caps them at 8192
file_texts = st.text(st.one_of(st.sampled_from("0123456789abcdefx-, \n\t"), st.characters(min_codepoint=0x20,
                                                                                          max_codepoint=0x7E)),
                     max_size=40).filter(lambda t: not re.search(r"\d{6}", t))


@PROPERTY
@given(rel=st.sampled_from(KERNEL_FILES), text=file_texts)
def test_garbage_in_any_kernel_file_is_read_or_refused_naming_the_file(rel, text):
    with tempfile.TemporaryDirectory() as tmp:
        root = make_tree(Path(tmp), "00100000-3fffffff : System RAM\n", extra={rel: text})
        try:
            read_snapshot(str(root))
        except ParseError as err:
            assert err.path == f"{root}/{rel}"
            assert str(err).startswith(f"{root}/{rel}:{err.lineno}: ")
            assert 1 <= err.lineno <= max(1, len(text.splitlines())) and err.text in text
        except SnapshotError as err:
            assert str(err).startswith(f"{root}/{rel}")
