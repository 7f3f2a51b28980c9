# SPDX-License-Identifier: GPL-2.0-only
"""Property tests: random valid nested /proc/iomem trees, and random garbage in every kernel file.

The RAM a header must cover is computed by an independent point sweep (expected_ram, in
tests/support/ram_reference.py), not with crashhpd's interval subtraction; what a kernel file
must read as, by reference parses of the format the kernel prints it in, written here.
"""

import io
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from faketree import make_tree, note_addr, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ram_reference import MIB, expected_ram

from crashhpd.elfcorehdr import validate
from crashhpd.elfcorehdr.layout import HeaderModel, plan, preset
from crashhpd.elfcorehdr.pack import build
from crashhpd.errors import ParseError, SnapshotError
from crashhpd.sysview.snapshot import Snapshot, read_snapshot

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

# --- what each file must read as, parsed here by the format the kernel prints it in, not by crashhpd ----------

U64_MAX = (1 << 64) - 1
MAX_CPU = 0xFFFD  # crashhpd's documented bound: a CPU past it could never get a note (0xfffe program headers)
NOT_READ = object()  # the text is not in the kernel's format: a reader must refuse it


def decimal(text: str) -> object:
    """`%u\\n`, `%d\\n`: digits, blanks around them."""
    match = re.fullmatch(r"\s*([0-9]+)\s*", text)
    return int(match[1]) if match and int(match[1]) <= U64_MAX else NOT_READ


def hexadecimal(word: str) -> int | None:
    """`%llx` or `%pa` (0x-prefixed); None where it is not one, or does not fit 64 bits."""
    match = re.fullmatch(r"(?:0[xX])?([0-9a-fA-F]+)", word)
    return int(match[1], 16) if match and int(match[1], 16) <= U64_MAX else None


def hex_file(text: str) -> object:
    value = hexadecimal(text.strip())
    return NOT_READ if value is None else value


def cpu_list(text: str) -> object:
    """`%*pbl`: `0-3,6`, or nothing at all for no CPU."""
    items = text.strip()
    if not items:
        return frozenset()
    if not re.fullmatch(r"[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*", items):
        return NOT_READ
    cpus: set[int] = set()
    for item in items.split(","):
        lo, _, hi = item.partition("-")
        first, last = int(lo), int(hi or lo)
        if first > last or last > MAX_CPU:
            return NOT_READ
        cpus |= set(range(first, last + 1))
    return frozenset(cpus)


def vmcoreinfo(text: str) -> object:
    """`%pa %x`: the note's address and its size."""
    words = text.split()
    values = [hexadecimal(word) for word in words]
    return NOT_READ if len(words) != 2 or None in values else tuple(values)


def range_lines(text: str) -> object:
    """`START-END` a line, each a hex number as above with blanks around it; blank lines say nothing."""
    out = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        first, dash, last = line.partition("-")
        start, end = hexadecimal(first.strip()), hexadecimal(last.strip())
        if not dash or start is None or end is None or start > end:
            return NOT_READ
        out.append((start, end))
    return tuple(out)


def symbols(text: str) -> object:
    """`ADDR TYPE NAME` lines: the first line naming each symbol counts; an address of zeros is hidden."""
    found: dict[str, int | None] = {}
    for line in text.split("\n"):
        match = re.fullmatch(r"([0-9a-fA-F]{1,16}) [A-Za-z] (.*)", line)
        if match and match[2] in ("_text", "_end", "_stext") and match[2] not in found:
            found[match[2]] = int(match[1], 16) or None
    return found.get("_text"), found.get("_end"), found.get("_stext")


