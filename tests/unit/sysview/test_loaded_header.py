# SPDX-License-Identifier: GPL-2.0-only
"""Reading the elfcorehdr the kernel holds, on fake kernels: kallsyms, BTF and a /proc/kcore under a root."""

import errno
import os
from pathlib import Path

import pytest
from fakebtf import BtfBuilder, kimage_btf
from fakekcore import CRASH_BASE, HEADER_MEM, RAM, RAM_LOW, CrashKernel, debian_layout, segments
from faketree import make_tree, write
from repo_paths import IOMEM_FIXTURES
from test_boot_params import boot_params

from crashhpd.abi.elf import EHDR_SIZE, PHDR_SIZE
from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.layout import preset
from crashhpd.elfcorehdr.pack import capacity
from crashhpd.elfcorehdr.validate import check, parse
from crashhpd.sysview.boot_params import CommandLine
from crashhpd.sysview.btf import Btf, BtfError
from crashhpd.sysview.kallsyms import find_symbols
from crashhpd.sysview.loaded_header import PAUSE, LoadedHeader, LoadedHeaderReader, kimage_layout
from crashhpd.sysview.snapshot import read_snapshot

IOMEM = (IOMEM_FIXTURES / "qemu-kvm-crashkernel.txt").read_text()  # crash kernel at 0x2a000000
MEMSZ = (capacity(64) + 4095) // 4096 * 4096  # the seed patch's segment, 64 CPUs: 456 KiB
KASLR_TEXT = 0xFFFFFFFFA2A00000
KASLR_PAGE_OFFSET = 0xFFFF9D5C40000000


def built(tmp: Path, possible: str) -> bytes:
    """A header as crashhpd builds it (kernel layout) for a fake system with CPUs `possible`."""
    snap = read_snapshot(str(make_tree(tmp, IOMEM, possible=possible)))
    return build_valid(snap, preset("kernel")).data


@pytest.fixture(scope="module")
def header(tmp_path_factory) -> bytes:
    return built(tmp_path_factory.mktemp("system"), "0-3")


@pytest.fixture(scope="module")
def grown(tmp_path_factory) -> bytes:
    """The same system with two more CPUs: what a rewrite puts in place."""
    return built(tmp_path_factory.mktemp("grown"), "0-5")


def table_end(data: bytes) -> int:
    return EHDR_SIZE + PHDR_SIZE * len(parse(data).segments)


class Sleeps:
    """The reader's pause, recorded; `then` runs at each, as if the kernel acted meanwhile."""

    def __init__(self, then=None) -> None:
        self.calls: list[float] = []
        self.then = then

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self.then is not None:
            self.then(len(self.calls))


def read(root: Path, **kw) -> LoadedHeader:
    kw.setdefault("sleep", Sleeps())
    return LoadedHeaderReader(str(root), **kw).read()


def unreadable(result: LoadedHeader, reason: str) -> None:
    assert not result.readable and result.header == b"" and result.segment == b"" and result.mem is None
    assert reason in (result.reason or ""), result.reason


# --- the happy path ------------------------------------------------------------------------------


def test_reads_exactly_the_header_the_kernel_holds_with_its_segment(tmp_path, header):
    CrashKernel(tmp_path).install(header, MEMSZ)
    sleeps = Sleeps()
    result = read(tmp_path, sleep=sleeps)
    assert result.readable, result.reason
    assert result.reason is None and result.attempts == 1 and sleeps.calls == []
    assert result.header == header[:table_end(header)]
    assert result.segment == header + bytes(MEMSZ - len(header))
    assert (result.mem, result.memsz, result.bufsz) == (HEADER_MEM, MEMSZ, len(header))
    assert check(parse(result.segment)) == []
    assert "header=" not in repr(result) and "segment=" not in repr(result)


def test_a_reread_of_the_same_header_gives_the_last_objects_and_a_changed_one_its_new_bytes(tmp_path, header, grown):
    """The update compares the kernel's header by identity and hashes it once: a read that finds the same bytes
    returns the same LoadedHeader; the kernel's rewrite is read anew."""
    kernel = CrashKernel(tmp_path).install(header, MEMSZ)
    reader = LoadedHeaderReader(str(tmp_path), sleep=Sleeps())
    first = reader.read()
    assert first.readable and reader.read() is first
    kernel.set_header(grown)
    again = reader.read()
    assert again is not first and again.header == grown[:table_end(grown)]
    kernel.set_header(header)
    assert reader.read().header == header[:table_end(header)]


