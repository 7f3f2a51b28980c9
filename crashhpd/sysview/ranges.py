# SPDX-License-Identifier: GPL-2.0-only
"""Inclusive physical address ranges and the one operation the header needs: what a cover leaves out of them.

Ranges are (start, end) tuples with an inclusive end, as /proc/iomem prints them
and as the kernel's struct crash_mem holds them.
"""

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter

from .splice import common_ends

Range = tuple[int, int]

MIB = 1 << 20


_TOP = 1 << 64  # above every address: (a, _TOP) sorts after every range that starts at a


class Cover:
    """What some ranges cover: merged (adjacent and overlapping joined), ascending, disjoint.

    Built once per header and subtracted from often; a range that is exactly one of the merged ranges is
    covered without a search, so comparing two headers of 8192 RAM ranges that differ in a few costs a
    few searches, not 8192. Cover.of() merges again only where the source changed.
    """

    __slots__ = ("ranges", "source", "ascending", "_members")

    def __init__(self, ranges: Iterable[Range]) -> None:
        self.source = tuple(ranges)  # what it was built from, in its order
        self.ranges = _merged(sorted(self.source))
        self.ascending = _ascending(self.source)  # its source ascends without overlap: Cover.of() may splice
        self._members: frozenset[Range] | None = None

    @classmethod
    def of(cls, source: tuple[Range, ...], previous: "Cover | None" = None) -> "Cover":
        """Cover(source), merged again only around the rows in which `source` differs from `previous.source`."""
        if previous is None or not previous.ascending:
            return cls(source)
        window = changed_span(previous.source, source)
        if window is None:
            return previous
        (low, high), (first, stop) = window
        if not _ascending(source[max(first - 1, 0):stop + 1]):
            return cls(source)
        merged = previous.ranges
        i, j = touching(merged, low - 1, high + 1)
        if i < j:
            low, high = min(low, merged[i][0]), max(high, merged[j - 1][1])
        cover = cls.__new__(cls)
        cover.source = source
        cover.ranges = merged[:i] + _merged(source[bisect.bisect_left(source, (low,)):
                                                   bisect.bisect_right(source, (high, _TOP))]) + merged[j:]
        cover.ascending = True
        cover._members = None
        return cover

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cover) and self.ranges == other.ranges

    def __hash__(self) -> int:
        return hash(self.ranges)

    def bytes(self) -> int:
        return total_bytes(self.ranges)

    def missing(self, ranges: Iterable[Range]) -> list[Range]:
        """What of `ranges` this does not cover, in their order, split where it covers a middle part."""
        wanted = list(ranges)
        if self._members is None:
            self._members = frozenset(self.ranges)
        others = set(wanted).difference(self._members)  # a range that is exactly a merged one is covered
        return self.pieces([r for r in wanted if r in others]) if others else []  # in their order

    def pieces(self, ranges: Iterable[Range]) -> list[Range]:
        """missing() without the shortcut: a search per range, for a handful of them."""
        out: list[Range] = []
        for start, end in ranges:
            cursor = start
            at = max(bisect.bisect_right(self.ranges, (start, _TOP)) - 1, 0)
            for hole_start, hole_end in self.ranges[at:]:
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


@dataclass(frozen=True, slots=True)
class Missing:
    """cover.missing(wanted), kept with what it was computed from so the next one is computed only where the
    cover or the wanted rows changed: a hotplug moves a few of 8192 rows (tests/bench/update_cost.py)."""

    cover: Cover
    wanted: tuple[Range, ...]
    ranges: tuple[Range, ...]
    ascending: bool  # wanted ascends without overlap: the pieces then ascend too, and can be spliced

    @classmethod
    def of(cls, cover: Cover, wanted: tuple[Range, ...], previous: "Missing | None" = None) -> "Missing":
        if previous is None or not previous.ascending:
            return cls(cover, wanted, tuple(cover.missing(wanted)), _ascending(wanted))
        rows = changed_span(previous.wanted, wanted)
        if rows is not None and not _ascending(wanted[max(rows[1][0] - 1, 0):rows[1][1] + 1]):
            return cls(cover, wanted, tuple(cover.missing(wanted)), False)
        spans = [rows[0]] if rows is not None else []
        if cover is not previous.cover:
            merged = changed_span(previous.cover.ranges, cover.ranges)
            spans += [merged[0]] if merged is not None else []
        if not spans:
            return cls(cover, wanted, previous.ranges, True)
        low, high = min(s[0] for s in spans), max(s[1] for s in spans)
        for rows_of in (previous.wanted, wanted):  # whole rows: a row's pieces come from it alone
            i, j = touching(rows_of, low, high)
            if i < j:
                low, high = min(low, rows_of[i][0]), max(high, rows_of[j - 1][1])
        middle = cover.pieces(wanted[bisect.bisect_left(wanted, (low,)):bisect.bisect_right(wanted, (high, _TOP))])
        before = previous.ranges
        return cls(cover, wanted, before[:bisect.bisect_left(before, (low,))] + tuple(middle)
                   + before[bisect.bisect_right(before, (high, _TOP)):], True)


def changed_span(old: tuple[Range, ...], new: tuple[Range, ...]) -> tuple[Range, Range] | None:
    """Where two range lists differ: the addresses the differing rows span (in either), and the rows
    [first, stop) of `new` that differ; None when they are equal."""
    prefix, suffix = common_ends(old, new)
    rows = old[prefix:len(old) - suffix] + new[prefix:len(new) - suffix]
    if not rows:
        return None
    return (min(r[0] for r in rows), max(r[1] for r in rows)), (prefix, len(new) - suffix)


def touching(rows: tuple[Range, ...], low: int, high: int) -> tuple[int, int]:
    """[i, j): the rows (ascending, disjoint) that overlap low..high."""
    i = bisect.bisect_right(rows, (low, _TOP))
    if i > 0 and rows[i - 1][1] >= low:
        i -= 1
    return i, max(i, bisect.bisect_right(rows, (high, _TOP)))


def total_bytes(ranges: Sequence[Range]) -> int:
    """The bytes inclusive ranges span, summed in C: status asks it of 8192 ranges."""
    return int(sum(map(itemgetter(1), ranges)) - sum(map(itemgetter(0), ranges))) + len(ranges)


def total_bytes_since(old: tuple[Range, ...], old_total: int, new: tuple[Range, ...]) -> int:
    """total_bytes(new), given total_bytes(old) of a list it shares its start and end with: only the rows between
    the common ends are summed, so a hotplug that moves a few of 8192 ranges costs a comparison, not two sums."""
    prefix, suffix = common_ends(old, new)
    return old_total - total_bytes(old[prefix:len(old) - suffix]) + total_bytes(new[prefix:len(new) - suffix])


def _merged(ranges: Iterable[Range]) -> tuple[Range, ...]:
    """Sorted ranges, adjacent and overlapping ones joined."""
    merged: list[Range] = []
    for start, end in ranges:
        if merged and start <= merged[-1][1] + 1:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return tuple(merged)


def _ascending(rows: tuple[Range, ...]) -> bool:
    """Every row well formed, each starting after the one before ends."""
    return all(start <= end for start, end in rows) and all(a[1] < b[0] for a, b in zip(rows, rows[1:]))


def size_text(nbytes: int) -> str:
    """A size the way an admin reads it: whole units where exact, else one decimal."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            value = nbytes / (1 << shift)
            return f"{value:.0f} {unit}" if nbytes % (1 << shift) == 0 else f"{value:.1f} {unit}"
    return f"{nbytes} B"
