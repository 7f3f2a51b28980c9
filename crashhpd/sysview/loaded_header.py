# SPDX-License-Identifier: GPL-2.0-only
"""The elfcorehdr the running kernel holds: read back from the loaded crash image through /proc/kcore.

What crashhpd builds is what it believes the kernel should hold; this is
what the kernel does hold, whoever loaded it. The path, every file under
the configurable root like the rest of sysview:

1. `kexec_crash_image`, the kernel's pointer to the loaded crash image
   (`struct kimage *`), from /proc/kallsyms (a data symbol: it needs
   CONFIG_KALLSYMS_ALL; kptr_restrict shows it as zeros).
2. Where `nr_segments` and `segment[]` (`struct kexec_segment` { buf, bufsz,
   mem, memsz }) lie in `struct kimage`, from the kernel's BTF
   (/sys/kernel/btf/vmlinux, see btf.py), never from fixed offsets. Without
   BTF, or without those members, the reader refuses.
3. Memory through /proc/kcore, an ELF core file whose PT_LOADs map kernel
   virtual addresses to file offsets: the pointer (in the kernel image
   mapping), the kimage it points to (in the direct map), then each
   segment's first bytes at page_offset + mem. The segment that begins with
   an ELF64 ET_CORE header is the elfcorehdr; it is read whole (memsz
   bytes). x86 keeps the crash kernel's pages mapped read-only while an
   image is loaded, so the direct map reaches them.

page_offset (the direct map's base, moved by KASLR) is the value of the
kernel variable `page_offset_base` when kallsyms lists it, read through
kcore: that is the very number the kernel's __va() adds, exact whatever the
RAM layout, and it costs nothing the reader does not already need (the
symbol is listed under the same conditions as kexec_crash_image). Kernels
built without CONFIG_RANDOMIZE_MEMORY have no such variable and a fixed
base; then it comes from the lowest direct-map PT_LOAD of kcore (the lowest
below the kernel image mapping that has a physical address): p_vaddr -
p_paddr, exact since kcore records RAM's physical address (Linux 4.11);
from an older kcore, p_vaddr rounded down to 1 GiB as snapshot.py does,
right while the first RAM range starts below 1 GiB (every x86 PC's does).

The image can change while it is read: a load sets the pointer only once
the image is complete, and the kernel's own rewrite on hotplug sets it to
NULL, copies the new header, and restores it. So one attempt reads the
pointer, the kimage and the segment, then the segment, the kimage and the
pointer again, and keeps the result only when both agree; a NULL pointer,
a disagreement, or a kimage that makes no sense (as a freed one would) is
tried again after a short pause, a bounded number of times. Only what the
kernel fixes at boot (BTF offsets, symbol addresses, page_offset) is kept
between reads, and only once read successfully; it is dropped when the
boot id changes.

Reading needs root with CAP_SYS_RAWIO (kcore) and CAP_SYSLOG (kallsyms);
lockdown=confidentiality forbids kcore altogether. Every failure is a
result with a one-line reason, never an exception.
"""

import bisect
import errno
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from ..abi.elf import EHDR, EHDR_SIZE, ET_CORE, MAX_HEADER_SIZE, PHDR, PHDR_SIZE, PT_LOAD
from ..abi.x86_64 import KERNEL_HALF, START_KERNEL_MAP
from ..errors import SnapshotError
from .btf import VMLINUX, Btf, BtfError, Field, read_vmlinux_btf
from .files import read_text, under
from .kernel_state import BOOT_ID, LOCKDOWN

KALLSYMS = "proc/kallsyms"
KCORE = "proc/kcore"
IMAGE_SYMBOL = "kexec_crash_image"
PAGE_OFFSET_SYMBOL = "page_offset_base"
ATTEMPTS = 5  # reads of the image before giving up on one that never holds still
PAUSE = 0.005  # seconds between two of them: the kernel's own rewrite takes microseconds
POINTER = 8
_GIB = 1 << 30
_ELF64_LSB = b"\x7fELF\x02\x01"
_INTEGER_SIZES = (1, 2, 4, 8)
_ADDRESS_AND_TYPE = re.compile(r"([0-9a-fA-F]{1,16}) [A-Za-z]")  # a kallsyms line before ` NAME`
_NO_PADDR = (1 << 64) - 1  # kcore's p_paddr for what is not RAM or the kernel image (vmalloc, vmemmap, modules)

