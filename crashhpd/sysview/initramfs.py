# SPDX-License-Identifier: GPL-2.0-only
"""Which kernel modules an initramfs holds: newc cpio archives, each plain or compressed, one after another.

The kernel unpacks an initrd as init/initramfs.c's unpack_to_rootfs() does: NUL padding is skipped,
"070701"/"070702" starts a cpio archive, anything else is a compressed stream found by its magic
(lib/decompress.c), and after one archive or stream the next may follow (early microcode, then the
main archive). Only names are kept, and the text of modules.builtin: file data is decompressed and
dropped a chunk at a time, so memory stays bounded whatever the image holds, and every limit crossed
or byte that makes no sense is an InitrdError with a one-line reason. gzip, xz, lzma and bzip2 come
from the standard library; zstd (Debian's mkinitramfs default) and lz4 from their own tools (initrd_tools.py).
"""

import bz2
import lzma
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .initrd_tools import InitrdError, external
from .ranges import size_text

CHUNK = 1 << 20  # bytes decompressed or skipped at a time
MAX_UNPACKED = 4 << 30  # bytes of archive walked before giving up: no kdump initramfs is near it
MAX_MEMBERS = 500_000
MAX_NAME = 4096  # PATH_MAX, the kernel's own limit on a cpio name (init/initramfs.c, N_ALIGN(PATH_MAX))
MAX_BUILTIN = 1 << 20  # bytes of one modules.builtin kept to read
NEWC_HEADER = 110
_MODULE = re.compile(r"(?:usr/)?lib/modules/([^/]+)/.*?([^/]+)\.ko(?:\.(?:xz|zst|gz))?")
_NOT_NUL = re.compile(b"[^\\x00]")
_BUILTIN = re.compile(r"(?:usr/)?lib/modules/([^/]+)/modules\.builtin")


@dataclass(slots=True)
class Listing:
    """What the archives hold, as far as module loading goes."""

    modules: set[str] = field(default_factory=set)  # module names (- as _) of every .ko under lib/modules/
    builtin: set[str] = field(default_factory=set)  # module names that modules.builtin lists: in the kernel itself
    versions: set[str] = field(default_factory=set)  # the kernel releases that lib/modules/ names
    formats: list[str] = field(default_factory=list)  # each archive's compression, in order ("cpio": none)
    members: int = 0


def module_name(path: str) -> str:
    """kmod's rule: a module's name is its file name without .ko, with every - read as _."""
    return path.rsplit("/", 1)[-1].split(".ko", 1)[0].replace("-", "_")


class _Stream:
    """Bytes pulled from an iterator of chunks, with reads of exact sizes and pushed-back leftovers.

    The buffer is read from an offset, not sliced on every read: a header of 110 bytes must not copy
    the megabyte behind it.
    """

    def __init__(self, chunks: Iterator[bytes], limit: int, what: str) -> None:
        self._chunks = chunks
        self._buffer, self._at = b"", 0
        self._limit, self._what = limit, what
        self.taken = 0  # bytes pulled from the iterator

    def _left(self) -> int:
        return len(self._buffer) - self._at

    def _fill(self, size: int) -> None:
        while self._left() < size:
            chunk = next(self._chunks, b"")
            if not chunk:
                return
            self.taken += len(chunk)
            if self.taken > self._limit:
                raise InitrdError(f"{self._what} goes on past {size_text(self._limit)}")
            self._buffer, self._at = self._buffer[self._at:] + chunk, 0

    def peek(self, size: int) -> bytes:
        self._fill(size)
        return self._buffer[self._at:self._at + size]

    def read(self, size: int, what: str) -> bytes:
        self._fill(size)
        if self._left() < size:
            raise InitrdError(f"the archive ends inside {what}")
        self._at += size
        return self._buffer[self._at - size:self._at]

    def skip(self, size: int, what: str) -> None:
        while size:
            self._fill(1)
            step = min(size, self._left())
            if step == 0:
                raise InitrdError(f"the archive ends inside {what}")
            self._at += step
            size -= step

    def skip_nuls(self) -> None:
        while True:
            self._fill(1)
            found = _NOT_NUL.search(self._buffer, self._at)
            if found is not None:
                self._at = found.start()
                return
            if not self._left():
                return
            self._buffer, self._at = b"", 0

    def chunk(self) -> bytes:
        """Whatever comes next, at most CHUNK bytes; b"" at the end."""
        self._fill(1)
        step = min(CHUNK, self._left())
        self._at += step
        return self._buffer[self._at - step:self._at]

    def push_back(self, data: bytes) -> None:
        self._buffer, self._at = data + self._buffer[self._at:], 0


class _Zlib:
    """zlib's decompressor as lzma's and bz2's behave: input it could not take is kept, not handed back."""

    def __init__(self) -> None:
        self._engine = zlib.decompressobj(16 + zlib.MAX_WBITS)

    @property
    def eof(self) -> bool:
        return self._engine.eof

    @property
    def needs_input(self) -> bool:
        return not self._engine.unconsumed_tail

    @property
    def unused_data(self) -> bytes:
        return self._engine.unused_data

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return self._engine.decompress(self._engine.unconsumed_tail + data, max_length)


