# SPDX-License-Identifier: GPL-2.0-only
"""The snapshot reader on real files: optional files, malformed values, and what each value means."""

import os

import pytest
from faketree import kcore, make_tree, write

from crashhpd.elfcorehdr.layout import plan, preset
from crashhpd.elfcorehdr.pack import build
from crashhpd.errors import ParseError, SnapshotError
from crashhpd.sysview.snapshot import CpuNote, read_snapshot

IOMEM = """\
00001000-0009fbff : System RAM
00100000-bffdffff : System RAM
  01000000-01ffffff : Kernel code
  02a00000-02dfffff : Kernel bss
  2a000000-340fffff : Crash kernel
100000000-43fffffff : System RAM
"""
CPU = "sys/devices/system/cpu"


def test_only_iomem_present_gives_none_and_empty_everywhere_and_still_builds(tmp_path):
    write(tmp_path, "proc/iomem", IOMEM)
    snap = read_snapshot(str(tmp_path))
    assert snap.ram == ((0x1000, 0x9FBFF), (0x100000, 0xBFFDFFFF), (0x100000000, 0x43FFFFFFF))
    assert snap.crash_kernel == ((0x2A000000, 0x340FFFFF),)
    assert (snap.kernel_code, snap.kernel_bss) == ((0x1000000, 0x1FFFFFF), (0x2A00000, 0x2DFFFFF))
    assert (snap.cpus_possible, snap.cpus_present, snap.cpus_online) == (None, None, None)
    assert snap.crash_notes == {}
    assert snap.vmcoreinfo is None
    assert (snap.boot.kernel_text, snap.boot.kernel_end, snap.boot.direct_map_base) == (None, None, None)
    kernel = snap.kernel
    assert (snap.kernel_max, kernel.crash_loaded, kernel.crash_size, kernel.elfcorehdr_size) == (None,) * 4
    assert snap.crash_cma == ()
    assert (snap.kernel.crash_hotplug_cpu, snap.kernel.crash_hotplug_memory, snap.kernel.updates_header) == \
        (None, None, False)
    model = plan(snap, preset("kernel"))  # the plan itself is checked: a tree with no CPU notes at all
    assert (model.cpu_notes, model.vmcoreinfo, model.image) == ((), None, None)
    assert model.ram == ((0x100000, 0x29FFFFFF), (0x34100000, 0xBFFDFFFF), (0x100000000, 0x43FFFFFFF))
    assert len(build(model)) == 4096


@pytest.mark.parametrize(
    ("rel", "field", "expected"),
    [
        ("sys/kernel/vmcoreinfo", "vmcoreinfo", None),
        (f"{CPU}/possible", "cpus_possible", None),
        (f"{CPU}/present", "cpus_present", None),
        (f"{CPU}/online", "cpus_online", None),
        (f"{CPU}/kernel_max", "kernel_max", None),
        (f"{CPU}/cpu2/crash_notes", "crash_notes", {0: CpuNote(0x13FC17000, 368), 1: CpuNote(0x13FC18000, 368),
                                                     3: CpuNote(0x13FC1A000, 368)}),
        (f"{CPU}/cpu2/crash_notes_size", "crash_notes", {0: CpuNote(0x13FC17000, 368), 1: CpuNote(0x13FC18000, 368),
                                                          2: CpuNote(0x13FC19000, None), 3: CpuNote(0x13FC1A000, 368)}),
        (f"{CPU}/cpu2", "crash_notes", {0: CpuNote(0x13FC17000, 368), 1: CpuNote(0x13FC18000, 368),
                                        3: CpuNote(0x13FC1A000, 368)}),
        (CPU, "crash_notes", {}),
    ],
)
def test_each_missing_optional_file_is_none_or_empty(tmp_path, rel, field, expected):
    root = make_tree(tmp_path, IOMEM)
    path = root / rel
    if path.is_dir():
        for dirpath, _dirs, files in os.walk(path, topdown=False):
            for name in files:
                os.unlink(os.path.join(dirpath, name))
            os.rmdir(dirpath)
    else:
        path.unlink()
    assert getattr(read_snapshot(str(root)), field) == expected


