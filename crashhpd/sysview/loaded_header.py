# SPDX-License-Identifier: GPL-2.0-only
"""The elfcorehdr the running kernel holds, read back from the loaded crash image through /proc/kcore.

What crashhpd builds is what it believes the kernel should hold; this is what
the kernel does hold, whoever loaded it. The way there (kallsyms, BTF, kcore)
is in LoadedHeaderReader._read(). The same read of struct kimage lists the image's
segments and finds the crash kernel's command line in its x86 boot parameters
(boot_params.py): struct kimage's own cmdline_buf is freed after a kexec_file_load
(kimage_file_post_load_cleanup(); it read 0 on Debian's 6.12) and never set by kexec_load.
Reading needs root with CAP_SYS_RAWIO and CAP_SYSLOG; every failure is a result
with a one-line reason, never an exception.
"""

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..abi.elf import EHDR, EHDR_SIZE, MAX_HEADER_SIZE, is_core_header
from ..errors import SnapshotError
from .boot_params import BOOT_PARAMS_SIZE, CommandLine, Span, decode, is_boot_params, locate
from .btf import VMLINUX, Btf, BtfError, Field, read_vmlinux_btf
from .files import read_text, under
from .kallsyms import KALLSYMS, read_symbols
from .kcore import KCORE, PAGE_OFFSET_BASE, Kcore, KcoreError, Pread, Unmapped, kernel_page_offset
from .kernel_state import BOOT_ID, LOCKDOWN
from .ramdisk import Ramdisk, ramdisk

IMAGE_SYMBOL = "kexec_crash_image"  # struct kimage *: a data symbol, listed with CONFIG_KALLSYMS_ALL
ATTEMPTS = 5  # reads of the image before giving up on one that never holds still
PAUSE = 0.005  # seconds between two of them: the kernel's own rewrite takes microseconds
KEXEC_SEGMENT_MAX = 16  # include/linux/kexec.h: the length of struct kimage's segment[]
SEGMENT_MIN_BYTES, SEGMENT_MAX_BYTES = 32, 64  # struct kexec_segment: four words (x86_64), with room to grow
KIMAGE_MAX_BYTES = 64 * 1024  # struct kimage is a few KiB; BTF saying more is not to be read whole
_INTEGER_SIZES = (1, 2, 4, 8)


@dataclass(frozen=True, slots=True)
class LoadedHeader:
    """What the kernel's loaded crash image holds as its elfcorehdr, or why it cannot be read.

    `header` is the segment up to the end of its program headers
    (e_phoff + e_phnum * e_phentsize): what a producer wrote. `segment` is
    the whole segment, memsz bytes: the header, the producer's zero padding
    (a page for the kernel, 1 KiB for kexec-tools, which also sizes for more
    ranges than it writes) and the room reserved for growth. The padding is
    not recorded anywhere, so compare a built header with `header` and check
    that the rest of `segment` is zero. `memsz` is the real capacity: a
    rewrite must fit in it. `bufsz` is the size of the buffer the loader
    handed in.
    """

    readable: bool
    reason: str | None = None
    header: bytes = field(default=b"", repr=False)
    segment: bytes = field(default=b"", repr=False)
    mem: int | None = None  # physical address of the segment
    memsz: int | None = None
    bufsz: int | None = None
    attempts: int = 0  # reads of the image it took (0: refused before reading it)
    segments: tuple[Span, ...] = ()  # (mem, memsz) of each segment of the image, in kimage's order
    # the crash kernel's command line, from the x86 boot parameters segment (boot_params.py), or why not
    cmdline: CommandLine = field(default=CommandLine(None, "the crash image was not read"), repr=False)
    # the initrd segment, as the boot parameters name it (ramdisk.py), and the direct map's base to read it by
    initrd: Ramdisk = field(default=Ramdisk(None, "the crash image was not read"), repr=False)
    page_offset: int | None = None


@dataclass(frozen=True, slots=True)
class KimageLayout:
    """Where the reader finds the segments in `struct kimage`, in bytes, as this kernel's BTF says."""

    nr_segments: Field
    segments_at: int  # offset of segment[0]
    segment_size: int  # sizeof(struct kexec_segment)
    max_segments: int  # KEXEC_SEGMENT_MAX, the array's length
    bufsz: Field  # offsets inside one struct kexec_segment
    mem: Field
    memsz: Field

    @property
    def span(self) -> int:
        """Bytes of struct kimage to read: up to the end of segment[] or of nr_segments."""
        return max(self.nr_segments.offset + self.nr_segments.size,
                   self.segments_at + self.segment_size * self.max_segments)


