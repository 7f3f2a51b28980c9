# SPDX-License-Identifier: GPL-2.0-only
"""The kernel's CPU list format (`0-3,6,8-11`), as in /sys/devices/system/cpu/{possible,present,online}."""

from ..errors import ParseError, quoted

MAX_CPU = 0xFFFD  # a CPU beyond this could never get a note: an ELF header holds at most 0xfffe entries
MAX_DIGITS = len(str(MAX_CPU))  # checked before int(), which refuses (ValueError) past 4300 digits


def parse(text: str, path: str) -> frozenset[int]:
    """CPU numbers of a list like `0-3,6`; an empty file means no CPU."""
    text = text.strip()
    cpus: set[int] = set()
    if not text:
        return frozenset()
    for part in text.split(","):
        first, dash, last = part.partition("-")
        if not first.isascii() or not first.isdigit() or (dash and not (last.isascii() and last.isdigit())):
            raise ParseError(path, 1, text, f"bad CPU list item {quoted(part, 40)!r}")
        if max(len(first.lstrip("0")), len(last.lstrip("0"))) > MAX_DIGITS:
            raise ParseError(path, 1, text, f"bad CPU range {quoted(part, 40)!r} (CPUs are 0 to {MAX_CPU})")
        lo = int(first, 10)
        hi = int(last, 10) if dash else lo
        if hi < lo or hi > MAX_CPU:
            raise ParseError(path, 1, text, f"bad CPU range {quoted(part, 40)!r} (CPUs are 0 to {MAX_CPU})")
        cpus.update(range(lo, hi + 1))
    return frozenset(cpus)