def test_under_kaslr_the_moved_text_and_direct_map_are_followed(tmp_path, header):
    CrashKernel(tmp_path, text=KASLR_TEXT, page_offset=KASLR_PAGE_OFFSET).install(header, MEMSZ)
    result = read(tmp_path)
    assert result.readable, result.reason
    assert result.header == header[:table_end(header)]


def test_without_page_offset_base_the_direct_map_is_the_lowest_kcore_load(tmp_path, header):
    CrashKernel(tmp_path, text=KASLR_TEXT, page_offset=KASLR_PAGE_OFFSET,
                list_page_offset_base=False).install(header, MEMSZ)
    result = read(tmp_path)
    assert result.readable, result.reason
    assert result.header == header[:table_end(header)]


def test_the_direct_map_base_from_kcore_skips_loads_without_a_physical_address(tmp_path, header):
    kernel = CrashKernel(tmp_path, text=KASLR_TEXT, page_offset=KASLR_PAGE_OFFSET, list_page_offset_base=False)
    kernel.install(header, MEMSZ)
    not_ram = (0xFF11000000000000, (1 << 64) - 1, 0x1000)  # below the direct map, but no RAM
    kernel.kcore.loads.insert(1, not_ram)
    kernel.fill(header, MEMSZ)
    assert read(tmp_path).readable
    # a kcore older than Linux 4.11 leaves p_paddr 0: the base is the lowest load rounded down to 1 GiB
    kernel.kcore.loads = [(vaddr, 0, size) for vaddr, _paddr, size in kernel.kcore.loads if vaddr != not_ram[0]]
    kernel.fill(header, MEMSZ)
    assert read(tmp_path).readable


def test_a_segment_across_two_kcore_loads_is_read_whole(tmp_path, header):
    split = HEADER_MEM + 0x2000
    CrashKernel(tmp_path, ram=(RAM_LOW, (RAM[0], split - 1), (split, RAM[1]))).install(header, MEMSZ)
    result = read(tmp_path)
    assert result.readable, result.reason
    assert result.segment == header + bytes(MEMSZ - len(header))


def test_the_kexec_tools_layout_is_trimmed_to_its_program_headers(tmp_path, tmp_path_factory):
    snap = read_snapshot(str(make_tree(tmp_path_factory.mktemp("kt"), IOMEM)))
    data = build_valid(snap, preset("kexec-tools")).data
    padded = data + bytes(2048)  # kexec-tools sizes its buffer for more ranges than it writes
    CrashKernel(tmp_path).install(padded, 16 << 10)
    result = read(tmp_path)
    assert result.readable, result.reason
    assert result.header == data[:table_end(data)] and (result.memsz, result.bufsz) == (16 << 10, len(padded))


# --- an image in flux ----------------------------------------------------------------------------


def test_a_null_pointer_is_read_again_until_the_load_has_set_it(tmp_path, header):
    kernel = CrashKernel(tmp_path).install(header, MEMSZ)
    kernel.set_pointer(0)
    sleeps = Sleeps(then=lambda n: kernel.set_pointer(kernel.kimage))
    result = read(tmp_path, sleep=sleeps)
    assert result.readable, result.reason
    assert result.attempts == 2 and sleeps.calls == [PAUSE]
    assert result.header == header[:table_end(header)]


def test_the_kernels_own_rewrite_is_waited_for_and_the_new_header_read(tmp_path, header, grown):
    kernel = CrashKernel(tmp_path).install(header, MEMSZ)
    kernel.set_pointer(0)  # crash_handle_hotplug_event(): NULL while the new header is copied in

    def rewritten(n: int) -> None:
        if n == 2:
            kernel.set_header(grown)
            kernel.set_pointer(kernel.kimage)

    result = read(tmp_path, sleep=Sleeps(then=rewritten))
    assert result.readable and result.attempts == 3
    assert result.header == grown[:table_end(grown)]


class ChangingPread:
    """os.pread that lets the kernel rewrite the header right after some reads of the segment."""

    def __init__(self, kernel: CrashKernel, headers: list[bytes], every: bool = False) -> None:
        self.kernel, self.headers, self.every = kernel, headers, every
        self.segment_reads = 0

    def __call__(self, fd: int, length: int, offset: int) -> bytes:
        data = os.pread(fd, length, offset)
        if length == MEMSZ:
            self.segment_reads += 1
            if self.every or self.segment_reads == 1:
                self.kernel.set_header(self.headers[self.segment_reads % len(self.headers)])
        return data


