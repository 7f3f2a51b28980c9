# SPDX-License-Identifier: GPL-2.0-only
"""The crash kernel's command line out of x86 boot parameters: the two loaders' placements and hostile bytes."""

import struct

import pytest

from crashhpd.sysview.boot_params import (
    BOOT_PARAMS_SIZE,
    CMD_LINE_PTR,
    CMDLINE_SIZE,
    EXT_CMD_LINE_PTR,
    MAX_CMDLINE_SIZE,
    VERSION,
    CommandLine,
    Where,
    decode,
    is_boot_params,
    locate,
)

SEGMENT = 0x2F000000  # where a loader put the boot parameters' segment


def boot_params(cmd_line_ptr: int, cmdline_size: int = 2047, version: int = 0x20F) -> bytes:
    """A zero page with the setup header fields the parser reads, as a bzImage's header fills them."""
    data = bytearray(BOOT_PARAMS_SIZE)
    struct.pack_into("<H", data, 0x1FE, 0xAA55)
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", data, VERSION, version)
    struct.pack_into("<I", data, CMD_LINE_PTR, cmd_line_ptr & 0xFFFFFFFF)
    struct.pack_into("<I", data, EXT_CMD_LINE_PTR, cmd_line_ptr >> 32)
    struct.pack_into("<I", data, CMDLINE_SIZE, cmdline_size)
    return bytes(data)


def test_kexec_file_loads_command_line_follows_the_struct_in_its_segment():
    """arch/x86/kernel/kexec-bzimage64.c: cmdline at bootparams_load_addr + sizeof(struct boot_params)."""
    where = locate(boot_params(SEGMENT + BOOT_PARAMS_SIZE), [(0x1000000, 0x2000000), (SEGMENT, 0x3000)])
    assert where == Where(SEGMENT + BOOT_PARAMS_SIZE, 2048)


def test_the_read_is_cut_at_the_segments_end():
    where = locate(boot_params(SEGMENT + 0x2F00), [(SEGMENT, 0x3000)])
    assert where == Where(SEGMENT + 0x2F00, 0x100)


def test_the_high_half_of_the_pointer_is_used():
    high = (1 << 32) + 0x5000
    assert locate(boot_params(high), [(1 << 32, 0x10000)]) == Where(high, 2048)


def test_a_kernel_before_boot_protocol_2_06_takes_255_bytes():
    assert locate(boot_params(SEGMENT + 0x1000, cmdline_size=0, version=0x205),
                  [(SEGMENT, 0x3000)]) == Where(SEGMENT + 0x1000, 256)


@pytest.mark.parametrize("params,segments,reason", [
    (boot_params(0x7000_0000), [(SEGMENT, 0x3000)], "address 0x70000000 is in none of the crash image's 1 segments"),
    (boot_params(SEGMENT + 0x3000), [(SEGMENT, 0x3000)], "in none of"),  # one past its end
    (boot_params(0), [(SEGMENT, 0x3000)], "cmd_line_ptr is 0"),
    (boot_params(SEGMENT, cmdline_size=MAX_CMDLINE_SIZE + 1), [(SEGMENT, 0x3000)], "more than any kernel's"),
    (bytes(BOOT_PARAMS_SIZE), [(SEGMENT, 0x3000)], "no x86 boot parameters"),
    (boot_params(SEGMENT)[:0x200], [(SEGMENT, 0x3000)], "no x86 boot parameters"),  # short
])
def test_hostile_boot_parameters_give_a_reason(params, segments, reason):
    result = locate(params, segments)
    assert isinstance(result, CommandLine) and result.text is None and reason in (result.reason or "")


def test_is_boot_params_wants_both_signatures():
    good = boot_params(SEGMENT)
    assert is_boot_params(good)
    # kexec-tools (kexec_load) zeroes the flag's high byte, its aux_device_info: seen in a Debian 6.1 guest
    assert is_boot_params(good[:0x1FF] + b"\0" + good[0x200:])
    assert not is_boot_params(good[:0x1FE] + b"\0\xaa" + good[0x200:])
    assert not is_boot_params(good[:0x202] + b"HdrT" + good[0x206:])


def test_decode_stops_at_the_nul():
    assert decode(b"elfcorehdr=0x3f000000 ro nr_cpus=1\0garbage") == CommandLine("elfcorehdr=0x3f000000 ro nr_cpus=1")


@pytest.mark.parametrize("raw,reason", [
    (b"x" * 2048, "no NUL within its 2048 bytes"),
    (b"root=\xff\xfe\0", "not UTF-8 (byte 0xff at 5)"),
    (b"", "no NUL within its 0 bytes"),
])
def test_decode_refuses_what_is_no_command_line(raw, reason):
    result = decode(raw)
    assert result.text is None and reason in (result.reason or "")
