# SPDX-License-Identifier: GPL-2.0-only
"""Range subtraction against a brute-force oracle: the sets of addresses, one by one, on small ranges."""

from hypothesis import given
from hypothesis import strategies as st

from crashhpd.sysview.ranges import subtract

spans = st.lists(st.tuples(st.integers(0, 200), st.integers(0, 40)).map(lambda s: (s[0], s[0] + s[1])),
                 max_size=12)


def addresses(ranges: list[tuple[int, int]]) -> set[int]:
    return {a for start, end in ranges for a in range(start, end + 1)}


@given(spans.map(sorted), spans)
def test_subtract_leaves_exactly_the_addresses_no_hole_covers(ranges, holes):
    out = subtract(ranges, holes)
    assert addresses(out) == addresses(ranges) - addresses(holes)
    assert all(start <= end for start, end in out)


@given(spans.map(lambda r: sorted(set(r))), spans)
def test_each_range_keeps_its_place_and_its_pieces_stay_inside_it(ranges, holes):
    """Disjoint ascending input (the RAM list) gives disjoint ascending pieces, none outside its range."""
    disjoint: list[tuple[int, int]] = []
    for r in ranges:
        if not disjoint or r[0] > disjoint[-1][1]:
            disjoint.append(r)
    out = subtract(disjoint, holes)
    assert out == sorted(out) and all(a[1] < b[0] for a, b in zip(out, out[1:]))
    assert all(any(s <= start and end <= e for s, e in disjoint) for start, end in out)


def test_many_ranges_against_many_holes():
    """8192 ranges against 8192 holes, as a hot-added guest's header has them (its cost: tests/bench/update_cost.py)."""
    ranges = [(i * 4, i * 4 + 1) for i in range(8192)]
    holes = [(i * 4 + 1, i * 4 + 2) for i in range(8192)]
    assert subtract(ranges, holes) == [(i * 4, i * 4) for i in range(8192)]