Pread = Callable[[int, int, int], bytes]  # os.pread(fd, length, offset)


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
    return KimageLayout(nr_segments=nr_segments, segments_at=segments.offset, segment_size=size,
                        max_segments=arr.nelems, bufsz=_integer(btf, segment, "bufsz"),
                        mem=_integer(btf, segment, "mem"), memsz=_integer(btf, segment, "memsz"))


def _integer(btf: Btf, struct: int, name: str) -> Field:
    found = btf.field(struct, name)
    if found.size not in _INTEGER_SIZES:
        raise BtfError(f"member {name} of {btf.describe(struct)} is {found.size} bytes, not an integer")
    return found


def find_symbols(text: str, names: tuple[str, ...]) -> dict[str, int]:
    """The addresses kallsyms gives the kernel's own symbols `names` (0: hidden); absent names are left out.

    A module's symbol of the same name (`ADDR t NAME\t[module]`) does not count. A plain search for
    the line's end, then a check of its start: a regex over kallsyms' 5 MB costs 30 ms a name.
    """
    if not text.endswith("\n"):
        text += "\n"
    found = {}
    for name in names:
        needle = f" {name}\n"
        at = text.find(needle)
        while at >= 0:
            match = _ADDRESS_AND_TYPE.fullmatch(text, text.rfind("\n", 0, at) + 1, at)
            if match:
                found[name] = int(match.group(1), 16)
                break
            at = text.find(needle, at + 1)
    return found


def lockdown_forbids_kcore(text: str | None) -> bool:
    """Only the confidentiality level of lockdown closes /proc/kcore (LOCKDOWN_KCORE)."""
    return text is not None and "[confidentiality]" in text


class _Unreadable(Exception):
    """The header cannot be read now; the text is the reason."""


class _Unmapped(_Unreadable):
    """No kcore PT_LOAD maps an address."""


class _Changed(Exception):
    """This read saw an image in flux (NULL pointer, torn bytes): worth another read."""


@dataclass(frozen=True, slots=True)
class _Symbols:
    image: int  # &kexec_crash_image
    page_offset_base: int | None  # &page_offset_base, when the kernel has that variable


class LoadedHeaderReader:
    """Reads the kernel's loaded elfcorehdr under `root`; keep one for the daemon's life.

    `sleep` and `pread` are the pause between attempts and the read of
    kcore (os.pread's signature); they exist to be replaced by a caller that
    must control time or see the reads.
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
        self._symbols: _Symbols | None = None
        self._page_offset: int | None = None

    def read(self) -> LoadedHeader:
        """The header as the kernel holds it now, or unreadable with the reason."""
        try:
            return self._read()
        except (_Unreadable, SnapshotError) as err:
            return LoadedHeader(readable=False, reason=str(err))

    # --- once per boot -----------------------------------------------------------------------

    def _same_boot(self) -> None:
        text = read_text(self.root, BOOT_ID)
        boot_id = text.strip() if text else None
        if boot_id != self._boot_id:
            self._boot_id = boot_id
            self._layout = self._symbols = self._page_offset = None

    def _kimage_layout(self) -> KimageLayout:
        if self._layout is None:
            path = under(self.root, VMLINUX)
            try:
                btf = read_vmlinux_btf(self.root)
            except BtfError as err:
                raise _Unreadable(f"{err}; the kernel's header cannot be located") from None
            if btf is None:
                raise _Unreadable(f"no {path}: the kernel's header cannot be located")
            try:
                self._layout = kimage_layout(btf)
            except BtfError as err:
                raise _Unreadable(f"{path}: {err}; the kernel's header cannot be located") from None
        return self._layout

    def _kernel_symbols(self) -> _Symbols:
        if self._symbols is None:
            path = under(self.root, KALLSYMS)
            text = read_text(self.root, KALLSYMS)
            if text is None:
                raise _Unreadable(f"no {path}: {IMAGE_SYMBOL} cannot be located")
            found = find_symbols(text, (IMAGE_SYMBOL, PAGE_OFFSET_SYMBOL))
            image = found.get(IMAGE_SYMBOL)
            if image is None:
                raise _Unreadable(f"{path} does not list {IMAGE_SYMBOL} "
                                  f"(a kernel without kexec, or without CONFIG_KALLSYMS_ALL)")
            if image == 0:
                raise _Unreadable(f"kptr_restrict hides {IMAGE_SYMBOL}: {path} shows 0 "
                                  f"(kptr_restrict=2, or a reader without CAP_SYSLOG)")
            self._symbols = _Symbols(image, found.get(PAGE_OFFSET_SYMBOL) or None)
        return self._symbols

    def _direct_map_base(self, kcore: "_Kcore", symbols: _Symbols) -> int:
        """page_offset: see the module's docstring for which source and why."""
        if self._page_offset is not None:
            return self._page_offset
        if symbols.page_offset_base is not None:
            value = _u64(kcore.read(symbols.page_offset_base, POINTER, PAGE_OFFSET_SYMBOL))
            if value < KERNEL_HALF or value % _GIB:
                raise _Unreadable(f"{PAGE_OFFSET_SYMBOL} reads 0x{value:x}, not a direct-map base")
        else:
            found = kcore.direct_map_base()
            if found is None:
                raise _Unreadable(f"{kcore.path} maps no direct-map memory to find page_offset from")
            value = found
        self._page_offset = value
        return value

    # --- every read --------------------------------------------------------------------------

    def _read(self) -> LoadedHeader:
        if lockdown_forbids_kcore(read_text(self.root, LOCKDOWN)):
            raise _Unreadable(f"lockdown=confidentiality forbids reading {under(self.root, KCORE)}")
        self._same_boot()
        layout = self._kimage_layout()
        symbols = self._kernel_symbols()
        with _Kcore(under(self.root, KCORE), self._pread) as kcore:
            page_offset = self._direct_map_base(kcore, symbols)
            last = ""
            for attempt in range(1, self.attempts + 1):
                if attempt > 1:
                    self._sleep(self.pause)
                try:
                    return replace(_read_image(kcore, layout, symbols.image, page_offset), attempts=attempt)
                except _Changed as err:
                    last = str(err)
                except _Unreadable as err:
                    return LoadedHeader(readable=False, reason=str(err), attempts=attempt)
        return LoadedHeader(readable=False, reason=f"{last} ({self.attempts} reads {self.pause * 1e3:g} ms apart)",
                            attempts=self.attempts)


