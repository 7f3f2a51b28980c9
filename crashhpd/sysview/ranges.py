# SPDX-License-Identifier: GPL-2.0-only
"""Inclusive physical address ranges and the one operation the header needs: subtraction.

Ranges are (start, end) tuples with an inclusive end, as /proc/iomem prints them
and as the kernel's struct crash_mem holds them.
"""

import bisect
from collections.abc import Iterable

Range = tuple[int, int]

MIB = 1 << 20


def subtract(ranges: Iterable[Range], holes: Iterable[Range]) -> list[Range]:
    """Remove every hole from every range, splitting where a hole falls inside.

    Input order is kept (the RAM list is already ascending); the holes may overlap each other or be out of
    order. They are merged first, so each range looks only at the holes that reach it: O((n + m) log m),
    not n * m (8192 RAM ranges against 8192 PT_LOADs took 1.8 s the quadratic way).
    """
    merged: list[list[int]] = []
    for start, end in sorted(holes):
        if merged and start <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    ends = [end for _start, end in merged]
    out: list[Range] = []
    for start, end in ranges:
        cursor = start
        for at in range(bisect.bisect_left(ends, start), len(merged)):
            hole_start, hole_end = merged[at]
            if hole_start > end:
                break
            if hole_start > cursor:
                out.append((cursor, hole_start - 1))
            cursor = max(cursor, hole_end + 1)
            if cursor > end:
                break
        if cursor <= end:
            out.append((cursor, end))
    return out


def size_text(nbytes: int) -> str:
    """A size the way an admin reads it: whole units where exact, else one decimal."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            value = nbytes / (1 << shift)
            return f"{value:.0f} {unit}" if nbytes % (1 << shift) == 0 else f"{value:.1f} {unit}"
    return f"{nbytes} B"
