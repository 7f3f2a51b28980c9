# SPDX-License-Identifier: GPL-2.0-only
"""/proc/kcore, the one reader: its PT_LOADs, the direct map's base, and kernel memory by virtual address.

kcore is an ELF64 core file as large as the address space it maps, so only its program headers are
parsed (at most 0xfffe) and memory is read with pread where a PT_LOAD says. The two rules for the
direct map's base sit side by side because they answer different questions: what kexec-tools
computes (to match its header byte for byte) and what the kernel's __va() adds (to read its memory).
"""

import bisect
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from ..abi.elf import EHDR, EHDR_SIZE, MAX_PHNUM, PHDR, PHDR_SIZE, PT_LOAD, is_core_header
from ..abi.x86_64 import GIB, KERNEL_HALF, POINTER_SIZE, START_KERNEL_MAP
from .files import NotRegularFile, open_regular, under

KCORE = "proc/kcore"
PAGE_OFFSET_BASE = "page_offset_base"  # the kernel variable holding the direct map's base under KASLR
NO_PADDR = (1 << 64) - 1  # kcore's p_paddr for what is not RAM or the kernel image (vmalloc, vmemmap, modules)
# the largest read the callers make is one elfcorehdr segment (abi.elf.MAX_HEADER_SIZE, 3.5 MiB);
# a bigger request comes from a broken table or BTF and would only allocate what it asks
MAX_READ = 16 << 20
_MAX_OFFSET = (1 << 63) - 1  # off_t: pread raises OverflowError past it

Pread = Callable[[int, int, int], bytes]  # os.pread(fd, length, offset)


class KcoreError(Exception):
    """kcore cannot be read, or not what was asked of it; the text is the reason, naming the file."""


class Unmapped(KcoreError):
    """No PT_LOAD maps an address."""


@dataclass(frozen=True, slots=True)
class Load:
    """One PT_LOAD: kernel virtual addresses [vaddr, vaddr + filesz) are at file offset `offset`."""

    vaddr: int
    paddr: int  # NO_PADDR where not RAM; 0 from kernels before 4.11 (see direct_map_offset)
    offset: int
    filesz: int
    memsz: int


class Kcore:
    """/proc/kcore under `root`, open: its PT_LOADs in file order, parsed once, and reads by address.

    The table is what it is when opened: memory hotplug changes it, so a reader that must follow
    it opens kcore again. `pread` is os.pread's signature, replaceable to see or refuse the reads.
    """

    def __init__(self, root: str, pread: Pread = os.pread) -> None:
        self.path = under(root, KCORE)
        self._pread = pread
        try:
            self._fd = open_regular(self.path)
        except (FileNotFoundError, NotADirectoryError):
            raise KcoreError(f"no {self.path} (a kernel without CONFIG_PROC_KCORE)") from None
        except NotRegularFile:
            raise KcoreError(f"{self.path} is not a regular file") from None
        except OSError as err:
            raise KcoreError(self._os_error(err)) from None
        try:
            self.loads = self._read_loads()
        except BaseException:
            os.close(self._fd)
            raise
        mapped = sorted((load.vaddr, load.vaddr + load.filesz, load.offset) for load in self.loads if load.filesz)
        self._starts = [start for start, _end, _offset in mapped]
        self._ends = [end for _start, end, _offset in mapped]
        self._offsets = [offset for _start, _end, offset in mapped]

    def __enter__(self) -> "Kcore":
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        os.close(self._fd)

    def _read_loads(self) -> tuple[Load, ...]:
        head = self._file(0, EHDR_SIZE)
        ehdr = EHDR.unpack_from(head)
        if not is_core_header(head) or ehdr[9] != PHDR_SIZE:  # e_phentsize
            raise KcoreError(f"{self.path} is not an ELF64 little-endian core file")
        phoff, phnum = ehdr[5], ehdr[10]
        if phnum > MAX_PHNUM:  # PN_XNUM: the count would be in section 0, which kcore never writes
            raise KcoreError(f"{self.path} counts 0x{phnum:x} program headers (PN_XNUM), which kcore never does")
        table = self._file(phoff, phnum * PHDR_SIZE)
        return tuple(Load(vaddr, paddr, offset, filesz, memsz)
                     for ptype, _flags, offset, vaddr, paddr, filesz, memsz, _align in PHDR.iter_unpack(table)
                     if ptype == PT_LOAD)

    def read(self, vaddr: int, size: int, what: str) -> bytes:
        """`size` bytes at kernel virtual address `vaddr`, across adjacent PT_LOADs; Unmapped where none maps it."""
        if size > MAX_READ:
            raise KcoreError(f"{what} at 0x{vaddr:x} would be {size} bytes, more than any read of {self.path} "
                             f"({MAX_READ})")
        parts = []
        addr, left = vaddr, size
        while left:
            i = bisect.bisect_right(self._starts, addr) - 1
            if i < 0 or addr >= self._ends[i]:
                raise Unmapped(f"no {self.path} PT_LOAD maps {what} at 0x{addr:x}")
            n = min(left, self._ends[i] - addr)
            parts.append(self._file(self._offsets[i] + addr - self._starts[i], n))
            addr += n
            left -= n
        return b"".join(parts)

    def read_pointer(self, vaddr: int, what: str) -> int:
        """The 64-bit little-endian value at `vaddr`."""
        return int.from_bytes(self.read(vaddr, POINTER_SIZE, what), "little")

    def _file(self, offset: int, size: int) -> bytes:
        if offset + size > _MAX_OFFSET:
            raise KcoreError(f"{self.path}: offset 0x{offset:x} is past any file's end")
        parts = []
        got = 0
        while got < size:
            try:
                chunk = self._pread(self._fd, size - got, offset + got)
            except OSError as err:
                raise KcoreError(self._os_error(err)) from None
            if not chunk:
                raise KcoreError(f"{self.path}: short read at offset 0x{offset:x}: {got} of {size} bytes")
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def _os_error(self, err: OSError) -> str:
        if err.errno in (errno.EPERM, errno.EACCES):
            return (f"{self.path}: permission denied (reading it needs root with CAP_SYS_RAWIO, "
                    f"and lockdown=confidentiality forbids it)")
        return f"{self.path}: {err.strerror or err}"


