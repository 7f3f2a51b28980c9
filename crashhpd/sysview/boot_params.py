# SPDX-License-Identifier: GPL-2.0-only
"""The crash kernel's command line, out of the x86 boot parameters its loader put in a segment.

Both x86 loaders place a `struct boot_params` (Documentation/arch/x86/boot.rst, "zero page") at the
start of one segment of the crash image and the command line it points to in the same segment:
kexec-tools' bzImage64 loader (kexec_load) after the real-mode part, the kernel's
arch/x86/kernel/kexec-bzimage64.c (kexec_file_load) right after the struct, behind the
"elfcorehdr=0x... " it prefixes. Bytes in, text or a one-line reason out: nothing here reads memory.
"""

import struct
from collections.abc import Sequence
from dataclasses import dataclass

BOOT_PARAMS_SIZE = 4096  # sizeof(struct boot_params)
# offsets in struct boot_params (arch/x86/include/uapi/asm/bootparam.h)
EXT_CMD_LINE_PTR = 0x0C8  # __u32, the high half of the pointer (boot protocol 2.12)
# hdr.boot_flag, 0xAA55 in a bzImage; kexec-tools' own struct names its high byte aux_device_info and zeroes
# it (init_linux_parameters(), include/x86/x86-linux.h), so only the low byte, 0x55, is there in both loads
BOOT_FLAG = 0x1FE
HEADER = 0x202  # hdr.header, "HdrS"
VERSION = 0x206  # hdr.version: the boot protocol
CMD_LINE_PTR = 0x228  # hdr.cmd_line_ptr, __u32 (protocol 2.02)
CMDLINE_SIZE = 0x238  # hdr.cmdline_size, __u32: the most bytes without the NUL (protocol 2.06)
OLD_CMDLINE_SIZE = 255  # what a kernel older than protocol 2.06 takes
# x86 COMMAND_LINE_SIZE is 2048; a header claiming more than this is not a kernel's, and would have the
# reader read what it says
MAX_CMDLINE_SIZE = 64 * 1024

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")

Span = tuple[int, int]  # (mem, memsz) of one segment: physical address and size


@dataclass(frozen=True, slots=True)
class Where:
    """Where the command line is: `size` bytes at physical `address`, all of them inside one segment."""

    address: int
    size: int  # the most bytes to read: the header's limit and its NUL, cut at the segment's end


@dataclass(frozen=True, slots=True)
class CommandLine:
    """The command line, or why it is not known."""

    text: str | None
    reason: str | None = None


def is_boot_params(head: bytes) -> bool:
    """The first bytes of a segment hold a boot_params whose setup header is a bzImage's."""
    return len(head) >= CMDLINE_SIZE + 4 and head[BOOT_FLAG] == 0x55 and head[HEADER:HEADER + 4] == b"HdrS"


def locate(params: bytes, segments: Sequence[Span]) -> Where | CommandLine:
    """Where boot_params says the command line is, inside one of the image's segments; else the reason."""
    if not is_boot_params(params):
        return CommandLine(None, "the segment holds no x86 boot parameters (no 0x55 at 0x1fe and HdrS at 0x202)")
    address = _U32.unpack_from(params, CMD_LINE_PTR)[0] | _U32.unpack_from(params, EXT_CMD_LINE_PTR)[0] << 32
    if address == 0:
        return CommandLine(None, "the boot parameters carry no command line (cmd_line_ptr is 0)")
    version = _U16.unpack_from(params, VERSION)[0]
    limit = _U32.unpack_from(params, CMDLINE_SIZE)[0] if version >= 0x206 else OLD_CMDLINE_SIZE
    if limit > MAX_CMDLINE_SIZE:
        return CommandLine(None, f"the boot parameters allow a command line of {limit} bytes, "
                                 f"more than any kernel's ({MAX_CMDLINE_SIZE})")
    for mem, memsz in segments:
        if mem <= address < mem + memsz:
            return Where(address, min(limit + 1, mem + memsz - address))
    return CommandLine(None, f"the command line's address 0x{address:x} is in none of the crash image's "
                             f"{len(segments)} segments")


def decode(raw: bytes) -> CommandLine:
    """The text up to its NUL; a command line without one, or that is not text, is refused with the reason."""
    end = raw.find(b"\0")
    if end < 0:
        return CommandLine(None, f"the command line has no NUL within its {len(raw)} bytes")
    try:
        return CommandLine(raw[:end].decode("utf-8"))
    except UnicodeDecodeError as err:
        return CommandLine(None, f"the command line is not UTF-8 (byte 0x{raw[err.start]:02x} at {err.start})")