def test_missing_iomem_is_a_snapshot_error_naming_it(tmp_path):
    with pytest.raises(SnapshotError, match=rf"^{tmp_path}/proc/iomem: missing"):
        read_snapshot(str(tmp_path))


def test_a_kernel_file_that_cannot_be_read_is_a_snapshot_error_naming_it(tmp_path):
    root = make_tree(tmp_path, IOMEM, vmcoreinfo=None)
    (root / "sys/kernel/vmcoreinfo").mkdir(parents=True)
    with pytest.raises(SnapshotError, match=rf"^{root}/sys/kernel/vmcoreinfo: Is a directory$"):
        read_snapshot(str(root))


@pytest.mark.parametrize(
    ("rel", "text", "lineno", "bad"),
    [
        (f"{CPU}/possible", "0-3,x\n", 1, "0-3,x"),
        (f"{CPU}/online", "3-1\n", 1, "3-1"),
        (f"{CPU}/kernel_max", "lots\n", 1, "lots"),
        (f"{CPU}/cpu1/crash_notes", "13fc18000 junk\n", 1, "13fc18000 junk"),
        (f"{CPU}/cpu1/crash_notes_size", "0x170\n", 1, "0x170"),
        ("sys/kernel/vmcoreinfo", "0x100c66000\n", 1, "0x100c66000"),
        ("sys/kernel/vmcoreinfo", "0x100c66000 zz\n", 1, "zz"),
        ("sys/kernel/kexec_crash_cma_ranges", "80000000-8fffffff\n90000000\n", 2, "90000000"),
        ("sys/kernel/kexec_crash_cma_ranges", "9fffffff-90000000\n", 1, "9fffffff-90000000"),
        ("sys/kernel/kexec_crash_loaded", "yes\n", 1, "yes"),
        (f"{CPU}/crash_hotplug", "on\n", 1, "on"),
        ("sys/devices/system/memory/crash_hotplug", "\n", 1, ""),
    ],
)
def test_malformed_value_names_file_line_and_text(tmp_path, rel, text, lineno, bad):
    root = make_tree(tmp_path, IOMEM, extra={rel: text})
    with pytest.raises(ParseError) as info:
        read_snapshot(str(root))
    err = info.value
    assert (err.path, err.lineno, err.text) == (f"{root}/{rel}", lineno, bad)
    assert str(err).startswith(f"{root}/{rel}:{lineno}: ") and repr(bad) in str(err)


def test_vmcoreinfo_address_and_size_are_both_hex(tmp_path):
    root = make_tree(tmp_path, IOMEM, vmcoreinfo="0x0000000100c66000 1024\n")
    assert read_snapshot(str(root)).vmcoreinfo == (0x100C66000, 4132)


def test_crash_notes_address_is_hex_and_size_decimal(tmp_path):
    root = make_tree(tmp_path, IOMEM, possible="0", extra={f"{CPU}/cpu0/crash_notes": "13fc17000\n",
                                                         f"{CPU}/cpu0/crash_notes_size": "368\n"})
    assert read_snapshot(str(root)).crash_notes == {0: CpuNote(0x13FC17000, 368)}


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0-3,6,8-11\n", {0, 1, 2, 3, 6, 8, 9, 10, 11}), ("0\n", {0}), ("5-5\n", {5}), ("\n", set()),
     ("0-1,3", {0, 1, 3})],
)
def test_cpu_lists(tmp_path, text, cpus):
    root = make_tree(tmp_path, IOMEM, extra={f"{CPU}/possible": text})
    snap = read_snapshot(str(root))
    assert snap.cpus_possible == frozenset(cpus)
    assert snap.cpu_set("possible") == frozenset(cpus)


def test_cpu_set_falls_back_to_cpus_with_notes(tmp_path):
    root = make_tree(tmp_path, IOMEM, possible="0-3", notes={1: (0x5000, 368), 2: (0x6000, 368)})
    (root / CPU / "online").unlink()
    snap = read_snapshot(str(root))
    assert snap.cpu_set("online") == frozenset({1, 2})
    assert snap.cpu_set("present") == frozenset({0, 1, 2, 3})