def read_loads(root: str) -> tuple[Load, ...] | None:
    """kcore's PT_LOADs in file order, or None where it cannot be read (the callers then do without)."""
    try:
        with Kcore(root) as kcore:
            return kcore.loads
    except KcoreError:
        return None


def kernel_map(loads: tuple[Load, ...]) -> tuple[tuple[int, int], ...]:
    """(vaddr, memsz) of the PT_LOADs in the kernel image's mapping (KCORE_TEXT, modules), in file order."""
    return tuple((load.vaddr, load.memsz) for load in loads if load.vaddr >= START_KERNEL_MAP)


def kexec_tools_page_offset(loads: tuple[Load, ...]) -> int | None:
    """The direct map's base as kexec-tools computes it for the RAM p_vaddr of its header.

    get_kernel_vaddr_and_size() (kexec/arch/i386/crashdump-x86.c) takes every PT_LOAD's p_vaddr
    rounded down to 1 GiB and keeps the lowest, a 0 counting as none found; None here is its
    fallback, the non-KASLR base. Mirrored as it is, since the header must match its bytes.
    """
    lowest = 0
    for load in loads:
        vaddr = load.vaddr & ~(GIB - 1)
        if lowest == 0 or lowest > vaddr:
            lowest = vaddr
    return lowest or None


def direct_map_offset(loads: tuple[Load, ...]) -> int | None:
    """The direct map's base from its lowest PT_LOAD: p_vaddr - p_paddr, exact whatever the RAM layout.

    The direct map comes first in the kernel half, KASLR or not; loads without a physical address
    (NO_PADDR) are not RAM. p_paddr is recorded since Linux commit 464920104bf7 ("/proc/kcore: update
    physical address for kcore ram and text", v4.11); before it (p_paddr 0) p_vaddr rounded down to
    1 GiB, right while the first RAM range starts below 1 GiB (every x86 PC's does).
    """
    direct = [load for load in loads
              if load.filesz and KERNEL_HALF <= load.vaddr < START_KERNEL_MAP and load.paddr != NO_PADDR]
    if not direct:
        return None
    lowest = min(direct, key=lambda load: (load.vaddr, load.filesz, load.offset))
    base = lowest.vaddr - lowest.paddr if lowest.paddr else lowest.vaddr & ~(GIB - 1)
    return base if base >= KERNEL_HALF else None


def kernel_page_offset(kcore: Kcore, page_offset_base: int | None) -> int:
    """The base the kernel's __va() adds: the variable `page_offset_base` (at that address), else the loads.

    The variable is exact and costs one read; kernels without CONFIG_RANDOMIZE_MEMORY (Linux commit
    021182e52fe0, "x86/mm: Enable KASLR for physical mapping memory regions", v4.8) have a fixed
    base and no such variable, and then direct_map_offset() answers. KcoreError when neither does.
    """
    if page_offset_base is not None:
        value = kcore.read_pointer(page_offset_base, PAGE_OFFSET_BASE)
        if value < KERNEL_HALF or value % GIB:
            raise KcoreError(f"{PAGE_OFFSET_BASE} reads 0x{value:x}, not a direct-map base")
        return value
    found = direct_map_offset(kcore.loads)
    if found is None:
        raise KcoreError(f"{kcore.path} maps no direct-map memory to find page_offset from")
    return found