def test_bytes_that_change_between_two_reads_are_read_again(tmp_path, header, grown):
    kernel = CrashKernel(tmp_path).install(header, MEMSZ)
    pread = ChangingPread(kernel, [grown])
    sleeps = Sleeps()
    result = read(tmp_path, pread=pread, sleep=sleeps)
    assert result.readable and result.attempts == 2 and sleeps.calls == [PAUSE]
    assert result.header == grown[:table_end(grown)]
    assert pread.segment_reads == 4


def test_bytes_that_never_hold_still_are_unreadable_after_the_bounded_reads(tmp_path, header, grown):
    kernel = CrashKernel(tmp_path).install(header, MEMSZ)
    sleeps = Sleeps()
    result = read(tmp_path, pread=ChangingPread(kernel, [header, grown], every=True), attempts=3, pause=0.002,
                  sleep=sleeps)
    unreadable(result, "the crash image changed while it was read (3 reads 2 ms apart)")
    assert result.attempts == 3 and sleeps.calls == [0.002, 0.002]


def test_no_image_loaded_is_unreadable_after_the_bounded_reads(tmp_path, header):
    kernel = CrashKernel(tmp_path).install(header, MEMSZ)
    kernel.set_pointer(0)
    sleeps = Sleeps()
    result = read(tmp_path, sleep=sleeps)
    unreadable(result, "no crash kernel loaded: kexec_crash_image is NULL (5 reads 5 ms apart)")
    assert result.attempts == 5 and len(sleeps.calls) == 4


def test_a_kimage_with_more_segments_than_it_holds_is_not_trusted(tmp_path, header):
    kernel = CrashKernel(tmp_path).install(header, MEMSZ)
    kernel.set_segments(segments(len(header), MEMSZ), count=99)
    unreadable(read(tmp_path), "counts 99 segments, more than its 16")


