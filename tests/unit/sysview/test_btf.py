# SPDX-License-Identifier: GPL-2.0-only
"""The BTF reader on synthetic blobs built like the kernel's, and on this host's own /sys/kernel/btf/vmlinux."""

import os
import struct

import pytest
from fakebtf import BtfBuilder, kimage_btf

from crashhpd.sysview import btf as k
from crashhpd.sysview.btf import ArrayType, Btf, BtfError, read_vmlinux_btf

HOST_BTF = "/sys/kernel/btf/vmlinux"
needs_host_btf = pytest.mark.skipif(not os.path.exists(HOST_BTF), reason=f"no {HOST_BTF} on this host")


@pytest.fixture(scope="module")
def blob() -> Btf:
    return Btf.parse(kimage_btf())


def kimage_offsets(blob: Btf) -> tuple[int, ...]:
    """nr_segments, segment[], its length, and bufsz, mem, memsz in one element: (offset, size) pairs flattened."""
    segment = blob.field("kimage", "segment")
    elem = blob.array(segment.type_id).elem_type
    fields = [blob.field("kimage", "nr_segments"), segment] + [blob.field(elem, n) for n in ("bufsz", "mem", "memsz")]
    return tuple(v for f in fields for v in (f.offset, f.size)) + (blob.array(segment.type_id).nelems,)


DEBIAN = (56, 8, 64, 512, 8, 8, 16, 8, 24, 8, 16)


def test_kimage_resolves_to_the_offsets_of_debians_kernels(blob):
    assert kimage_offsets(blob) == DEBIAN


def test_a_forward_declaration_and_a_struct_with_the_same_members_are_not_the_struct(blob):
    kimage = blob.find_struct("kimage")
    assert blob.kind(kimage) == k.STRUCT and blob.name(kimage) == "kimage"
    assert any(blob.kind(i) == k.FWD and blob.name(i) == "kimage" for i in range(1, kimage))  # declared first
    assert blob.field("kimage_arch", "nr_segments").offset == 0
    assert blob.field("kimage", "nr_segments").offset == 56
    with pytest.raises(BtfError, match="no struct page"):
        blob.find_struct("page")  # only declared
    with pytest.raises(BtfError, match="no union list_head"):
        blob.find_struct("list_head", k.UNION)


def test_members_offsets_in_bits_and_bytes_and_pointer_sizes(blob):
    members = blob.members(blob.find_struct("list_head"))
    assert [(m.name, m.bit_offset, m.offset, m.is_bitfield) for m in members] == \
        [("next", 0, 0, False), ("prev", 64, 8, False)]
    assert blob.kind(members[0].type_id) == k.PTR and blob.size_of(members[0].type_id) == 8


def test_typedefs_and_modifiers_lead_to_sizes_and_arrays_to_element_and_count(blob):
    bufsz = blob.member("kexec_segment", "bufsz")
    assert blob.describe(bufsz.type_id) == "typedef size_t"
    assert blob.kind(blob.strip(bufsz.type_id)) == k.INT and blob.size_of(bufsz.type_id) == 8
    memsz = blob.member("kexec_segment", "memsz")
    assert blob.kind(memsz.type_id) == k.CONST and blob.size_of(memsz.type_id) == 8
    segment = blob.field("kimage", "segment")
    assert (segment.offset, segment.size) == (64, 512)
    arr = blob.array(segment.type_id)
    assert isinstance(arr, ArrayType) and arr.nelems == 16
    assert blob.name(arr.elem_type) == "kexec_segment" and blob.size_of(arr.elem_type) == 32
    with pytest.raises(BtfError, match="typedef size_t.* not an array|is not an array"):
        blob.array(bufsz.type_id)


def test_members_of_an_anonymous_union_are_found_as_c_names_them(blob):
    assert blob.field("kexec_segment", "buf").offset == 0
    assert blob.field("kexec_segment", "kbuf").offset == 0
    assert [m.name for m in blob.members(blob.find_struct("kexec_segment"))] == ["", "bufsz", "mem", "memsz"]


def test_nested_anonymous_members_add_up_their_offsets():
    b = BtfBuilder()
    i32 = b.int("int", 4, signed=True)
    i64 = b.int("long int", 8, signed=True)
    inner = b.struct("", 8, [("x", i32, 0), ("y", i32, 32)])
    middle = b.struct("", 8, [("", inner, 0), ("z", i64, 0)], union=True)
    b.struct("outer", 16, [("a", i32, 0), ("", middle, 64)])
    blob = Btf.parse(b.blob())
    assert [blob.field("outer", n).offset for n in ("a", "x", "y", "z")] == [0, 8, 12, 8]


