# SPDX-License-Identifier: GPL-2.0-only
"""The kernel's own type information (BTF, /sys/kernel/btf/vmlinux): struct layouts of the running kernel.

Offsets inside kernel structs change with the version and the configuration,
so crashhpd takes them from the kernel that runs instead of trusting fixed
numbers. Only what it needs is decoded, and only when asked; a 5 MB blob
takes a noticeable fraction of a second to walk, so parse it once per boot.
"""

import array
import struct
import sys
from dataclasses import dataclass, field

from ..abi.x86_64 import POINTER_SIZE
from ..errors import CrashhpdError
from ..safefile import read_file
from .files import under

VMLINUX = "sys/kernel/btf/vmlinux"
READ_LIMIT = 64 << 20  # a vmlinux blob is 5 to 10 MB; anything past this is not one
MAGIC = 0xEB9F
HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off, type_len, str_off, str_len
MAX_HOPS = 64  # typedef/modifier chains and nested arrays: deeper is a loop in a broken blob

(INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT,
 FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64) = range(1, 20)
KIND_NAMES = ("void", "int", "pointer", "array", "struct", "union", "enum", "forward declaration", "typedef",
              "volatile", "const", "restrict", "function", "function prototype", "variable", "data section",
              "float", "declaration tag", "type tag", "enum64")
# u32 words after the 3-word btf_type, per kind: (fixed, per vlen entry); None for kinds this parser does not know
_TRAILER: tuple[tuple[int, int] | None, ...] = (
    None, (1, 0), (0, 0), (3, 0), (0, 3), (0, 3), (0, 2), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0),
    (0, 0), (0, 2), (1, 0), (0, 3), (0, 0), (1, 0), (0, 0), (0, 3),
)
_MODIFIERS = frozenset((TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG))
_SIZED = frozenset((INT, ENUM, STRUCT, UNION, FLOAT, ENUM64))


class BtfError(CrashhpdError):
    """The blob cannot be read, or lacks a type or member asked for; one line saying which."""


@dataclass(frozen=True, slots=True)
class Member:
    """One member of a struct or union; `bit_offset` from the start of the outermost struct asked about."""

    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int  # bits; 0 when the member is not a bitfield

    @property
    def offset(self) -> int:
        """The byte holding the member's first bit."""
        return self.bit_offset // 8

    @property
    def is_bitfield(self) -> bool:
        return self.bitfield_size != 0 or self.bit_offset % 8 != 0


@dataclass(frozen=True, slots=True)
class Field:
    """Where a whole-byte member lies: `size` bytes at `offset`, with its type."""

    offset: int
    size: int
    type_id: int = field(default=0, compare=False)  # the same place in another blob is the same field

    def value(self, data: bytes, base: int = 0) -> int:
        """The member as an unsigned little-endian integer, in a copy of the struct starting at `base`."""
        start = base + self.offset
        return int.from_bytes(data[start:start + self.size], "little")


@dataclass(frozen=True, slots=True)
class ArrayType:
    elem_type: int
    nelems: int


