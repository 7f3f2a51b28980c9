# SPDX-License-Identifier: GPL-2.0-only
"""Inclusive physical address ranges and the one operation the header needs: subtraction.

Ranges are (start, end) tuples with an inclusive end, as /proc/iomem prints them
and as the kernel's struct crash_mem holds them.
"""

import bisect
from collections.abc import Iterable

Range = tuple[int, int]

MIB = 1 << 20


class Cover:
    """What some ranges cover: merged (adjacent and overlapping joined), ascending, disjoint.

    Built once per header and subtracted from often; a range that is exactly one of the merged ranges is
    covered without a search, so comparing two headers of 8192 RAM ranges that differ in a few costs a
    few searches, not 8192 (tests/bench/update_cost.py).
    """

    __slots__ = ("ranges", "_ends", "_members")

    def __init__(self, ranges: Iterable[Range]) -> None:
        merged: list[Range] = []
        for start, end in sorted(ranges):
            if merged and start <= merged[-1][1] + 1:
                if end > merged[-1][1]:
                    merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        self.ranges = tuple(merged)
        self._ends = [end for _start, end in merged]
        self._members = frozenset(merged)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cover) and self.ranges == other.ranges

    def __hash__(self) -> int:
        return hash(self.ranges)

    def bytes(self) -> int:
        return sum(end - start + 1 for start, end in self.ranges)

    def missing(self, ranges: Iterable[Range]) -> list[Range]:
        """What of `ranges` this does not cover, in their order, split where it covers a middle part."""
        wanted = list(ranges)
        others = set(wanted).difference(self._members)  # a range that is exactly a merged one is covered
        if not others:
            return []
        out: list[Range] = []
        for start, end in [r for r in wanted if r in others]:  # in their order; usually a handful
            cursor = start
            for at in range(bisect.bisect_left(self._ends, start), len(self.ranges)):
                hole_start, hole_end = self.ranges[at]
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


def subtract(ranges: Iterable[Range], holes: Iterable[Range]) -> list[Range]:
    """Remove every hole from every range, splitting where a hole falls inside; input order is kept."""
    return Cover(holes).missing(ranges)


def size_text(nbytes: int) -> str:
    """A size the way an admin reads it: whole units where exact, else one decimal."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            value = nbytes / (1 << shift)
            return f"{value:.0f} {unit}" if nbytes % (1 << shift) == 0 else f"{value:.1f} {unit}"
    return f"{nbytes} B"
