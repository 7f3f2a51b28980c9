# SPDX-License-Identifier: GPL-2.0-only
"""x86_64's kernel address space (arch/x86/include/asm/page_64_types.h): each landmark defined once."""

GIB = 1 << 30  # PUD_SIZE: KASLR moves the direct map in steps of it, so every base is aligned to it
KERNEL_HALF = 0xFF00_0000_0000_0000  # any direct-map base lies above this, for 4- and 5-level paging
START_KERNEL_MAP = 0xFFFFFFFF80000000  # __START_KERNEL_map: the kernel image (and modules) are mapped above it
PAGE_OFFSET_BASE_L4 = 0xFFFF888000000000  # __PAGE_OFFSET_BASE_L4: the direct map without KASLR, 4-level paging
POINTER_SIZE = 8  # bytes of a pointer or unsigned long; BTF does not record it
