# SPDX-License-Identifier: GPL-2.0-only
"""Fake /proc and /sys trees: real files in the layout the kernel uses, under a temporary root.

Every test that needs a system view builds one of these and points crashhpd's
`root` at it, the same way a test guest or the sandbox does.
"""

import struct
from pathlib import Path

from repo_paths import IOMEM_FIXTURES

from crashhpd.sysview.kernel_state import KernelState, read_kernel_state

DEFAULT_VMCOREINFO = "0x0000000100c66000 1024\n"  # 1024 is hex: 4132 bytes
DEFAULT_KALLSYMS = (
    "ffffffff81000000 T _text\n"
    "ffffffff81000000 T _stext\n"
    "ffffffff82209988 T _etext\n"
    "ffffffff84a00000 B _end\n"
)
BLOCK = 0x8000000  # 128 MiB: one x86_64 memory block, the unit of a hot-add
VIRTIO_MEM = (IOMEM_FIXTURES / "virtio-mem.txt").read_text()
VIRTIO_MEM_NEXT = 0x350000000  # virtio1's next block after the last one the virtio-mem fixture has plugged
QEMU_GUEST = (IOMEM_FIXTURES / "qemu-kvm-crashkernel.txt").read_text()
QEMU_HOT_ADD_BASE = 0x440000000  # just above the QEMU guest fixture's last System RAM
NOTES_BASE = 0x13FC17000  # where CPU 0's crash_notes live in the fake trees
NOTES_STRIDE = 0x1000


def note_addr(cpu: int) -> int:
    return NOTES_BASE + cpu * NOTES_STRIDE


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def hot_added(fixture: str, blocks: int, base: int, *, stride: int = BLOCK, indent: str = "",
              name: str = "System RAM") -> str:
    """`fixture` (a /proc/iomem text) and `blocks` hot-added 128 MiB ranges after it, from `base` on, `stride` apart.

    `indent` nests them under the fixture's last top-level resource (a
    virtio-mem device holds its blocks as children), as /proc/iomem does.
    """
    return fixture + "".join(f"{indent}{base + i * stride:x}-{base + i * stride + BLOCK - 1:x} : {name}\n"
                             for i in range(blocks))


def virtio_mem_plugged(blocks: int, fixture: str = VIRTIO_MEM) -> str:
    """The virtio-mem guest with `blocks` more blocks plugged into virtio1 after the ones it booted with."""
    return hot_added(fixture, blocks, VIRTIO_MEM_NEXT, indent="  ", name="System RAM (virtio_mem)")


def replace_iomem(root: Path, text: str) -> None:
    """A new /proc/iomem for the tree in one rename: the kernel's is never seen half-written either."""
    temp = root / "proc/.iomem.new"
    temp.write_text(text)
    temp.replace(root / "proc/iomem")


def make_tree(
    root: Path,
    iomem: str,
    *,
    possible: str = "0-3",
    present: str | None = None,
    online: str | None = None,
    notes: dict[int, tuple[int, int | None]] | None = None,
    vmcoreinfo: str | None = DEFAULT_VMCOREINFO,
    kallsyms: str | None = DEFAULT_KALLSYMS,
    kernel_max: int = 63,
    memory_blocks: int = 0,
    block_size: int = BLOCK,
    extra: dict[str, str] | None = None,
) -> Path:
    """A root whose proc/ and sys/ hold what crashhpd reads.

    `notes` maps CPU -> (crash_notes address, crash_notes_size or None for no
    size file); by default every present CPU has a 368-byte note at
    note_addr(cpu). `extra` writes any further file, path relative to root.
    """
    from crashhpd.sysview.cpulist import parse

    present = present if present is not None else possible
    online = online if online is not None else present
    write(root, "proc/iomem", iomem)
    if kallsyms is not None:
        write(root, "proc/kallsyms", kallsyms)
    cpu = "sys/devices/system/cpu"
    write(root, f"{cpu}/possible", possible + "\n")
    write(root, f"{cpu}/present", present + "\n")
    write(root, f"{cpu}/online", online + "\n")
    write(root, f"{cpu}/kernel_max", f"{kernel_max}\n")
    if notes is None:
        notes = {n: (note_addr(n), 368) for n in parse(present, "present")}
    for n in parse(present, "present"):
        (root / cpu / f"cpu{n}").mkdir(parents=True, exist_ok=True)
    for n, (addr, size) in notes.items():
        write(root, f"{cpu}/cpu{n}/crash_notes", f"{addr:x}\n")
        if size is not None:
            write(root, f"{cpu}/cpu{n}/crash_notes_size", f"{size}\n")
    if vmcoreinfo is not None:
        write(root, "sys/kernel/vmcoreinfo", vmcoreinfo)
    mem = "sys/devices/system/memory"
    write(root, f"{mem}/block_size_bytes", f"{block_size:x}\n")
    for n in range(memory_blocks):
        write(root, f"{mem}/memory{n}/state", "online\n")
        write(root, f"{mem}/memory{n}/phys_index", f"{n:08x}\n")
    for rel, text in (extra or {}).items():
        write(root, rel, text)
    return root


def kcore(loads: list[tuple[int, int, int]]) -> bytes:
    """A /proc/kcore with one PT_LOAD per (vaddr, paddr, size): its program headers, which is all that is read.

    Linux lists the kernel text (KCORE_TEXT, _text to _end) first, then vmalloc, modules and the
    direct map.
    """
    out = struct.pack("<16sHHIQQQIHHHHHH", b"\x7fELF\x02\x01\x01" + bytes(9), 4, 62, 1, 0, 64, 0, 0, 64, 56,
                      len(loads), 0, 0, 0)
    offset = 0x1000
    for vaddr, paddr, size in loads:
        out += struct.pack("<IIQQQQQQ", 1, 7, offset, vaddr, paddr, size, size, 0x1000)
        offset += size
    return out


def kernel(root: Path | str) -> KernelState:
    """The tree's kexec state as a snapshot reads it now: what the daemon hands its backend."""
    return read_kernel_state(str(root))


NO_KEXEC = KernelState(None, None, None, None, None, None, None, None)  # a kernel without kexec at all