def _read_image(kcore: "_Kcore", layout: KimageLayout, image_symbol: int, page_offset: int) -> LoadedHeader:
    """One attempt: pointer, kimage, segment, then all three again; _Changed unless both reads agree."""
    pointer = _u64(kcore.read(image_symbol, POINTER, IMAGE_SYMBOL))
    if pointer == 0:
        raise _Changed(f"no crash kernel loaded: {IMAGE_SYMBOL} is NULL")
    try:
        kimage = kcore.read(pointer, layout.span, "struct kimage")
    except _Unmapped:
        raise _Unreadable(f"{IMAGE_SYMBOL} holds 0x{pointer:x}, which no {kcore.path} PT_LOAD maps") from None
    nr_segments = layout.nr_segments.value(kimage)
    if nr_segments > layout.max_segments:
        raise _Changed(f"struct kimage at 0x{pointer:x} counts {nr_segments} segments, "
                       f"more than its {layout.max_segments}")
    found = _find_header_segment(kcore, layout, kimage, nr_segments, page_offset)
    if found is None:
        raise _Changed(f"none of the {nr_segments} segments of the crash image at 0x{pointer:x} "
                       f"begins with an ELF64 core header")
    mem, memsz, bufsz = found
    if memsz > MAX_HEADER_SIZE:
        raise _Unreadable(f"the header's segment at 0x{mem:x} is {memsz} bytes, "
                          f"more than any elfcorehdr ({MAX_HEADER_SIZE})")
    first = kcore.read(page_offset + mem, memsz, "the header's segment")
    second = kcore.read(page_offset + mem, memsz, "the header's segment")
    if (first != second or kcore.read(pointer, layout.span, "struct kimage") != kimage
            or _u64(kcore.read(image_symbol, POINTER, IMAGE_SYMBOL)) != pointer):
        raise _Changed("the crash image changed while it was read")
    ehdr = EHDR.unpack_from(first)
    end = ehdr[5] + ehdr[10] * ehdr[9]  # e_phoff + e_phnum * e_phentsize
    if end > memsz:
        raise _Unreadable(f"the loaded header's program headers end at {end}, past its {memsz}-byte segment")
    return LoadedHeader(readable=True, header=first[:end], segment=first, mem=mem, memsz=memsz, bufsz=bufsz)