def kimage_layout(btf: Btf) -> KimageLayout:
    """The offsets the reader needs; BtfError naming the struct or member the kernel lacks."""
    kimage = btf.find_struct("kimage")
    nr_segments = _integer(btf, kimage, "nr_segments")
    segments = btf.field(kimage, "segment")
    arr = btf.array(segments.type_id)
    segment = btf.strip(arr.elem_type)
    size = btf.size_of(segment)
    if size * arr.nelems != segments.size or arr.nelems == 0:
        raise BtfError(f"struct kimage member segment is {segments.size} bytes, not {arr.nelems} of {size}")
    # include/linux/kexec.h: KEXEC_SEGMENT_MAX 16, and struct kexec_segment is four words; anything else is not
    # a kernel's BTF, and would have the reader read (and loop over) what it says
    if arr.nelems > KEXEC_SEGMENT_MAX or not SEGMENT_MIN_BYTES <= size <= SEGMENT_MAX_BYTES:
        raise BtfError(f"struct kimage member segment is {arr.nelems} of {size} bytes, not at most "
                       f"{KEXEC_SEGMENT_MAX} struct kexec_segment")
    if btf.size_of(kimage) > KIMAGE_MAX_BYTES:
        raise BtfError(f"struct kimage is {btf.size_of(kimage)} bytes, more than {KIMAGE_MAX_BYTES}")
    return KimageLayout(nr_segments=nr_segments, segments_at=segments.offset, segment_size=size,
                        max_segments=arr.nelems, bufsz=_integer(btf, segment, "bufsz"),
                        mem=_integer(btf, segment, "mem"), memsz=_integer(btf, segment, "memsz"))


def _integer(btf: Btf, struct: int, name: str) -> Field:
    found = btf.field(struct, name)
    if found.size not in _INTEGER_SIZES:
        raise BtfError(f"member {name} of {btf.describe(struct)} is {found.size} bytes, not an integer")
    return found


def lockdown_forbids_kcore(text: str | None) -> bool:
    """Only the confidentiality level of the lockdown LSM (Linux 5.4) closes /proc/kcore (LOCKDOWN_KCORE)."""
    return text is not None and "[confidentiality]" in text


class _Unreadable(Exception):
    """The header cannot be read now; the text is the reason."""


class _Changed(Exception):
    """This read saw an image in flux (NULL pointer, torn bytes): worth another read."""


@dataclass(frozen=True, slots=True)
class _Symbols:
    image: int  # &kexec_crash_image
    page_offset_base: int | None  # &page_offset_base, when the kernel has that variable


