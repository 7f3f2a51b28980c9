# SPDX-License-Identifier: GPL-2.0-only
"""Which segment of the loaded crash image is its initrd: the one the x86 boot parameters point the kernel to.

Both loaders write the initrd's place into the boot parameters they hand the crash kernel:
kexec-tools' setup_linux_bootloader_parameters() (kexec/arch/i386/x86-linux-setup.c) and the
kernel's setup_initrd() (arch/x86/kernel/kexec-bzimage64.c), each as hdr.ramdisk_image and
hdr.ramdisk_size with their high halves in ext_ramdisk_image and ext_ramdisk_size. The kernel reads
the same fields to find it (get_ramdisk_image(), arch/x86/kernel/setup.c), so this is the initrd the
crash kernel will unpack, not a file that may have changed since. Bytes in, a span or a reason out.
"""

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from .boot_params import Span, is_boot_params

# offsets in struct boot_params (arch/x86/include/uapi/asm/bootparam.h)
EXT_RAMDISK_IMAGE, EXT_RAMDISK_SIZE = 0x0C0, 0x0C4
RAMDISK_IMAGE, RAMDISK_SIZE = 0x218, 0x21C
_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Ramdisk:
    """The initrd's (address, size) in physical memory, or why it is not known."""

    span: Span | None
    reason: str | None = None


def ramdisk(heads: Sequence[tuple[int, bytes]], segments: Sequence[Span]) -> Ramdisk:
    """Where the boot parameters (the first segment head that holds them) put the initrd, inside one segment."""
    params = next((head for _i, head in heads if is_boot_params(head)), None)
    if params is None or len(params) < RAMDISK_SIZE + 4:
        return Ramdisk(None, f"none of the {len(segments)} segments of the crash image holds x86 boot parameters")
    address = _U32.unpack_from(params, RAMDISK_IMAGE)[0] | _U32.unpack_from(params, EXT_RAMDISK_IMAGE)[0] << 32
    size = _U32.unpack_from(params, RAMDISK_SIZE)[0] | _U32.unpack_from(params, EXT_RAMDISK_SIZE)[0] << 32
    if size == 0:
        return Ramdisk(None, "the crash kernel was loaded without an initrd (ramdisk_size is 0)")
    for mem, memsz in segments:
        if mem <= address and address + size <= mem + memsz:
            return Ramdisk((address, size))
    return Ramdisk(None, f"the initrd the boot parameters name (0x{address:x}, {size} bytes) lies in none of the "
                         f"crash image's {len(segments)} segments")
