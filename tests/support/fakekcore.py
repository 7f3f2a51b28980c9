# SPDX-License-Identifier: GPL-2.0-only
"""A fake running kernel with a crash image loaded: a /proc/kcore, a kallsyms and a BTF blob under a root.

- `FakeKcore` writes an ELF64 core file like /proc/kcore: PT_LOADs that map
  kernel virtual addresses to (sparse) file offsets; it writes into the file
  by virtual address.
- `CrashKernel` puts it together: the kernel image mapping holding
  `kexec_crash_image` (and `page_offset_base`), the direct map holding the
  struct kimage and the crash kernel's segments, one of which holds a header.
"""

from dataclasses import dataclass, field
from pathlib import Path

from fakebtf import DEBIAN_LAYOUT, kimage_btf
from faketree import write

from crashhpd.abi.elf import EHDR, PHDR, PT_LOAD, PT_NOTE
from crashhpd.abi.x86_64 import PAGE_OFFSET_BASE_L4
from crashhpd.sysview.btf import Field
from crashhpd.sysview.loaded_header import KimageLayout


def debian_layout() -> KimageLayout:
    """The layout kimage_btf() encodes, written out by hand."""
    d = DEBIAN_LAYOUT
    return KimageLayout(nr_segments=Field(*d["nr_segments"], 0), segments_at=d["segments_at"],
                        segment_size=d["segment_size"], max_segments=d["max_segments"],
                        bufsz=Field(*d["bufsz"], 0), mem=Field(*d["mem"], 0), memsz=Field(*d["memsz"], 0))


@dataclass
class FakeKcore:
    """An ELF64 core file like /proc/kcore: a PT_NOTE, then PT_LOADs at page-aligned, sparse file offsets."""

    path: Path
    loads: list[tuple[int, int, int]] = field(default_factory=list)  # (vaddr, paddr, size)
    _offsets: list[int] = field(default_factory=list)

    def add(self, vaddr: int, paddr: int, size: int) -> None:
        self.loads.append((vaddr, paddr, size))

    def write(self) -> None:
        phnum = 1 + len(self.loads)
        at = _page_up(EHDR.size + PHDR.size * phnum + 4096)
        self._offsets = []
        phdrs = [PHDR.pack(PT_NOTE, 0, EHDR.size + PHDR.size * phnum, 0, 0, 16, 16, 4)]
        for vaddr, paddr, size in self.loads:
            self._offsets.append(at)
            phdrs.append(PHDR.pack(PT_LOAD, 7, at, vaddr, paddr, size, size, 4096))
            at = _page_up(at + size)
        ehdr = EHDR.pack(b"\x7fELF\x02\x01\x01" + bytes(9), 4, 62, 1, 0, EHDR.size, 0, 0, EHDR.size, PHDR.size,
                         phnum, 0, 0, 0)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "wb") as f:
            f.write(ehdr + b"".join(phdrs) + b"CORE\0\0\0\0" + bytes(8))
            f.truncate(at)

    def offset_of(self, vaddr: int) -> int:
        for (start, _paddr, size), offset in zip(self.loads, self._offsets):
            if start <= vaddr < start + size:
                return offset + vaddr - start
        raise ValueError(f"0x{vaddr:x} is not in the fake kcore")

    def poke(self, vaddr: int, data: bytes) -> None:
        with open(self.path, "r+b") as f:
            f.seek(self.offset_of(vaddr))
            f.write(data)


def _page_up(n: int) -> int:
    return (n + 4095) // 4096 * 4096


TEXT = 0xFFFFFFFF81000000
TEXT_PHYS = 0x1000000
IMAGE_SYMBOL_AT = 0x3A5E6A8  # from _text: kexec_crash_image, in .bss
PAGE_OFFSET_BASE_AT = 0x2812818  # from _text: page_offset_base, in .data
RAM_LOW = (0x1000, 0x9FFFF)
RAM = (0x100000, 0x3FFFFFFF)  # 1 GiB: the crash kernel range and the kimage lie inside
KIMAGE_PHYS = 0x3F001000
CRASH_BASE = 0x2A000000
HEADER_MEM = 0x34000000  # where the elfcorehdr segment starts, inside the crash kernel range
VMALLOC = 0xFFFFC90000000000


def segments(bufsz: int, memsz: int, mem: int = HEADER_MEM) -> list[tuple[int, int, int, int]]:
    """(buf, bufsz, mem, memsz) of a crash image's segments, the elfcorehdr's last, as kexec_load leaves them."""
    user = 0x7F3A5C000000  # buf: the loader's own buffers, meaningless after the load
    return [
        (user, 0x1000, CRASH_BASE + 0x2FF0000, 0x1000),  # purgatory's data: zeros
        (user + 0x100000, 0x400, CRASH_BASE, 0x1000000),  # the kernel: starts with MZ
        (user + 0x200000, 0x200, CRASH_BASE + 0x1000000, 0x1000),  # an ELF file, but no core header
        (user + 0x300000, 0x1000, 0x7F000000, 0x1000),  # memory kcore does not map
        (user + 0x400000, bufsz, mem, memsz),
    ]