class LoadedHeaderReader:
    """Reads the kernel's loaded elfcorehdr under `root`; keep one for the daemon's life.

    What the kernel fixes at boot (BTF offsets, symbol addresses, page_offset) is kept between
    reads once read successfully, and dropped when the boot id changes. `sleep` and `pread` are
    the pause between attempts and the read of kcore (os.pread's signature), replaceable by a
    caller that must control time or see the reads.
    """

    def __init__(self, root: str = "/", *, attempts: int = ATTEMPTS, pause: float = PAUSE,
                 sleep: Callable[[float], None] = time.sleep, pread: Pread = os.pread) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.root = root
        self.attempts = attempts
        self.pause = pause
        self._sleep = sleep
        self._pread = pread
        self._boot_id: str | None = None
        self._layout: KimageLayout | None = None
        self._layout_error: str | None = None  # why BTF cannot place the segments: as fixed for a boot as they
        self._symbols: _Symbols | None = None
        self._page_offset: int | None = None
        self._last: LoadedHeader | None = None

    def read(self) -> LoadedHeader:
        """The header as the kernel holds it now, or unreadable with the reason. A read that finds what the last
        one found returns the last one's objects: the stages after it then compare the header by identity, and
        its hash is computed once, not on every update (460 KB at 8192 ranges)."""
        try:
            loaded = self._read()
        except (_Unreadable, KcoreError, SnapshotError) as err:
            return LoadedHeader(readable=False, reason=str(err))
        if loaded == self._last:
            return self._last
        self._last = loaded
        return loaded

    # --- once per boot -----------------------------------------------------------------------

    def _same_boot(self) -> None:
        text = read_text(self.root, BOOT_ID)
        boot_id = text.strip() if text else None
        if boot_id != self._boot_id:
            self._boot_id = boot_id
            self._layout = self._symbols = self._page_offset = None
            self._layout_error = None

    def _kimage_layout(self) -> KimageLayout:
        """Parsed once per boot, and so is a failure: a BTF without struct kimage cost 35 ms a snapshot."""
        if self._layout_error is not None:
            raise _Unreadable(self._layout_error)
        if self._layout is None:
            try:
                self._layout = self._parse_layout()
            except _Unreadable as err:
                self._layout_error = str(err)
                raise
        return self._layout

    def _parse_layout(self) -> KimageLayout:
        path = under(self.root, VMLINUX)
        try:
            btf = read_vmlinux_btf(self.root)
        except BtfError as err:
            raise _Unreadable(f"{err}; the kernel's header cannot be located") from None
        if btf is None:
            raise _Unreadable(f"no {path}: the kernel's header cannot be located")
        try:
            return kimage_layout(btf)
        except BtfError as err:
            raise _Unreadable(f"{path}: {err}; the kernel's header cannot be located") from None

    def _kernel_symbols(self) -> _Symbols:
        if self._symbols is None:
            path = under(self.root, KALLSYMS)
            found = read_symbols(self.root, (IMAGE_SYMBOL, PAGE_OFFSET_BASE))
            if found is None:
                raise _Unreadable(f"no {path}: {IMAGE_SYMBOL} cannot be located")
            if IMAGE_SYMBOL not in found:
                raise _Unreadable(f"{path} does not list {IMAGE_SYMBOL} "
                                  f"(a kernel without kexec, or without CONFIG_KALLSYMS_ALL)")
            image = found[IMAGE_SYMBOL]
            if image is None:
                raise _Unreadable(f"kptr_restrict hides {IMAGE_SYMBOL}: {path} shows 0 "
                                  f"(kptr_restrict=2, or a reader without CAP_SYSLOG)")
            self._symbols = _Symbols(image, found.get(PAGE_OFFSET_BASE))
        return self._symbols

    def _page_offset_of(self, kcore: Kcore, symbols: _Symbols) -> int:
        if self._page_offset is None:
            self._page_offset = kernel_page_offset(kcore, symbols.page_offset_base)
        return self._page_offset

    # --- every read --------------------------------------------------------------------------

    def _read(self) -> LoadedHeader:
        """kexec_crash_image (kallsyms) points to the loaded struct kimage; where its segments are in it
        comes from BTF, never from fixed offsets; memory through kcore, whose table is read anew each time
        (memory hotplug changes it): the pointer, the kimage in the direct map, then each segment at
        page_offset + mem. x86 keeps the crash kernel's pages mapped read-only while an image is loaded."""
        if lockdown_forbids_kcore(read_text(self.root, LOCKDOWN)):
            raise _Unreadable(f"lockdown=confidentiality forbids reading {under(self.root, KCORE)}")
        self._same_boot()
        layout = self._kimage_layout()
        symbols = self._kernel_symbols()
        with Kcore(self.root, self._pread) as kcore:
            page_offset = self._page_offset_of(kcore, symbols)
            last = ""
            for attempt in range(1, self.attempts + 1):
                if attempt > 1:
                    self._sleep(self.pause)
                try:
                    return replace(_read_image(kcore, layout, symbols.image, page_offset), attempts=attempt)
                except _Changed as err:
                    last = str(err)
                except (_Unreadable, KcoreError) as err:
                    return LoadedHeader(readable=False, reason=str(err), attempts=attempt)
        return LoadedHeader(readable=False, reason=f"{last} ({self.attempts} reads {self.pause * 1e3:g} ms apart)",
                            attempts=self.attempts)