def test_a_cpus_note_is_read_once_a_boot_a_new_cpu_is_read_and_a_gone_one_is_dropped(tmp_path):
    """show_crash_notes() prints a per-CPU area allocated once at boot: the daemon's BootConstants keep each CPU's
    note from the first snapshot that lists it. A value rewritten after that is not read again (on a real kernel
    it never changes); a CPU directory that appears is read, one that goes is no longer listed."""
    from crashhpd.sysview.snapshot import read_boot_constants
    root = make_tree(tmp_path, IOMEM, possible="0-2", notes={0: (0x5000, 368), 1: (0x6000, 368)})
    boot = read_boot_constants(str(root))
    assert read_snapshot(str(root), boot).crash_notes == {0: CpuNote(0x5000, 368), 1: CpuNote(0x6000, 368)}
    write(root, f"{CPU}/cpu0/crash_notes", "9000\n")
    write(root, f"{CPU}/cpu2/crash_notes", "7000\n")
    write(root, f"{CPU}/cpu2/crash_notes_size", "368\n")
    for name in ("crash_notes", "crash_notes_size"):
        (root / CPU / "cpu1" / name).unlink()
    (root / CPU / "cpu1").rmdir()
    assert read_snapshot(str(root), boot).crash_notes == {0: CpuNote(0x5000, 368), 2: CpuNote(0x7000, 368)}
    assert read_snapshot(str(root)).crash_notes == {0: CpuNote(0x9000, 368), 2: CpuNote(0x7000, 368)}  # no boot


def test_directories_that_are_not_cpus_are_ignored(tmp_path):
    root = make_tree(tmp_path, IOMEM, possible="0", extra={f"{CPU}/cpufreq/crash_notes": "1000\n",
                                                         f"{CPU}/cpuidle/crash_notes": "2000\n"})
    assert set(read_snapshot(str(root)).crash_notes) == {0}


def test_crash_cma_ranges_are_cut_out_of_ram_by_the_kernel_layout_only(tmp_path):
    """kexec-tools never reads kexec_crash_cma_ranges: its header dumps them (the real binary agrees)."""
    cma = "80000000-8fffffff\n200000000-2ffffffff\n"
    root = make_tree(tmp_path, IOMEM, extra={"sys/kernel/kexec_crash_cma_ranges": cma})
    snap = read_snapshot(str(root))
    assert snap.crash_cma == ((0x80000000, 0x8FFFFFFF), (0x200000000, 0x2FFFFFFFF))
    assert list(plan(snap, preset("kernel")).ram) == [
        (0x100000, 0x29FFFFFF), (0x34100000, 0x7FFFFFFF), (0x90000000, 0xBFFDFFFF),
        (0x100000000, 0x1FFFFFFFF), (0x300000000, 0x43FFFFFFF),
    ]
    assert list(plan(snap, preset("kexec-tools")).ram) == [
        (0x1000, 0x9FBFF), (0x100000, 0x29FFFFFF), (0x34100000, 0xBFFDFFFF), (0x100000000, 0x43FFFFFFF),
    ]


@pytest.mark.parametrize(
    ("cpu", "memory", "updates"),
    [("1", "1", True), ("0", "1", True), ("1", "0", True), ("0", "0", False)],
)
def test_crash_hotplug_attributes(tmp_path, cpu, memory, updates):
    root = make_tree(tmp_path, IOMEM, extra={f"{CPU}/crash_hotplug": cpu + "\n",
                                           "sys/devices/system/memory/crash_hotplug": memory + "\n"})
    snap = read_snapshot(str(root))
    assert (snap.kernel.crash_hotplug_cpu, snap.kernel.crash_hotplug_memory) == (int(cpu), int(memory))
    assert snap.kernel.updates_header is updates