CPU = "sys/devices/system/cpu"
# each file: what the snapshot makes of it, and the reference parse above it must equal
READS: dict[str, tuple[Callable[[Snapshot], object], Callable[[str], object]]] = {
    f"{CPU}/possible": (lambda s: s.cpus_possible, cpu_list),
    f"{CPU}/present": (lambda s: s.cpus_present, cpu_list),
    f"{CPU}/online": (lambda s: s.cpus_online, cpu_list),
    f"{CPU}/kernel_max": (lambda s: s.kernel_max, decimal),
    f"{CPU}/cpu0/crash_notes": (lambda s: s.crash_notes[0].addr, hex_file),
    f"{CPU}/cpu0/crash_notes_size": (lambda s: s.crash_notes[0].size, decimal),
    "sys/kernel/vmcoreinfo": (lambda s: s.vmcoreinfo, vmcoreinfo),
    "sys/kernel/kexec_crash_cma_ranges": (lambda s: s.crash_cma, range_lines),
    "sys/kernel/kexec_crash_loaded": (lambda s: s.kernel.crash_loaded, decimal),
    "sys/kernel/crash_elfcorehdr_size": (lambda s: s.kernel.elfcorehdr_size, decimal),
    f"{CPU}/crash_hotplug": (lambda s: s.kernel.crash_hotplug_cpu, decimal),
    "sys/devices/system/memory/crash_hotplug": (lambda s: s.kernel.crash_hotplug_memory, decimal),
    "proc/kallsyms": (lambda s: (s.boot.kernel_text, s.boot.kernel_end, s.boot.kernel_stext), symbols),
}


def test_the_reference_parses_refuse_what_the_kernel_never_prints():
    """Negative controls: a reference that took anything would make the property below vacuous."""
    assert (decimal(" 12\n"), hex_file("0x1f\n"), cpu_list("0-2,5\n"), vmcoreinfo("0x10 1024\n")) == \
        (12, 0x1F, frozenset({0, 1, 2, 5}), (0x10, 0x1024))
    assert range_lines("10-1f\n\n 0x20 - 2f\n") == ((0x10, 0x1F), (0x20, 0x2F))
    assert symbols("0 T _text\nffffffff81000000 T _text\nffffffff84a00000 B _end\n") == (None, 0xFFFFFFFF84A00000,
                                                                                           None)
    refused = [decimal("1 2"), decimal("+1"), decimal("0x1"), hex_file("1_0"), hex_file(f"{U64_MAX + 1:x}"),
               cpu_list("0 - 3"), cpu_list("3-1"), cpu_list("0,"), cpu_list(f"0-{MAX_CPU + 1}"), vmcoreinfo("10"),
               vmcoreinfo("10 20 30"), range_lines("1f-10"), range_lines("1_0-1f"), range_lines("10-")]
    assert all(value is NOT_READ for value in refused)


@pytest.mark.parametrize("text", ["1_0-20\n", "+10-20\n"])
def test_cma_ranges_take_hex_digits_only(tmp_path, text):
    root = make_tree(tmp_path, "00100000-3fffffff : System RAM\n", extra={"sys/kernel/kexec_crash_cma_ranges": text})
    with pytest.raises(ParseError):
        read_snapshot(str(root))


@PROPERTY
@given(rel=st.sampled_from(KERNEL_FILES), text=file_texts)
def test_garbage_in_any_kernel_file_is_refused_naming_the_file_or_read_as_the_kernels_format_reads(rel, text):
    """Refused, naming the file, exactly when the text is not in the kernel's format; otherwise read as that
    format reads, and nothing else in the snapshot changes."""
    with tempfile.TemporaryDirectory() as tmp:
        root = make_tree(Path(tmp), "00100000-3fffffff : System RAM\n")
        before = read_snapshot(str(root))
        write(root, rel, text)
        want = READS[rel][1](text)
        try:
            after = read_snapshot(str(root))
        except ParseError as err:
            assert want is NOT_READ
            assert err.path == f"{root}/{rel}"
            assert str(err).startswith(f"{root}/{rel}:{err.lineno}: ")
            assert 1 <= err.lineno <= max(1, len(text.splitlines())) and err.text in text
            return
        except SnapshotError as err:  # the one file whose well-formed text a snapshot still refuses
            assert (rel, want) == (f"{CPU}/online", frozenset())
            assert str(err).startswith(f"{root}/{rel}")
            return
    assert READS[rel][0](after) == want
    assert all(read(after) == read(before) for other, (read, _) in READS.items() if other != rel)
    assert (after.ram, after.resources, after.crash_kernel) == (before.ram, before.resources, before.crash_kernel)