Engine = _Zlib | lzma.LZMADecompressor | bz2.BZ2Decompressor
Decompressor = Callable[[_Stream], Iterator[bytes]]


def _stdlib(make: Callable[[], Engine], name: str) -> Decompressor:
    """A standard library decompressor fed a chunk at a time; what follows its stream is given back."""
    def run(raw: _Stream) -> Iterator[bytes]:
        engine = make()
        while not engine.eof:
            data = raw.chunk() if engine.needs_input else b""
            try:
                out = engine.decompress(data, CHUNK)
            except (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError) as err:
                raise InitrdError(f"the {name} stream is corrupt: {err}") from None
            if not out and not data and engine.needs_input and not engine.eof:
                raise InitrdError(f"the {name} stream ends early")
            if out:
                yield out
        raw.push_back(engine.unused_data)
    return run


# lib/decompress.c's compressed_formats: the magic each stream starts with
FORMATS: tuple[tuple[bytes, str, Decompressor], ...] = (
    (b"\x1f\x8b", "gzip", _stdlib(_Zlib, "gzip")),
    (b"\x1f\x9e", "gzip", _stdlib(_Zlib, "gzip")),
    (b"\xfd7zXZ\x00", "xz", _stdlib(lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ), "xz")),
    (b"\x5d\x00\x00", "lzma", _stdlib(lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE), "lzma")),
    (b"BZh", "bzip2", _stdlib(bz2.BZ2Decompressor, "bzip2")),
    (b"\x28\xb5\x2f\xfd", "zstd", external("zstd")),
    (b"\x02\x21\x4c\x18", "lz4", external("lz4")),
)


def list_initramfs(chunks: Iterator[bytes], size_limit: int) -> Listing:
    """Every archive of an initrd whose bytes come as `chunks` (at most `size_limit` of them)."""
    listing = Listing()
    raw = _Stream(chunks, size_limit, "the initrd")
    while True:
        raw.skip_nuls()
        head = raw.peek(6)
        if not head:
            return listing
        if head.startswith(b"07070"):
            listing.formats.append("cpio")
            _archives(raw, listing)
            continue
        found = next(((name, run) for magic, name, run in FORMATS if head.startswith(magic)), None)
        if found is None:
            raise InitrdError(f"bytes {head.hex()} after {raw.taken} bytes start no cpio archive and no "
                              "compressed stream the kernel knows")
        listing.formats.append(found[0])
        inner = _Stream(found[1](raw), MAX_UNPACKED, f"the {found[0]} stream")
        _archives(inner, listing, nested=True)
        if inner.chunk():
            raise InitrdError(f"the {found[0]} stream holds bytes after its archives")


def _archives(stream: _Stream, listing: Listing, nested: bool = False) -> None:
    """cpio archives one after another; plain ones end at their trailer, a stream's at its end."""
    while True:
        stream.skip_nuls()
        head = stream.peek(6)
        if not head:
            return
        if not head.startswith(b"07070"):
            if nested:
                raise InitrdError(f"bytes {head.hex()} inside a compressed stream start no cpio archive")
            return
        if not _member(stream, listing) and not nested:
            return


def _member(stream: _Stream, listing: Listing) -> bool:
    """One newc member; False at the trailer."""
    header = stream.read(NEWC_HEADER, "a cpio header")
    if header[:6] not in (b"070701", b"070702"):
        raise InitrdError(f"a cpio header starts {header[:6]!r}, not 070701 (newc)")
    try:
        fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
    except ValueError:
        raise InitrdError("a cpio header holds a field that is not hex") from None
    filesize, namesize = fields[6], fields[11]
    if not 0 < namesize <= MAX_NAME:
        raise InitrdError(f"a cpio member's name is {namesize} bytes, not 1 to {MAX_NAME}")
    raw_name = stream.read(namesize, "a cpio name")
    stream.skip(-(NEWC_HEADER + namesize) % 4, "a cpio name's padding")
    name = raw_name.rstrip(b"\0").decode("utf-8", "replace").removeprefix("./").lstrip("/")
    if name == "TRAILER!!!":
        return False
    listing.members += 1
    if listing.members > MAX_MEMBERS:
        raise InitrdError(f"the initramfs holds more than {MAX_MEMBERS} files")
    mode = fields[1] & 0o170000
    if mode == 0o100000 and _BUILTIN.fullmatch(name) and filesize <= MAX_BUILTIN:
        text = stream.read(filesize, name).decode("utf-8", "replace")
        listing.builtin.update(module_name(line.strip()) for line in text.splitlines() if line.strip())
    else:
        stream.skip(filesize, name)
    stream.skip(-filesize % 4, f"{name}'s padding")
    found = _MODULE.fullmatch(name)
    if found is not None and mode in (0o100000, 0o120000):
        listing.modules.add(module_name(name))
    if (kernel := re.match(r"(?:usr/)?lib/modules/([^/]+)/", name)) is not None:
        listing.versions.add(kernel.group(1))
    return True