def test_bitfields_with_kind_flag_and_in_the_older_int_encoding(blob):
    member = blob.member("kimage", "preserve_context")
    assert (member.bit_offset, member.bitfield_size, member.offset, member.is_bitfield) == (632 * 8 + 1, 1, 632, True)
    with pytest.raises(BtfError, match="member preserve_context of struct kimage is a bitfield"):
        blob.field("kimage", "preserve_context")
    assert blob.field("kimage", "elf_headers").offset == 640  # kind_flag, not a bitfield: size 0, plain offset
    b = BtfBuilder()
    u8 = b.int("unsigned char", 1)
    flags3 = b.int("unsigned char", 1, bits=3, shift=2)
    b.struct("old", 2, [("whole", u8, 0), ("flags", flags3, 8)])
    old = Btf.parse(b.blob())
    flags = old.member("old", "flags")
    assert (flags.bit_offset, flags.bitfield_size, flags.is_bitfield) == (10, 3, True)
    assert old.field("old", "whole").size == 1


def test_a_missing_struct_or_member_is_an_error_naming_it():
    with pytest.raises(BtfError, match="no struct kimage"):
        Btf.parse(kimage_btf(omit=frozenset({"kimage"}))).find_struct("kimage")
    with pytest.raises(BtfError, match="struct kexec_segment has no member mem$"):
        Btf.parse(kimage_btf(omit=frozenset({"mem"}))).member("kexec_segment", "mem")


def _header(blob: bytes, **fields: int) -> bytes:
    names = ("magic", "version", "flags", "hdr_len", "type_off", "type_len", "str_off", "str_len")
    values = dict(zip(names, struct.unpack_from("<HBBIIIII", blob)))
    values.update(fields)
    return struct.pack("<HBBIIIII", *(values[n] for n in names)) + blob[24:]


@pytest.mark.parametrize(("mangle", "message"), [
    (lambda b: b[:10], "too short for a BTF header"),
    (lambda b: _header(b, magic=0x1234), "magic 0x1234"),
    (lambda b: b"\xeb\x9f" + b[2:], "big-endian BTF"),
    (lambda b: _header(b, version=2), "BTF version 2"),
    (lambda b: _header(b, hdr_len=8), "header length 8"),
    (lambda b: _header(b, str_len=1 << 20), "a section ends past the end"),
    (lambda b: _header(b, type_len=_header_fields(b)["type_len"] - 2), "not whole 32-bit words"),
    (lambda b: _header(b, type_len=_header_fields(b)["type_len"] - 4), "type section ends inside type"),
    (lambda b: b[:-1] + b"x", "does not end with NUL"),
])
def test_a_malformed_blob_is_refused_with_the_reason(mangle, message):
    with pytest.raises(BtfError, match=message):
        Btf.parse(mangle(kimage_btf()))


def _header_fields(blob: bytes) -> dict[str, int]:
    return dict(zip(("magic", "version", "flags", "hdr_len", "type_off", "type_len", "str_off", "str_len"),
                    struct.unpack_from("<HBBIIIII", blob)))


def test_an_unknown_kind_cannot_be_stepped_over():
    b = BtfBuilder()
    b.int("int", 4)
    b.add("future", 25, 0, 0)
    with pytest.raises(BtfError, match="type 2 has kind 25, which this parser cannot step over"):
        Btf.parse(b.blob())


def test_a_typedef_loop_and_a_bad_id_or_name_are_errors_not_hangs():
    b = BtfBuilder()
    first = b.next_id
    b.typedef("a", first + 1)
    b.typedef("b", first)
    i32 = b.int("int", 4)
    bad = b.add("", k.STRUCT, 1, 4, [1 << 20, i32, 0])  # a member whose name offset is past the strings
    fwd = b.fwd("page")
    blob = Btf.parse(b.blob())
    with pytest.raises(BtfError, match="more than 64 deep"):
        blob.size_of(first)
    with pytest.raises(BtfError, match="type id 99 is not in the blob"):
        blob.size_of(99)
    with pytest.raises(BtfError, match="past the .*string section"):
        blob.members(bad)
    with pytest.raises(BtfError, match="^page has no size"):
        blob.size_of(fwd)
    with pytest.raises(BtfError, match=r"^void \(type 0\) has no size"):
        blob.size_of(0)
    with pytest.raises(BtfError, match="int is not a struct or union"):
        blob.members(i32)