def test_kexec_attributes(tmp_path):
    root = make_tree(tmp_path, IOMEM, extra={"sys/kernel/kexec_crash_loaded": "1\n",
                                           "sys/kernel/kexec_crash_size": "268435456\n",
                                           "sys/kernel/crash_elfcorehdr_size": "917616\n"})
    snap = read_snapshot(str(root))
    assert (snap.kernel.crash_loaded, snap.kernel.crash_size, snap.kernel.elfcorehdr_size) == (1, 268435456, 917616)
    assert snap.kernel_max == 63


@pytest.mark.parametrize(
    ("kallsyms", "text", "end"),
    [
        ("ffffffff9a000000 T _text\nffffffff9a001000 T _stext\nffffffff9da00000 B _end\n",
         0xFFFFFFFF9A000000, 0xFFFFFFFF9DA00000),
        ("ffffffff9a000000 T _text\nffffffff9a000000 T _text_end\n", 0xFFFFFFFF9A000000, None),
        ("0000000000000000 T _text\n0000000000000000 B _end\n", None, None),  # kptr_restrict
        ("ffffffffc0a01000 t _end\t[some_module]\n", None, None),  # a module's symbol is not the kernel's
    ],
)
def test_kallsyms_text_and_end(tmp_path, kallsyms, text, end):
    root = make_tree(tmp_path, IOMEM, kallsyms=kallsyms)
    boot = read_snapshot(str(root)).boot
    assert (boot.kernel_text, boot.kernel_end) == (text, end)
    assert boot.kernel_stext == (0xFFFFFFFF9A001000 if "_stext" in kallsyms else None)


def test_kcore_gives_the_direct_map_base_and_the_kernel_map_loads_in_file_order(tmp_path):
    root = make_tree(tmp_path, IOMEM)
    loads = [(0xFFFFFFFF9A000000, 0x1000000, 0x3A00000), (0xFFFF9F0000100000, 0x100000, 0xBFF00000),
             (0xFFFFFFFFC0000000, 0, 0x1000000), (0xFFFF9F0100000000, 0x100000000, 0x340000000)]
    (root / "proc/kcore").write_bytes(kcore(loads))
    boot = read_snapshot(str(root)).boot
    assert boot.direct_map_base == 0xFFFF9F0000000000
    assert boot.kcore_kernel_map == ((0xFFFFFFFF9A000000, 0x3A00000), (0xFFFFFFFFC0000000, 0x1000000))


def test_every_iomem_line_is_kept_in_file_order(tmp_path):
    snap = read_snapshot(str(make_tree(tmp_path, IOMEM)))
    assert [(r.start, r.end, r.name, r.depth) for r in snap.resources] == [
        (0x1000, 0x9FBFF, "System RAM", 0), (0x100000, 0xBFFDFFFF, "System RAM", 0),
        (0x1000000, 0x1FFFFFF, "Kernel code", 1), (0x2A00000, 0x2DFFFFF, "Kernel bss", 1),
        (0x2A000000, 0x340FFFFF, "Crash kernel", 1), (0x100000000, 0x43FFFFFFF, "System RAM", 0)]


def test_boot_constants_passed_in_are_not_re_read(tmp_path):
    root = make_tree(tmp_path, IOMEM)
    boot = read_snapshot(str(root)).boot
    (root / "proc/kallsyms").unlink()
    assert read_snapshot(str(root), boot).boot == boot


@pytest.mark.parametrize(
    ("rel", "text"),
    [(f"{CPU}/cpu0/crash_notes", "-1000\n"), (f"{CPU}/cpu0/crash_notes_size", "-368\n"),
     ("sys/kernel/vmcoreinfo", "-100c66000 1024\n"), (f"{CPU}/cpu0/crash_notes", "13fc_17000\n"),
     (f"{CPU}/possible", "0-1_0\n")],
    ids=["negative-notes", "negative-size", "negative-vmcoreinfo", "underscore-notes", "underscore-cpulist"],
)
def test_signed_or_separated_numbers_are_parse_errors(tmp_path, rel, text):
    root = make_tree(tmp_path, IOMEM, extra={rel: text})
    with pytest.raises(ParseError):
        read_snapshot(str(root))