def _find_header_segment(kcore: "_Kcore", layout: KimageLayout, kimage: bytes, nr_segments: int,
                         page_offset: int) -> tuple[int, int, int] | None:
    """(mem, memsz, bufsz) of the first segment whose memory begins with an ELF64 ET_CORE header."""
    for i in range(nr_segments):
        base = layout.segments_at + i * layout.segment_size
        mem, memsz = layout.mem.value(kimage, base), layout.memsz.value(kimage, base)
        if memsz < EHDR_SIZE:
            continue
        try:
            head = kcore.read(page_offset + mem, EHDR_SIZE, f"segment {i}")
        except _Unmapped:  # not the header, whatever it is: the kernel never leaves that one unmapped
            continue
        if head.startswith(_ELF64_LSB) and EHDR.unpack_from(head)[1] == ET_CORE:
            return mem, memsz, layout.bufsz.value(kimage, base)
    return None


def _u64(data: bytes) -> int:
    return int.from_bytes(data, "little")


class _Kcore:
    """/proc/kcore opened for one read of the image: its PT_LOADs, and reads by kernel virtual address.

    The table is read anew each time: memory hotplug changes it.
    """

    def __init__(self, path: str, pread: Pread) -> None:
        self.path = path
        self._pread = pread
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise _Unreadable(f"no {path} (a kernel without CONFIG_PROC_KCORE): "
                              f"the kernel's header cannot be read") from None
        except OSError as err:
            raise _Unreadable(self._os_error(err)) from None
        try:
            if not stat.S_ISREG(os.fstat(self._fd).st_mode):
                raise _Unreadable(f"{path} is not a regular file")
            self._loads()
        except BaseException:
            os.close(self._fd)
            raise

    def __enter__(self) -> "_Kcore":
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)

    def _loads(self) -> None:
        head = self._file(0, EHDR_SIZE)
        ehdr = EHDR.unpack_from(head)
        if not head.startswith(_ELF64_LSB) or ehdr[1] != ET_CORE or ehdr[9] != PHDR_SIZE:
            raise _Unreadable(f"{self.path} is not an ELF64 little-endian core file")
        phoff, phnum = ehdr[5], ehdr[10]
        table = self._file(phoff, phnum * PHDR_SIZE)
        loads = sorted((vaddr, vaddr + filesz, offset, paddr)
                       for ptype, _flags, offset, vaddr, paddr, filesz, _memsz, _align in PHDR.iter_unpack(table)
                       if ptype == PT_LOAD and filesz)
        self._starts = [load[0] for load in loads]
        self._ends = [load[1] for load in loads]
        self._offsets = [load[2] for load in loads]
        self._direct = [(vaddr, paddr) for vaddr, _end, _offset, paddr in loads
                        if KERNEL_HALF <= vaddr < START_KERNEL_MAP and paddr != _NO_PADDR]

    def direct_map_base(self) -> int | None:
        """page_offset from the lowest direct-map PT_LOAD (the direct map comes first in the kernel half,
        KASLR or not): p_vaddr - p_paddr, as kcore gives RAM its physical address (Linux 4.11+); when it
        does not (p_paddr 0), p_vaddr rounded down to 1 GiB, the alignment KASLR keeps."""
        if not self._direct:
            return None
        vaddr, paddr = self._direct[0]
        base = vaddr - paddr if paddr else vaddr & ~(_GIB - 1)
        return base if base >= KERNEL_HALF else None

    def read(self, vaddr: int, size: int, what: str) -> bytes:
        """`size` bytes at kernel virtual address `vaddr`, across adjacent PT_LOADs; _Unmapped where none maps it."""
        parts = []
        addr, left = vaddr, size
        while left:
            i = bisect.bisect_right(self._starts, addr) - 1
            if i < 0 or addr >= self._ends[i]:
                raise _Unmapped(f"no {self.path} PT_LOAD maps {what} at 0x{addr:x}")
            n = min(left, self._ends[i] - addr)
            parts.append(self._file(self._offsets[i] + addr - self._starts[i], n))
            addr += n
            left -= n
        return b"".join(parts)

    def _file(self, offset: int, size: int) -> bytes:
        parts = []
        got = 0
        while got < size:
            try:
                chunk = self._pread(self._fd, size - got, offset + got)
            except OSError as err:
                raise _Unreadable(self._os_error(err)) from None
            if not chunk:
                raise _Unreadable(f"{self.path}: short read at offset 0x{offset:x}: {got} of {size} bytes")
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def _os_error(self, err: OSError) -> str:
        if err.errno in (errno.EPERM, errno.EACCES):
            return (f"{self.path}: permission denied (reading it needs root with CAP_SYS_RAWIO, "
                    f"and lockdown=confidentiality forbids it)")
        return f"{self.path}: {err.strerror or err}"