class Btf:
    """A parsed blob: look types up by name or id. Build it with `Btf.parse`."""

    def __init__(self, words: "array.array[int]", strings: bytes, starts: list[int],
                 named: dict[int, list[int]]) -> None:
        self._words = words
        self._strings = strings
        self._starts = starts  # type id -> index of its btf_type in words; starts[0] is void's placeholder
        self._named = named  # name_off -> ids of the structs and unions with that name

    @classmethod
    def parse(cls, data: bytes) -> "Btf":
        """Check the header, walk the type section once; BtfError when it is not a BTF blob this parser reads.

        The blob (Documentation/bpf/btf.rst, include/uapi/linux/btf.h): a 24-byte header (magic 0xeB9F,
        version 1, hdr_len, then the offsets and lengths of the type and string sections, relative to
        the header's end), a type section of variable-length records, a string section of NUL-terminated
        names. Each record is `struct btf_type` (name_off, info, size_or_type: three u32), then data whose
        length depends on the kind (bits 24-28 of info) and the count (vlen, its low 16 bits); type ids
        count the records from 1, 0 is void. Kept: where each record starts and the struct and union
        names; members (through anonymous ones, as C names them), sizes and arrays are decoded when asked.
        """
        if len(data) < HEADER.size:
            raise BtfError(f"{len(data)} bytes: too short for a BTF header")
        magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack_from(data)
        if magic != MAGIC:
            if magic == 0x9FEB:
                raise BtfError("big-endian BTF: not this machine's byte order")
            raise BtfError(f"magic 0x{magic:04x}, not BTF's 0xeb9f")
        if version != 1:
            raise BtfError(f"BTF version {version}; this parser reads version 1")
        if hdr_len < HEADER.size or hdr_len > len(data):
            raise BtfError(f"header length {hdr_len} does not fit the {len(data)}-byte blob")
        body = len(data) - hdr_len
        if type_off + type_len > body or str_off + str_len > body:
            raise BtfError("a section ends past the end of the blob")
        if type_len % 4:
            raise BtfError(f"type section of {type_len} bytes is not whole 32-bit words")
        if str_len == 0 or data[hdr_len + str_off + str_len - 1] != 0:
            raise BtfError("string section is empty or does not end with NUL")
        words = array.array("I")
        words.frombytes(data[hdr_len + type_off:hdr_len + type_off + type_len])
        if sys.byteorder != "little":
            words.byteswap()
        strings = data[hdr_len + str_off:hdr_len + str_off + str_len]
        starts, named = _walk(words)
        return cls(words, strings, starts, named)

    @property
    def count(self) -> int:
        """Types in the blob, void not counted: the highest type id."""
        return len(self._starts) - 1

    # --- single types ------------------------------------------------------------------------

    def kind(self, type_id: int) -> int:
        return 0 if type_id == 0 else (self._words[self._start(type_id) + 1] >> 24) & 0x1F

    def name(self, type_id: int) -> str:
        return "" if type_id == 0 else self._string(self._words[self._start(type_id)])

    def describe(self, type_id: int) -> str:
        """`struct kimage`, `typedef size_t`, `int` ...: for error lines."""
        kind = self.kind(type_id)
        name = self.name(type_id)
        if kind in (STRUCT, UNION, ENUM, TYPEDEF, ENUM64):
            return f"{KIND_NAMES[kind]} {name or '(anonymous)'}"
        return name or f"{KIND_NAMES[kind]} (type {type_id})"

    def strip(self, type_id: int) -> int:
        """The type under typedefs and const/volatile/restrict/type tags."""
        for _ in range(MAX_HOPS):
            if self.kind(type_id) not in _MODIFIERS:
                return type_id
            type_id = self._words[self._start(type_id) + 2]
        raise BtfError(f"type {type_id}: typedefs and modifiers more than {MAX_HOPS} deep")

    def size_of(self, type_id: int, _depth: int = 0) -> int:
        """Bytes of a type, through typedefs, modifiers and arrays; BtfError for a type without a size."""
        if _depth > MAX_HOPS:
            raise BtfError(f"type {type_id}: arrays nested more than {MAX_HOPS} deep")
        real = self.strip(type_id)
        kind = self.kind(real)
        if kind in _SIZED:
            return self._words[self._start(real) + 2]
        if kind == PTR:
            return POINTER_SIZE
        if kind == ARRAY:
            arr = self.array(real)
            return arr.nelems * self.size_of(arr.elem_type, _depth + 1)
        raise BtfError(f"{self.describe(real)} has no size")

    def array(self, type_id: int) -> ArrayType:
        """An array type's element type and count (through typedefs and modifiers)."""
        real = self.strip(type_id)
        if self.kind(real) != ARRAY:
            raise BtfError(f"{self.describe(real)} is not an array")
        i = self._start(real) + 3
        return ArrayType(elem_type=self._words[i], nelems=self._words[i + 2])

    # --- structs -----------------------------------------------------------------------------

    def find_struct(self, name: str, kind: int = STRUCT) -> int:
        """The id of the struct (or union) called `name`; a forward declaration does not count."""
        wanted = b"\0" + name.encode() + b"\0"
        at = self._strings.find(wanted)
        while at >= 0:
            for type_id in self._named.get(at + 1, ()):
                if self.kind(type_id) == kind:
                    return type_id
            at = self._strings.find(wanted, at + 1)
        raise BtfError(f"no {KIND_NAMES[kind]} {name}")

    def members(self, type_id: int) -> tuple[Member, ...]:
        """The direct members of a struct or union, in declaration order (anonymous ones have name '')."""
        real = self.strip(type_id)
        i = self._start(real)
        info = self._words[i + 1]
        kind = (info >> 24) & 0x1F
        if kind not in (STRUCT, UNION):
            raise BtfError(f"{self.describe(real)} is not a struct or union")
        kind_flag = info >> 31
        out = []
        for k in range(info & 0xFFFF):
            name_off, member_type, offset = self._words[i + 3 + 3 * k:i + 6 + 3 * k]
            if kind_flag:  # bitfield size in the top 8 bits, bit offset in the low 24
                bits, bit_offset = offset >> 24, offset & 0xFFFFFF
            else:  # the older encoding: a bitfield's width and shift sit in its int type
                bits, shift = self._int_bitfield(member_type)
                bit_offset = offset + shift
            out.append(Member(self._string(name_off), member_type, bit_offset, bits))
        return tuple(out)

    def member(self, struct: int | str, name: str) -> Member:
        """Member `name` of a struct, looked up through anonymous struct and union members as C does."""
        type_id = self.find_struct(struct) if isinstance(struct, str) else struct
        found = self._member(type_id, name, 0, 0, set())
        if found is None:
            raise BtfError(f"{self.describe(self.strip(type_id))} has no member {name}")
        return found

    def field(self, struct: int | str, name: str) -> Field:
        """Offset and size in bytes of a member that is not a bitfield, which must lie inside its struct."""
        member = self.member(struct, name)
        if member.is_bitfield:
            raise BtfError(f"member {name} of {self._owner(struct)} is a bitfield, not whole bytes")
        size = self.size_of(member.type_id)
        owner = self.find_struct(struct) if isinstance(struct, str) else struct
        if member.offset + size > self.size_of(owner):
            raise BtfError(f"member {name} of {self._owner(struct)} ends at byte {member.offset + size}, past the "
                           f"{self.size_of(owner)} bytes of its struct")
        return Field(member.offset, size, member.type_id)

    # --- helpers -----------------------------------------------------------------------------

    def _member(self, type_id: int, name: str, base: int, depth: int, searched: set[int]) -> Member | None:
        """`searched`: the anonymous types already looked through without finding `name` (whether a type
        holds it does not depend on where it sits), so anonymous members that fan out to the same types
        cost one look each, not one per path to them."""
        if depth > MAX_HOPS:
            raise BtfError(f"type {type_id}: anonymous members nested more than {MAX_HOPS} deep")
        for m in self.members(type_id):
            if m.name == name:
                return Member(m.name, m.type_id, base + m.bit_offset, m.bitfield_size)
            inner_type = self.strip(m.type_id)
            if not m.name and inner_type not in searched and self.kind(inner_type) in (STRUCT, UNION):
                inner = self._member(m.type_id, name, base + m.bit_offset, depth + 1, searched)
                if inner is not None:
                    return inner
                searched.add(inner_type)
        return None

    def _int_bitfield(self, type_id: int) -> tuple[int, int]:
        """(width, shift) when an int type itself encodes a bitfield, else (0, 0)."""
        real = self.strip(type_id)
        if self.kind(real) != INT:
            return 0, 0
        i = self._start(real)
        encoding = self._words[i + 3]
        bits, shift = encoding & 0xFF, (encoding >> 16) & 0xFF
        return (bits, shift) if shift or bits != self._words[i + 2] * 8 else (0, 0)

    def _owner(self, struct: int | str) -> str:
        return f"struct {struct}" if isinstance(struct, str) else self.describe(self.strip(struct))

    def _start(self, type_id: int) -> int:
        if not 0 < type_id < len(self._starts):
            raise BtfError(f"type id {type_id} is not in the blob ({self.count} types)")
        return self._starts[type_id]

    def _string(self, offset: int) -> str:
        if offset >= len(self._strings):
            raise BtfError(f"name offset {offset} is past the {len(self._strings)}-byte string section")
        return self._strings[offset:self._strings.index(b"\0", offset)].decode("utf-8", "replace")


