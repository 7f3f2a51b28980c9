# SPDX-License-Identifier: GPL-2.0-only
"""Raw BTF blobs as the kernel encodes them (include/uapi/linux/btf.h), for the BTF and loaded-header tests.

`BtfBuilder` appends types one by one, on its own or after a real blob's;
`kimage_btf()` encodes struct kimage and struct kexec_segment as Debian's
6.1 and 6.12 kernels lay them out (nr_segments at 56, segment[16] at 64,
32 bytes each), among decoys and a type of every kind.
"""

import struct

from crashhpd.sysview import btf as k
from crashhpd.sysview.btf import Btf

BTF_HEADER = struct.Struct("<HBBIIIII")


class BtfBuilder:
    """Types appended one by one; each method returns the new type's id."""

    def __init__(self, base: bytes | None = None) -> None:
        self.types = bytearray()
        self.strings = bytearray(b"\0")
        self.next_id = 1
        if base is not None:  # continue a real blob: its types keep their ids, ours follow
            _magic, _v, _f, hdr_len, type_off, type_len, str_off, str_len = BTF_HEADER.unpack_from(base)
            self.types += base[hdr_len + type_off:hdr_len + type_off + type_len]
            self.strings = bytearray(base[hdr_len + str_off:hdr_len + str_off + str_len])
            self.next_id = Btf.parse(base).count + 1

    def name(self, text: str) -> int:
        if not text:
            return 0
        at = len(self.strings)
        self.strings += text.encode() + b"\0"
        return at

    def add(self, name: str, kind: int, vlen: int, size_or_type: int, trailer: tuple[int, ...] | list[int] = (),
            kind_flag: bool = False) -> int:
        info = (int(kind_flag) << 31) | (kind << 24) | vlen
        self.types += struct.pack(f"<3I{len(trailer)}I", self.name(name), info, size_or_type, *trailer)
        self.next_id += 1
        return self.next_id - 1

    def int(self, name: str, size: int, signed: bool = False, bits: int | None = None, shift: int = 0) -> int:
        return self.add(name, k.INT, 0, size, [(int(signed) << 24) | (shift << 16) | (bits or size * 8)])

    def ptr(self, to: int) -> int:
        return self.add("", k.PTR, 0, to)

    def modifier(self, kind: int, to: int, name: str = "") -> int:
        return self.add(name, kind, 0, to)

    def typedef(self, name: str, to: int) -> int:
        return self.add(name, k.TYPEDEF, 0, to)

    def array(self, elem: int, nelems: int, index: int) -> int:
        return self.add("", k.ARRAY, 0, 0, [elem, index, nelems])

    def struct(self, name: str, size: int, members: list[tuple], union: bool = False,
               kind_flag: bool = False) -> int:
        """members: (name, type, bit_offset) or, with kind_flag, (name, type, bit_offset, bitfield_size)."""
        words = []
        for m in members:
            offset = (m[3] << 24 | m[2]) if kind_flag and len(m) > 3 else m[2]
            words += [self.name(m[0]), m[1], offset]
        return self.add(name, k.UNION if union else k.STRUCT, len(members), size, words, kind_flag)

    def fwd(self, name: str) -> int:
        return self.add(name, k.FWD, 0, 0)

    def every_other_kind(self, int_id: int) -> None:
        """One type of each kind the reader steps over but never decodes."""
        self.add("kexec_type", k.ENUM, 2, 4, [self.name("KEXEC_TYPE_DEFAULT"), 0, self.name("KEXEC_TYPE_CRASH"), 1])
        self.add("big", k.ENUM64, 1, 8, [self.name("BIG"), 1, 2])
        proto = self.add("", k.FUNC_PROTO, 2, int_id, [self.name("a"), int_id, self.name("b"), int_id])
        func = self.add("crash_kexec", k.FUNC, 1, proto)  # vlen holds the linkage (global)
        var = self.add("kexec_crash_image", k.VAR, 0, int_id, [1])
        self.add(".bss", k.DATASEC, 1, 8, [var, 0, 8])
        self.add("double", k.FLOAT, 0, 8)
        self.add("tag", k.DECL_TAG, 0, func, [0xFFFFFFFF])
        self.add("user", k.TYPE_TAG, 0, int_id)

    def blob(self) -> bytes:
        header = BTF_HEADER.pack(k.MAGIC, 1, 0, BTF_HEADER.size, 0, len(self.types), len(self.types),
                                 len(self.strings))
        return header + bytes(self.types) + bytes(self.strings)