def _read_image(kcore: Kcore, layout: KimageLayout, image_symbol: int, page_offset: int) -> LoadedHeader:
    """One attempt: pointer, kimage, segment, then all three again; _Changed unless both reads agree.

    A load sets the pointer only once the image is complete; the kernel's own rewrite on hotplug
    sets it to NULL, copies the new header and restores it. So a NULL pointer, a disagreement or
    a kimage that makes no sense (as a freed one would) is worth another attempt.
    """
    pointer = kcore.read_pointer(image_symbol, IMAGE_SYMBOL)
    if pointer == 0:
        raise _Changed(f"no crash kernel loaded: {IMAGE_SYMBOL} is NULL")
    try:
        kimage = kcore.read(pointer, layout.span, "struct kimage")
    except Unmapped:
        raise _Unreadable(f"{IMAGE_SYMBOL} holds 0x{pointer:x}, which no {kcore.path} PT_LOAD maps") from None
    nr_segments = layout.nr_segments.value(kimage)
    if nr_segments > layout.max_segments:
        raise _Changed(f"struct kimage at 0x{pointer:x} counts {nr_segments} segments, "
                       f"more than its {layout.max_segments}")
    segments = _segments(layout, kimage, nr_segments)
    heads = _heads(kcore, segments, page_offset)
    found = next((i for i, head in heads if is_core_header(head)), None)
    if found is None:
        raise _Changed(f"none of the {nr_segments} segments of the crash image at 0x{pointer:x} "
                       f"begins with an ELF64 core header")
    (mem, memsz), bufsz = segments[found], layout.bufsz.value(kimage, layout.segments_at + found * layout.segment_size)
    if memsz > MAX_HEADER_SIZE:
        raise _Unreadable(f"the header's segment at 0x{mem:x} is {memsz} bytes, "
                          f"more than any elfcorehdr ({MAX_HEADER_SIZE})")
    first = kcore.read(page_offset + mem, memsz, "the header's segment")
    cmdline = _command_line(kcore, segments, heads, page_offset)
    second = kcore.read(page_offset + mem, memsz, "the header's segment")
    if (first != second or kcore.read(pointer, layout.span, "struct kimage") != kimage
            or kcore.read_pointer(image_symbol, IMAGE_SYMBOL) != pointer):
        raise _Changed("the crash image changed while it was read")
    ehdr = EHDR.unpack_from(first)
    end = ehdr[5] + ehdr[10] * ehdr[9]  # e_phoff + e_phnum * e_phentsize
    if end > memsz:
        raise _Unreadable(f"the loaded header's program headers end at {end}, past its {memsz}-byte segment")
    return LoadedHeader(readable=True, header=first[:end], segment=first, mem=mem, memsz=memsz, bufsz=bufsz,
                        segments=tuple(segments), cmdline=cmdline, initrd=ramdisk(heads, segments),
                        page_offset=page_offset)


def _segments(layout: KimageLayout, kimage: bytes, nr_segments: int) -> list[Span]:
    """(mem, memsz) of each segment struct kimage lists."""
    bases = (layout.segments_at + i * layout.segment_size for i in range(nr_segments))
    return [(layout.mem.value(kimage, base), layout.memsz.value(kimage, base)) for base in bases]


def _heads(kcore: Kcore, segments: list[Span], page_offset: int) -> list[tuple[int, bytes]]:
    """(index, first bytes) of each segment kcore maps: enough to tell an ELF core header (64 bytes) and
    x86 boot parameters (one page) from the rest. A segment kcore does not map is neither: the kernel
    never leaves those unmapped."""
    heads = []
    for i, (mem, memsz) in enumerate(segments):
        if memsz < EHDR_SIZE:
            continue
        try:
            heads.append((i, kcore.read(page_offset + mem, min(memsz, BOOT_PARAMS_SIZE), f"segment {i}")))
        except Unmapped:
            continue
    return heads


def _command_line(kcore: Kcore, segments: list[Span], heads: list[tuple[int, bytes]],
                  page_offset: int) -> CommandLine:
    """The command line the boot parameters segment points to, read where it says; or why not."""
    params = next((head for _i, head in heads if is_boot_params(head)), None)
    if params is None:
        return CommandLine(None, f"none of the {len(segments)} segments of the crash image holds x86 boot "
                                 "parameters")
    where = locate(params, segments)
    if isinstance(where, CommandLine):
        return where
    try:
        return decode(kcore.read(page_offset + where.address, where.size, "the crash kernel's command line"))
    except KcoreError as err:
        return CommandLine(None, str(err))
