# SPDX-License-Identifier: GPL-2.0-only
"""zstd and lz4 streams of an initramfs, decompressed by their own tools: Python 3.11's library has neither.

The kernel decompresses one stream and goes on after it (the next archive, or NUL padding), so
the stream's end must be found before a tool sees it: the frames are walked (zstd's format,
RFC 8878 section 3.1; lz4's legacy format, the one the kernel's lib/decompress_unlz4.c reads) and
exactly their bytes go to `zstd -dc` or `lz4 -dc`, a chunk at a time through pipes that a
selector drives, so neither side can fill up and stall the other.
"""

import os
import selectors
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Protocol

CHUNK = 1 << 20
IDLE_S = 30.0  # a tool that neither reads nor writes for this long is stuck
ZSTD_MAGIC = 0xFD2FB528
SKIPPABLE, SKIPPABLE_MASK = 0x184D2A50, 0xFFFFFFF0
LZ4_LEGACY_MAGIC = 0x184C2102
LZ4_LEGACY_MAX_BLOCK = 8 << 20  # lz4's legacy blocks hold 8 MiB; compressed, at most its bound
LZ4_BOUND = LZ4_LEGACY_MAX_BLOCK + LZ4_LEGACY_MAX_BLOCK // 255 + 16


class Raw(Protocol):
    """What initramfs._Stream offers: exact reads, a look ahead."""

    def peek(self, size: int) -> bytes: ...

    def read(self, size: int, what: str) -> bytes: ...


class InitrdError(Exception):
    """The initramfs cannot be read to its end; the text is the reason."""


def _u32(data: bytes) -> int:
    return int.from_bytes(data[:4], "little")


def _copy(raw: Raw, size: int, what: str) -> Iterator[bytes]:
    while size:
        step = min(size, CHUNK)
        yield raw.read(step, what)
        size -= step


def zstd_frames(raw: Raw) -> Iterator[bytes]:
    """The bytes of the zstd frames that start here, up to the first thing that is not one."""
    while len(head := raw.peek(4)) == 4:
        magic = _u32(head)
        if magic & SKIPPABLE_MASK == SKIPPABLE:
            header = raw.read(8, "a zstd skippable frame")
            yield header
            yield from _copy(raw, _u32(header[4:]), "a zstd skippable frame")
            continue
        if magic != ZSTD_MAGIC:
            return
        header = raw.read(5, "a zstd frame header")
        descriptor = header[4]
        single_segment = descriptor >> 5 & 1
        size = (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3] \
            + ((1 if single_segment else 0), 2, 4, 8)[descriptor >> 6]
        yield header + raw.read(size, "a zstd frame header")
        while True:
            block = raw.read(3, "a zstd block header")
            value = int.from_bytes(block, "little")
            kind = value >> 1 & 3
            if kind == 3:
                raise InitrdError("a zstd block has the reserved type 3")
            yield block
            yield from _copy(raw, 1 if kind == 1 else value >> 3, "a zstd block")
            if value & 1:
                break
        if descriptor & 4:
            yield raw.read(4, "a zstd frame's checksum")


def lz4_blocks(raw: Raw) -> Iterator[bytes]:
    """The bytes of lz4 legacy frames that start here: blocks behind a 4-byte size, up to one that cannot be."""
    while len(head := raw.peek(4)) == 4:
        size = _u32(head)
        if size == LZ4_LEGACY_MAGIC:
            yield raw.read(4, "an lz4 frame")
            continue
        if not 0 < size <= LZ4_BOUND:
            return
        yield raw.read(4, "an lz4 block")
        yield from _copy(raw, size, "an lz4 block")


FRAMES: dict[str, Callable[[Raw], Iterator[bytes]]] = {"zstd": zstd_frames, "lz4": lz4_blocks}


def external(tool: str) -> Callable[[Raw], Iterator[bytes]]:
    """A decompressor that runs `tool -dc` on exactly the stream's frames."""
    def run(raw: Raw) -> Iterator[bytes]:
        binary = shutil.which(tool)
        if binary is None:
            raise InitrdError(f"{tool} is not installed: a {tool}-compressed initramfs cannot be read")
        proc = subprocess.Popen([binary, "-dc"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        try:
            yield from _pump(proc, FRAMES[tool](raw), tool)
            if proc.wait(timeout=IDLE_S) != 0:
                raise InitrdError(f"{tool} -dc exited with status {proc.returncode}: the stream is corrupt")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return run


def _pump(proc: subprocess.Popen[bytes], pieces: Iterator[bytes], tool: str) -> Iterator[bytes]:
    """Write the pieces to the tool while yielding what it writes, until it closes its output."""
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin.fileno(), proc.stdout.fileno()
    os.set_blocking(stdin, False)
    pending: bytes | None = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        while True:
            while pending == b"":
                pending = next(pieces, None)
                if pending is None:
                    proc.stdin.close()
                elif pending:
                    selector.register(stdin, selectors.EVENT_WRITE)
            ready = selector.select(IDLE_S)
            if not ready:
                raise InitrdError(f"{tool} -dc did nothing for {IDLE_S:g} s")
            for key, _events in ready:
                if key.fd == stdout:
                    data = os.read(stdout, CHUNK)
                    if not data:
                        return
                    yield data
                elif pending:
                    try:
                        pending = pending[os.write(stdin, pending[:CHUNK]):]
                    except BrokenPipeError:
                        raise InitrdError(f"{tool} -dc stopped reading: the stream is corrupt") from None
                    if not pending:
                        selector.unregister(stdin)
