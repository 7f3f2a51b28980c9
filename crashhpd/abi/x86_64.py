# SPDX-License-Identifier: GPL-2.0-only
"""x86_64's kernel address space (arch/x86/include/asm/page_64_types.h): each landmark defined once."""

GIB = 1 << 30
KERNEL_HALF = 0xFF00_0000_0000_0000  # any direct-map base lies above this, for 4- and 5-level paging
START_KERNEL_MAP = 0xFFFFFFFF80000000  # __START_KERNEL_map: the kernel image (and modules) are mapped above it
