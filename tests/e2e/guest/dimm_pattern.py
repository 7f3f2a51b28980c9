# SPDX-License-Identifier: GPL-2.0-only
"""A known pattern in a hot-added DIMM, written in the first kernel and looked for in /proc/vmcore.

Debian's kernels refuse /dev/mem over RAM (CONFIG_STRICT_DEVMEM, CONFIG_IO_STRICT_DEVMEM on 6.1 and
6.12), so the pattern is written from user space: anonymous pages are faulted in while the DIMM is the
highest zone with free pages (ZONE_NORMAL or ZONE_MOVABLE above the guest's 1 GiB of ZONE_DMA32, where
a user page is taken first), /proc/self/pagemap (root sees the PFNs) says which landed in the DIMM,
and those get the pattern. They are mlocked, with compaction of locked pages and proactive compaction
off and no huge pages, so the kernel has no reason to move them; `moved` checks that it did not, just
before the crash. Each page's bytes depend on a random seed and its own physical address: a read of the
wrong page, of stale or of zeroed memory cannot match. In the kdump kernel the same pages are read at
their physical addresses through the PT_LOADs of /proc/vmcore.
"""

import errno
import hashlib
import os
from collections.abc import Iterator
from typing import Any

PAGE = 4096
ALLOCATE = 16 << 20  # faulted in; the pages of it in the DIMM get the pattern
WANTED = 1024  # pages (4 MiB) of pattern at most
LEAST = 256  # fewer pages in the DIMM than this fails the case: the pattern would prove little
PFN_MASK = (1 << 55) - 1
PRESENT = 1 << 63
SYSCTLS = {"/proc/sys/vm/compact_unevictable_allowed": "0", "/proc/sys/vm/compaction_proactiveness": "0"}

_kept: list[tuple[Any, int, list[int]]] = []  # the pattern's mapping, its address and its pages' PFNs


def page_bytes(seed: bytes, address: int) -> bytes:
    return hashlib.sha256(seed + address.to_bytes(8, "little")).digest() * (PAGE // 32)


def runs(addresses: list[int]) -> list[list[int]]:
    """Sorted page addresses as [first address, pages] runs: a short line for the channel."""
    out: list[list[int]] = []
    for address in sorted(addresses):
        if out and out[-1][0] + out[-1][1] * PAGE == address:
            out[-1][1] += 1
        else:
            out.append([address, 1])
    return out


def pages(spans: list[list[int]]) -> Iterator[int]:
    for first, count in spans:
        yield from range(first, first + count * PAGE, PAGE)


def _pfns(address: int, count: int) -> list[int]:
    """The PFN of each page of [address, address + count pages); -1 where none is present."""
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(address // PAGE * 8)
        raw = f.read(count * 8)
    entries = (int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8))
    return [e & PFN_MASK if e & PRESENT else -1 for e in entries]


def write(start: int, size: int) -> dict[str, Any]:
    """The pattern in up to WANTED pages of [start, start + size): where, its seed, the sha256 of its bytes."""
    import ctypes  # the first kernel's archive only: the kdump kernel's has no ctypes
    import mmap
    for path, value in SYSCTLS.items():
        with open(path, "w") as f:
            f.write(value)
    area = mmap.mmap(-1, ALLOCATE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    area.madvise(mmap.MADV_NOHUGEPAGE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(area))
    for offset in range(0, ALLOCATE, PAGE):
        area[offset] = 1  # fault it in
    if ctypes.CDLL(None, use_errno=True).mlock(ctypes.c_void_p(address), ctypes.c_size_t(ALLOCATE)) != 0:
        raise OSError(ctypes.get_errno(), "mlock")
    frames = _pfns(address, ALLOCATE // PAGE)
    landed = sorted((pfn * PAGE, index) for index, pfn in enumerate(frames)
                    if pfn >= 0 and start <= pfn * PAGE < start + size)
    if len(landed) < LEAST:
        raise RuntimeError(f"only {len(landed)} of {len(frames)} fresh pages landed in {start:#x}+{size:#x}")
    inside = landed[:WANTED]
    seed = os.urandom(16)
    digest = hashlib.sha256()
    for physical, index in inside:
        data = page_bytes(seed, physical)
        area[index * PAGE:(index + 1) * PAGE] = data
        digest.update(data)
    _kept.append((area, address, frames))
    return {"pages": runs([p for p, _ in inside]), "count": len(inside), "seed": seed.hex(),
            "sha256": digest.hexdigest(), "allocated": len(frames), "landed": len(landed)}


def moved() -> int:
    """How many of the pattern's pages the kernel has moved since they were written (0: none)."""
    return sum(sum(a != b for a, b in zip(frames, _pfns(address, len(frames)), strict=True))
               for _, address, frames in _kept)


def read(segments: list[dict[str, Any]], spans: list[list[int]]) -> dict[str, Any]:
    """The pattern's pages read from /proc/vmcore at their physical addresses: how many a PT_LOAD covers,
    how many read, the errors, and the sha256 of what read (None unless every page did)."""
    loads = sorted((s["paddr"], s["paddr"] + s["filesz"], s["offset"]) for s in segments if s["type"] == "PT_LOAD")
    digest, covered, read_ok, errors = hashlib.sha256(), 0, 0, dict[str, int]()
    with open("/proc/vmcore", "rb", buffering=0) as f:
        for address in pages(spans):
            load = next((ld for ld in loads if ld[0] <= address and address + PAGE <= ld[1]), None)
            if load is None:
                continue
            covered += 1
            f.seek(load[2] + address - load[0])
            try:
                data = f.read(PAGE)
            except OSError as err:  # EFAULT: the kdump kernel took the DIMM as its own RAM
                name = errno.errorcode.get(err.errno or 0, str(err.errno))
                errors[name] = errors.get(name, 0) + 1
                continue
            read_ok += len(data) == PAGE
            digest.update(data)
    total = sum(count for _, count in spans)
    return {"pages": total, "covered": covered, "read": read_ok, "errors": errors,
            "sha256": digest.hexdigest() if read_ok == total else None}
