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

CHUNK = 1024  # elements per comparison on the way in; the last chunk is bisected


def common_prefix(a: S, b: S) -> int:
    """How many leading elements `a` and `b` share."""
    n = min(len(a), len(b))
    at = 0
    while at + CHUNK <= n and a[at:at + CHUNK] == b[at:at + CHUNK]:
        at += CHUNK
    low, high = at, min(at + CHUNK, n)  # a[:low] == b[:low]; the first difference, if any, is before high
    while low < high:
        mid = (low + high + 1) // 2
        if a[low:mid] == b[low:mid]:
            low = mid
        else:
            high = mid - 1
    return low


def common_ends(a: S, b: S) -> tuple[int, int]:
    """(prefix, suffix): how many leading and trailing elements `a` and `b` share, the two never overlapping
    in either, so a[prefix:len(a) - suffix] and b[prefix:len(b) - suffix] are what differs."""
    prefix = common_prefix(a, b)
    limit = min(len(a), len(b)) - prefix
    suffix = common_prefix(a[::-1][:limit], b[::-1][:limit])
    return prefix, suffix


def rows_differing(a: bytes, b: bytes, row: int) -> tuple[int, int]:
    """common_ends() of two tables of `row`-byte records, in whole records."""
    prefix, suffix = common_ends(a, b)
    return prefix // row, suffix // row


def spliced(old: tuple[T, ...], prefix: int, suffix: int, middle: Iterable[T]) -> tuple[T, ...]:
    """old with everything between its first `prefix` and last `suffix` elements replaced by `middle`."""
    return old[:prefix] + tuple(middle) + old[len(old) - suffix:]