@dataclass
class CrashKernel:
    """A loaded crash image under `root`: what the reader finds through kallsyms, BTF and kcore."""

    root: Path
    text: int = TEXT
    page_offset: int = PAGE_OFFSET_BASE_L4
    btf: bytes | None = None
    layout: KimageLayout = field(default_factory=debian_layout)
    list_page_offset_base: bool = True
    ram: tuple[tuple[int, int], ...] = (RAM_LOW, RAM)  # the direct map's PT_LOADs, physical (start, end)
    kcore: FakeKcore = field(init=False)

    @property
    def image_symbol(self) -> int:
        return self.text + IMAGE_SYMBOL_AT

    @property
    def kimage(self) -> int:
        return self.page_offset + KIMAGE_PHYS

    def install(self, header: bytes, memsz: int, bufsz: int | None = None) -> "CrashKernel":
        """Kallsyms, BTF and a kcore in which the crash image is loaded with `header` in a memsz-byte segment."""
        lines = [f"{self.text:016x} T _text", f"{self.text + 0x100000:016x} T _stext"]
        if self.list_page_offset_base:
            lines.append(f"{self.text + PAGE_OFFSET_BASE_AT:016x} D page_offset_base")
        lines += [f"{0xFFFFFFFFC0A1B000:016x} b kexec_crash_image\t[decoy]",  # a module's: never the kernel's
                  f"{self.image_symbol:016x} B kexec_crash_image", f"{self.text + 0x3A5E6B0:016x} B kexec_image",
                  f"{self.text + 0x4A00000:016x} B _end"]
        write(self.root, "proc/kallsyms", "\n".join(lines) + "\n")
        blob = self.btf if self.btf is not None else kimage_btf()
        (self.root / "sys/kernel/btf").mkdir(parents=True, exist_ok=True)
        (self.root / "sys/kernel/btf/vmlinux").write_bytes(blob)
        self.kcore = FakeKcore(self.root / "proc/kcore")
        self.kcore.add(self.text, TEXT_PHYS, 0x4000000)
        self.kcore.add(VMALLOC, 0xFFFFFFFFFFFFFFFF, 0x10000)
        for start, end in self.ram:
            self.kcore.add(self.page_offset + start, start, end - start + 1)
        return self.fill(header, memsz, bufsz)

    def fill(self, header: bytes, memsz: int, bufsz: int | None = None) -> "CrashKernel":
        """(Re)write the kcore with its loads as they are now, and load the image into it."""
        self.kcore.write()
        self.kcore.poke(self.text + PAGE_OFFSET_BASE_AT, self.page_offset.to_bytes(8, "little"))
        self.set_segments(segments(bufsz if bufsz is not None else len(header), memsz))
        self.poke_phys(CRASH_BASE, b"MZ\x90\x00")
        self.poke_phys(CRASH_BASE + 0x1000000, b"\x7fELF\x02\x01\x01" + bytes(9) + (2).to_bytes(2, "little"))
        self.set_header(header)
        self.set_pointer(self.kimage)
        return self

    def poke_phys(self, paddr: int, data: bytes) -> None:
        self.kcore.poke(self.page_offset + paddr, data)

    def set_pointer(self, value: int) -> None:
        self.kcore.poke(self.image_symbol, value.to_bytes(8, "little"))

    def set_header(self, header: bytes) -> None:
        self.poke_phys(HEADER_MEM, header)

    def set_segments(self, segments: list[tuple[int, int, int, int]], count: int | None = None) -> None:
        """(buf, bufsz, mem, memsz) per segment, written into the kimage at the layout's offsets."""
        lay = self.layout
        data = bytearray(lay.span)
        n = len(segments) if count is None else count
        data[lay.nr_segments.offset:lay.nr_segments.offset + lay.nr_segments.size] = \
            n.to_bytes(lay.nr_segments.size, "little")
        for i, (buf, bufsz, mem, memsz) in enumerate(segments):
            base = lay.segments_at + i * lay.segment_size
            data[base:base + 8] = buf.to_bytes(8, "little")
            for where, value in ((lay.bufsz, bufsz), (lay.mem, mem), (lay.memsz, memsz)):
                data[base + where.offset:base + where.offset + where.size] = value.to_bytes(where.size, "little")
        self.kcore.poke(self.kimage, bytes(data))
