# SPDX-License-Identifier: GPL-2.0-only
"""Where two long sequences differ: the common start and end, found by slice comparisons.

A hotplug changes a few lines of /proc/iomem and a few program headers of
8192; every stage that works row by row (the parse of /proc/iomem, the pack
and parse of the header) redoes only the rows between the common ends and
splices them in. Slices compare at memcmp speed, so finding the window
costs a few microseconds where touching every row in Python costs
milliseconds (tests/bench/update_cost.py).
"""

from collections.abc import Iterable
from typing import Any, TypeVar

S = TypeVar("S", str, bytes, tuple[Any, ...])  # slices of a tuple compare element by element, in C
T = TypeVar("T")

CHUNK = 1024  # elements in the first comparison; each next one doubles, and the one that differs is bisected


def common_prefix(a: S, b: S) -> int:
    """How many leading elements `a` and `b` share."""
    return _common(a, b, min(len(a), len(b)), 0, 0)


def common_ends(a: S, b: S) -> tuple[int, int]:
    """(prefix, suffix): how many leading and trailing elements `a` and `b` share, the two never overlapping
    in either, so a[prefix:len(a) - suffix] and b[prefix:len(b) - suffix] are what differs."""
    prefix = common_prefix(a, b)
    return prefix, _common(a, b, min(len(a), len(b)) - prefix, len(a), len(b))


def _common(a: S, b: S, limit: int, a_end: int, b_end: int) -> int:
    """How many elements, up to `limit`, a and b share from their starts (ends 0) or back from a_end and b_end:
    chunks compared on the way, the one that differs bisected. Slices, not reversed copies."""
    def same(low: int, high: int) -> bool:  # elements low..high-1 counted from the start, or back from the ends
        if not a_end:
            return a[low:high] == b[low:high]
        return a[a_end - high:a_end - low] == b[b_end - high:b_end - low]

    low, high, step = 0, min(CHUNK, limit), CHUNK
    while low < high and same(low, high):  # chunks that double: a few comparisons for 350 KB of /proc/iomem
        step *= 2
        low, high = high, min(high + step, limit)
    # the first `low` match; the first difference, if any, is before `high`
    while low < high:
        mid = (low + high + 1) // 2
        if same(low, mid):
            low = mid
        else:
            high = mid - 1
    return low


def rows_differing(a: bytes, b: bytes, row: int) -> tuple[int, int]:
    """common_ends() of two tables of `row`-byte records, in whole records."""
    prefix, suffix = common_ends(a, b)
    return prefix // row, suffix // row


def spliced(old: tuple[T, ...], prefix: int, suffix: int, middle: Iterable[T]) -> tuple[T, ...]:
    """old with everything between its first `prefix` and last `suffix` elements replaced by `middle`."""
    return old[:prefix] + tuple(middle) + old[len(old) - suffix:]
