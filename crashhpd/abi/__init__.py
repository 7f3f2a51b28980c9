# SPDX-License-Identifier: GPL-2.0-only
"""The binary interfaces crashhpd reads and writes: the ELF64 core format and x86_64's address space."""