def test_read_vmlinux_btf_under_a_root(tmp_path):
    assert read_vmlinux_btf(str(tmp_path)) is None
    path = tmp_path / "sys/kernel/btf/vmlinux"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not btf at all, but long enough")
    with pytest.raises(BtfError, match=f"{path}: magic"):
        read_vmlinux_btf(str(tmp_path))
    path.unlink()
    path.mkdir()
    with pytest.raises(BtfError, match=f"{path}: Is a directory"):
        read_vmlinux_btf(str(tmp_path))
    path.rmdir()
    path.write_bytes(kimage_btf())
    assert kimage_offsets(read_vmlinux_btf(str(tmp_path))) == DEBIAN


@needs_host_btf
def test_this_hosts_btf_parses_and_resolves_list_head_and_task_struct():
    blob = read_vmlinux_btf("/")
    assert blob is not None and blob.count > 10_000
    list_head = blob.find_struct("list_head")
    assert [(m.name, m.offset) for m in blob.members(list_head)] == [("next", 0), ("prev", 8)]
    assert blob.size_of(list_head) == 16
    assert (blob.field("list_head", "next").size, blob.field("list_head", "prev").size) == (8, 8)
    task = blob.find_struct("task_struct")
    assert blob.size_of(task) > 1000
    assert blob.field(task, "pid").size == 4  # pid_t, through its typedefs
    assert blob.kind(blob.strip(blob.member(task, "tasks").type_id)) == k.STRUCT


@needs_host_btf
def test_kimage_types_appended_to_this_hosts_btf_resolve_there():
    with open(HOST_BTF, "rb") as f:
        host = f.read()
    try:
        Btf.parse(host).find_struct("kimage")
        pytest.skip("this host's kernel has its own struct kimage")
    except BtfError:
        pass
    grown = Btf.parse(kimage_btf(BtfBuilder(host)))
    assert kimage_offsets(grown) == DEBIAN
    assert grown.field("list_head", "prev").offset == 8  # the host's own, found first


# --- hostile blobs: bounded work, members inside their struct --------------------------------------


def test_anonymous_members_that_fan_out_cost_one_look_per_type_not_per_path(deadline):
    """Each anonymous level holds two anonymous members of the next: 2**40 paths to the bottom, 40 types."""
    b = BtfBuilder()
    int_ = b.int("int", 4, signed=True)
    inner = b.struct("", 4, [("x", int_, 0)])
    for _ in range(40):
        inner = b.struct("", 4, [("", inner, 0), ("", inner, 0)])
    top = b.struct("top", 4, [("", inner, 0)])
    blob = Btf.parse(b.blob())
    looked: list[int] = []
    real = blob.members
    blob.members = lambda type_id: looked.append(type_id) or real(type_id)  # type: ignore[method-assign]
    with pytest.raises(BtfError, match="has no member missing"):
        blob.member(top, "missing")
    assert len(looked) <= 2 * 42  # each type looked through at most once per level that names it
    assert blob.member(top, "x").offset == 0  # the negative control: a member that is there is found


def test_a_member_past_the_end_of_its_struct_is_refused():
    b = BtfBuilder()
    ulong = b.int("long unsigned int", 8)
    b.struct("kimage", 16, [("nr_segments", ulong, 0), ("far", ulong, 8 * 4096)])
    blob = Btf.parse(b.blob())
    assert blob.field("kimage", "nr_segments").offset == 0  # the negative control
    with pytest.raises(BtfError, match="ends at byte 4104, past the 16 bytes of its struct"):
        blob.field("kimage", "far")


@pytest.mark.parametrize(("elem_size", "nelems"), [(0, 2**32 - 1), (32, 4096), (4096, 16)])
def test_a_segment_array_no_kernel_has_is_refused_before_anything_is_read(elem_size, nelems):
    """A zero-size struct kexec_segment with 2**32-1 elements, or a span of megabytes, from a hostile BTF."""
    from crashhpd.sysview.loaded_header import kimage_layout

    b = BtfBuilder()
    ulong = b.int("long unsigned int", 8)
    int_ = b.int("int", 4, signed=True)
    seg = b.struct("kexec_segment", elem_size, [("bufsz", ulong, 0), ("mem", ulong, 0), ("memsz", ulong, 0)])
    segs = b.array(seg, nelems, int_)
    size = 8 + elem_size * nelems
    b.struct("kimage", size, [("nr_segments", ulong, 0), ("segment", segs, 64)])
    with pytest.raises(BtfError, match="struct kexec_segment|struct kimage is"):
        kimage_layout(Btf.parse(b.blob()))