def test_an_image_without_a_core_header_segment_is_unreadable(tmp_path, header):
    kernel = CrashKernel(tmp_path).install(header, MEMSZ)
    kernel.set_header(b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x01\x00")  # ET_REL, not ET_CORE
    unreadable(read(tmp_path), "none of the 5 segments of the crash image at 0x")


def test_a_header_whose_program_headers_pass_its_segment_is_refused(tmp_path, header):
    kernel = CrashKernel(tmp_path).install(header, MEMSZ)
    kernel.set_segments(segments(len(header), 256))
    end = table_end(header)
    assert end > 256
    unreadable(read(tmp_path), f"program headers end at {end}, past its 256-byte segment")


def test_a_segment_larger_than_any_header_is_refused(tmp_path, header):
    kernel = CrashKernel(tmp_path).install(header, MEMSZ)
    kernel.set_segments(segments(len(header), 64 << 20))
    unreadable(read(tmp_path), "is 67108864 bytes, more than any elfcorehdr")


# --- what the kernel refuses or lacks -----------------------------------------------------------


def test_lockdown_confidentiality_forbids_it_and_integrity_does_not(tmp_path, header):
    CrashKernel(tmp_path).install(header, MEMSZ)
    write(tmp_path, "sys/kernel/security/lockdown", "none integrity [confidentiality]\n")
    result = read(tmp_path)
    unreadable(result, f"lockdown=confidentiality forbids reading {tmp_path}/proc/kcore")
    assert result.attempts == 0
    write(tmp_path, "sys/kernel/security/lockdown", "none [integrity] confidentiality\n")
    assert read(tmp_path).readable


def test_no_btf_means_the_header_cannot_be_located(tmp_path, header):
    CrashKernel(tmp_path).install(header, MEMSZ)
    (tmp_path / "sys/kernel/btf/vmlinux").unlink()
    unreadable(read(tmp_path), f"no {tmp_path}/sys/kernel/btf/vmlinux: the kernel's header cannot be located")


@pytest.mark.parametrize(("omit", "message"), [
    ("kimage", "no struct kimage"),
    ("nr_segments", "struct kimage has no member nr_segments"),
    ("segment", "struct kimage has no member segment"),
    ("mem", "struct kexec_segment has no member mem"),
    ("bufsz", "struct kexec_segment has no member bufsz"),
])
def test_btf_without_the_members_is_refused_not_guessed(tmp_path, header, omit, message):
    CrashKernel(tmp_path, btf=kimage_btf(omit=frozenset({omit}))).install(header, MEMSZ)
    unreadable(read(tmp_path), f"vmlinux: {message}; the kernel's header cannot be located")


def test_a_broken_btf_blob_is_refused_naming_it(tmp_path, header):
    CrashKernel(tmp_path, btf=b"\x9f\xeb\x01\x00" + bytes(40)).install(header, MEMSZ)
    unreadable(read(tmp_path), f"{tmp_path}/sys/kernel/btf/vmlinux: header length 0 does not fit")


def test_kptr_restrict_zeros_hide_the_image(tmp_path, header):
    CrashKernel(tmp_path).install(header, MEMSZ)
    text = (tmp_path / "proc/kallsyms").read_text()
    write(tmp_path, "proc/kallsyms", "\n".join("0" * 16 + line[16:] for line in text.splitlines()) + "\n")
    unreadable(read(tmp_path), "kptr_restrict hides kexec_crash_image")


@pytest.mark.parametrize(("kallsyms", "message"), [
    (None, "proc/kallsyms: kexec_crash_image cannot be located"),
    ("ffffffff81000000 T _text\nffffffffc0a1b000 b kexec_crash_image\t[other]\n",
     "does not list kexec_crash_image (a kernel without kexec, or without CONFIG_KALLSYMS_ALL)"),
])
def test_a_kallsyms_without_the_symbol(tmp_path, header, kallsyms, message):
    CrashKernel(tmp_path).install(header, MEMSZ)
    if kallsyms is None:
        (tmp_path / "proc/kallsyms").unlink()
    else:
        write(tmp_path, "proc/kallsyms", kallsyms)
    unreadable(read(tmp_path), message)


@pytest.mark.parametrize(("text", "expected"), [
    ("ffffffff83a5e6a8 B kexec_crash_image\n", {"kexec_crash_image": 0xFFFFFFFF83A5E6A8}),
    ("ffffffff83a5e6a8 B kexec_crash_image", {"kexec_crash_image": 0xFFFFFFFF83A5E6A8}),  # no final newline
    ("0000000000000000 B kexec_crash_image\n", {"kexec_crash_image": 0}),
    ("ffffffffc0a1b000 b kexec_crash_image\t[mod]\nffffffff81000000 b my_kexec_crash_image\n", {}),
    ("ffffffff81000000 T _text\nkexec_crash_image\n  x kexec_crash_image\n", {}),
    ("ffffffffc0a1b000 b kexec_crash_image\t[mod]\nffffffff83a5e6a8 B kexec_crash_image\n",
     {"kexec_crash_image": 0xFFFFFFFF83A5E6A8}),
])
def test_find_symbols_takes_only_the_kernels_own_line(text, expected):
    assert find_symbols(text, ("kexec_crash_image",)) == expected


# --- kcore: missing, refused, short, not mapping what it must ------------------------------------


def test_no_kcore(tmp_path, header):
    CrashKernel(tmp_path).install(header, MEMSZ)
    (tmp_path / "proc/kcore").unlink()
    unreadable(read(tmp_path), f"no {tmp_path}/proc/kcore (a kernel without CONFIG_PROC_KCORE)")


def test_kcore_permission_denied_says_what_it_needs(tmp_path, header):
    CrashKernel(tmp_path).install(header, MEMSZ)

    def refused(fd: int, length: int, offset: int) -> bytes:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    unreadable(read(tmp_path, pread=refused), "proc/kcore: permission denied (reading it needs root with CAP_SYS_RAWIO")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 0000")
def test_kcore_unreadable_by_mode(tmp_path, header):
    CrashKernel(tmp_path).install(header, MEMSZ)
    (tmp_path / "proc/kcore").chmod(0)
    unreadable(read(tmp_path), "proc/kcore: permission denied")


def test_kcore_that_is_not_a_file_or_not_elf_or_short(tmp_path, header):
    kernel = CrashKernel(tmp_path).install(header, MEMSZ)
    kcore = tmp_path / "proc/kcore"
    with open(kcore, "r+b") as f:
        f.truncate(4096)  # the headers, none of the memory
    unreadable(read(tmp_path), f"{kcore}: short read at offset 0x")
    kcore.write_bytes(b"\x7fELF\x02\x01\x01" + b"\xff" * 80)
    unreadable(read(tmp_path), f"{kcore} is not an ELF64 little-endian core file")
    kcore.unlink()
    kcore.mkdir()
    unreadable(read(tmp_path), f"{kcore} is not a regular file")
    kcore.rmdir()
    os.mkfifo(kcore)
    unreadable(read(tmp_path), f"{kcore} is not a regular file")  # opened without blocking, then refused
    kcore.unlink()
    kernel.kcore.write()
    assert not read(tmp_path).readable  # a fresh kcore without the image's memory written


def test_a_pointer_to_nowhere(tmp_path, header):
    kernel = CrashKernel(tmp_path).install(header, MEMSZ)
    kernel.set_pointer(0xFFFFC90000100000)  # vmalloc space kcore does not map
    result = read(tmp_path)
    unreadable(result, f"kexec_crash_image holds 0xffffc90000100000, which no {tmp_path}/proc/kcore PT_LOAD maps")
    assert result.attempts == 1


def test_a_kcore_that_does_not_map_the_kernel_image(tmp_path, header):
    kernel = CrashKernel(tmp_path, list_page_offset_base=False).install(header, MEMSZ)
    kernel.kcore.loads = kernel.kcore.loads[1:]
    kernel.kcore.write()
    unreadable(read(tmp_path), f"no {tmp_path}/proc/kcore PT_LOAD maps kexec_crash_image at 0x{kernel.image_symbol:x}")


def test_a_kcore_without_direct_map_or_with_a_bad_page_offset_base(tmp_path, header):
    kernel = CrashKernel(tmp_path, list_page_offset_base=False).install(header, MEMSZ)
    kernel.kcore.loads = kernel.kcore.loads[:1]
    kernel.kcore.write()
    unreadable(read(tmp_path), "maps no direct-map memory to find page_offset from")
    kernel = CrashKernel(tmp_path).install(header, MEMSZ)
    kernel.kcore.poke(kernel.image_symbol - 0x3A5E6A8 + 0x2812818, (0x1234).to_bytes(8, "little"))
    unreadable(read(tmp_path), "page_offset_base reads 0x1234, not a direct-map base")


# --- what is kept from one read to the next ------------------------------------------------------


def test_what_the_kernel_fixes_at_boot_is_read_once_per_boot(tmp_path, header):
    CrashKernel(tmp_path).install(header, MEMSZ)
    write(tmp_path, "proc/sys/kernel/random/boot_id", "c0ffee00-0000-4000-8000-000000000001\n")
    reader = LoadedHeaderReader(str(tmp_path), sleep=Sleeps())
    assert reader.read().readable
    (tmp_path / "sys/kernel/btf/vmlinux").unlink()
    (tmp_path / "proc/kallsyms").unlink()
    assert reader.read().readable  # BTF and symbols from the first read: the same boot
    write(tmp_path, "proc/sys/kernel/random/boot_id", "c0ffee00-0000-4000-8000-000000000002\n")
    unreadable(reader.read(), "sys/kernel/btf/vmlinux: the kernel's header cannot be located")


def test_what_btf_cannot_place_is_kept_for_the_boot_and_dropped_with_it(tmp_path, header, monkeypatch):
    """The kernel's BTF is fixed for a boot: a host whose BTF lacks struct kimage must not re-parse 5.5 MB
    on every snapshot (35 ms in the loop), and a new boot looks again."""
    from crashhpd.sysview import loaded_header

    CrashKernel(tmp_path).install(header, MEMSZ)
    boot_id = tmp_path / "proc/sys/kernel/random/boot_id"
    boot_id.parent.mkdir(parents=True, exist_ok=True)
    boot_id.write_text("one\n")
    blob = (tmp_path / "sys/kernel/btf/vmlinux").read_bytes()
    (tmp_path / "sys/kernel/btf/vmlinux").unlink()
    parses = []
    real = loaded_header.read_vmlinux_btf
    monkeypatch.setattr(loaded_header, "read_vmlinux_btf", lambda root: parses.append(root) or real(root))
    reader = LoadedHeaderReader(str(tmp_path), sleep=Sleeps())
    unreadable(reader.read(), "the kernel's header cannot be located")
    (tmp_path / "sys/kernel/btf/vmlinux").write_bytes(blob)
    unreadable(reader.read(), "the kernel's header cannot be located")  # the same boot: not looked at again
    assert len(parses) == 1
    boot_id.write_text("two\n")
    assert reader.read().readable and len(parses) == 2


def test_attempts_must_be_at_least_one(tmp_path):
    with pytest.raises(ValueError):
        LoadedHeaderReader(str(tmp_path), attempts=0)


# --- the kimage layout from BTF ------------------------------------------------------------------


def test_kimage_layout_is_debians_in_the_synthetic_blob():
    layout = kimage_layout(Btf.parse(kimage_btf()))
    assert layout == debian_layout()
    assert (layout.nr_segments.offset, layout.segments_at, layout.segment_size, layout.max_segments) == (56, 64, 32, 16)
    assert layout.span == 64 + 16 * 32


def test_a_member_that_is_no_integer_is_refused():
    b = BtfBuilder()
    ulong = b.int("long unsigned int", 8)
    seg = b.struct("kexec_segment", 32, [("bufsz", ulong, 64), ("mem", ulong, 128), ("memsz", ulong, 192)])
    segs = b.array(seg, 16, ulong)
    b.struct("kimage", 600, [("nr_segments", b.array(ulong, 2, ulong), 448), ("segment", segs, 576)])
    with pytest.raises(BtfError, match="member nr_segments of struct kimage is 16 bytes, not an integer"):
        kimage_layout(Btf.parse(b.blob()))


# --- the crash kernel's command line, from the same read ----------------------------------------------------

PARAMS_MEM = CRASH_BASE + 0x3000000  # a boot parameters segment, as both x86 loaders add one
CMDLINE = "elfcorehdr=0x34000000 root=/dev/vda ro nr_cpus=1 irqpoll"


def with_boot_params(kernel: CrashKernel, header: bytes, cmd_line_ptr: int = PARAMS_MEM + 0x1000,
                     cmdline: bytes = CMDLINE.encode() + b"\0", memsz: int = 0x2000) -> CrashKernel:
    """The image's segments and one more: boot_params at its start, the command line where it points."""
    kernel.set_segments(segments(len(header), MEMSZ) + [(0x7F3A5C500000, memsz, PARAMS_MEM, memsz)])
    kernel.poke_phys(PARAMS_MEM, boot_params(cmd_line_ptr))
    if cmdline:
        kernel.poke_phys(PARAMS_MEM + 0x1000, cmdline)
    return kernel


def test_the_command_line_comes_with_the_header_and_the_segments(tmp_path, header):
    with_boot_params(CrashKernel(tmp_path).install(header, MEMSZ), header)
    result = read(tmp_path)
    assert result.readable and result.cmdline == CommandLine(CMDLINE)
    assert result.segments[-2:] == ((HEADER_MEM, MEMSZ), (PARAMS_MEM, 0x2000)) and len(result.segments) == 6


def test_no_boot_params_segment_leaves_the_header_readable_and_says_why(tmp_path, header):
    CrashKernel(tmp_path).install(header, MEMSZ)
    result = read(tmp_path)
    assert result.readable and result.cmdline.text is None
    assert result.cmdline.reason == "none of the 5 segments of the crash image holds x86 boot parameters"


@pytest.mark.parametrize("pointer,cmdline,reason", [
    (0x7E000000, b"", "address 0x7e000000 is in none of the crash image's 6 segments"),
    (PARAMS_MEM + 0x1000, b"x" * 0x1000, "no NUL within its 2048 bytes"),  # the header's limit, then its NUL
    (PARAMS_MEM + 0x1F00, b"", "no NUL within its 256 bytes"),  # cut at the segment's end (its memory: 'x's)
])
def test_a_hostile_command_line_is_a_reason_not_an_exception(tmp_path, header, pointer, cmdline, reason):
    kernel = with_boot_params(CrashKernel(tmp_path).install(header, MEMSZ), header, pointer, cmdline)
    kernel.poke_phys(PARAMS_MEM + 0x1F00, b"x" * 0x100)
    result = read(tmp_path)
    assert result.readable and result.cmdline.text is None and reason in (result.cmdline.reason or "")


def test_a_command_line_in_a_segment_kcore_does_not_map_is_a_reason(tmp_path, header):
    with_boot_params(CrashKernel(tmp_path).install(header, MEMSZ), header, 0x7F000100, b"")  # segment 3's memory
    result = read(tmp_path)
    assert result.readable and result.cmdline.text is None
    assert f"no {tmp_path}/proc/kcore PT_LOAD maps the crash kernel's command line" in (result.cmdline.reason or "")