# Debian 6.1 and 6.12: struct kimage has nr_segments at 56 and segment[16] at 64, 32 bytes each
DEBIAN_LAYOUT = dict(nr_segments=(56, 8), segments_at=64, segment_size=32, max_segments=16,
                     bufsz=(8, 8), mem=(16, 8), memsz=(24, 8))


def kimage_btf(b: BtfBuilder | None = None, omit: frozenset[str] = frozenset()) -> bytes:
    """struct kimage and struct kexec_segment as the kernel encodes them, with decoys around them.

    `omit` leaves out a member ("nr_segments", "segment", "mem", ...) or a whole struct ("kimage",
    "kexec_segment"); the struct keeps its size.
    """
    b = b or BtfBuilder()
    ulong = b.int("long unsigned int", 8)
    uint = b.int("unsigned int", 4)
    int_ = b.int("int", 4, signed=True)
    b.int("char", 1, signed=True)
    b.every_other_kind(int_)
    size_t = b.typedef("size_t", b.typedef("__kernel_size_t", b.typedef("__kernel_ulong_t", ulong)))
    entry_t = b.typedef("kimage_entry_t", ulong)
    void_p = b.ptr(0)
    user_void_p = b.ptr(b.modifier(k.VOLATILE, 0))
    b.fwd("kimage")  # a declaration of the same name comes first, as in real blobs
    # struct list_head refers to a pointer to itself, defined after it
    list_head = b.next_id
    b.struct("list_head", 16, [("next", list_head + 1, 0), ("prev", list_head + 1, 64)])
    b.ptr(list_head)
    b.struct("kimage_arch", 16, [("nr_segments", uint, 0), ("segment", ulong, 64)])  # decoy: same member names
    buf = b.struct("", 8, [("buf", user_void_p, 0), ("kbuf", void_p, 0)], union=True)
    const_size_t = b.modifier(k.CONST, size_t)
    seg_members = [("", buf, 0), ("bufsz", size_t, 64), ("mem", ulong, 128), ("memsz", const_size_t, 192)]
    seg = b.struct("kexec_segment" if "kexec_segment" not in omit else "kexec_segment_x", 32,
                   [m for m in seg_members if m[0] not in omit])
    segs = b.array(seg, 16, int_)
    end = 512 + 16 * 256  # bits: the end of segment[]
    page_p = b.ptr(b.fwd("page"))
    members = [
        ("head", entry_t, 0, 0), ("entry", b.ptr(entry_t), 64, 0), ("last_entry", b.ptr(entry_t), 128, 0),
        ("start", ulong, 192, 0), ("control_code_page", page_p, 256, 0), ("swap_page", page_p, 320, 0),
        ("vmcoreinfo_data_copy", void_p, 384, 0),
        ("nr_segments", ulong, 448, 0), ("segment", segs, 512, 0),
        ("control_pages", list_head, end, 0),
        ("dest_pages", list_head, end + 128, 0), ("unusable_pages", list_head, end + 256, 0),
        ("control_page", ulong, end + 384, 0),
        # bitfields, encoded with kind_flag as pahole does
        ("type", uint, end + 448, 1), ("preserve_context", uint, end + 449, 1),
        ("file_mode", uint, end + 450, 1), ("hotplug_support", uint, end + 451, 1),
        ("elf_headers", void_p, end + 512, 0),
    ]
    b.struct("kimage" if "kimage" not in omit else "kimage_x", (end + 576) // 8,
             [m for m in members if m[0] not in omit], kind_flag=True)
    return b.blob()