def _steps() -> tuple[list[int], list[int]]:
    """Words a record takes, indexed by info's top byte (kind_flag and kind): fixed part, and per vlen entry."""
    fixed, per = [-1] * 256, [0] * 256
    for kind, shape in enumerate(_TRAILER):
        if shape is not None:
            for top in (kind, kind | 0x80):
                fixed[top], per[top] = 3 + shape[0], shape[1]
    return fixed, per


_FIXED, _PER = _steps()
_NAMED_TOPS = frozenset((STRUCT, UNION, STRUCT | 0x80, UNION | 0x80))


def _walk(words: "array.array[int]") -> tuple[list[int], dict[int, list[int]]]:
    """Where each type's record starts, and the struct/union ids by name offset: one pass over the section.

    The loop runs once per type (130,000 in a vmlinux blob), so it keeps to locals and table look-ups.
    """
    starts = [0]
    named: dict[int, list[int]] = {}
    fixed, per, with_name = _FIXED, _PER, _NAMED_TOPS
    i, end = 0, len(words)
    try:
        while i < end:
            info = words[i + 1]
            top = info >> 24
            step = fixed[top]
            if step < 0:
                raise BtfError(f"type {len(starts)} has kind {top & 0x1F}, which this parser cannot step over")
            if top in with_name:
                named.setdefault(words[i], []).append(len(starts))
            starts.append(i)
            i += step + per[top] * (info & 0xFFFF)
    except IndexError:
        i = end + 1
    if i != end:
        raise BtfError(f"type section ends inside type {len(starts) - 1}")
    return starts, named


def read_vmlinux_btf(root: str = "/") -> Btf | None:
    """The running kernel's BTF, parsed; None when the kernel has none (no CONFIG_DEBUG_INFO_BTF).

    BtfError when it cannot be read or parsed, naming the file.
    """
    path = under(root, VMLINUX)
    try:
        data = read_file(path, READ_LIMIT)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise BtfError(f"{path}: {err.strerror or err}") from None
    try:
        return Btf.parse(data)
    except BtfError as err:
        raise BtfError(f"{path}: {err}") from None
