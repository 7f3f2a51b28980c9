# SPDX-License-Identifier: GPL-2.0-only
"""What a cover leaves out (the RAM minus the holes) against a brute-force oracle: the sets of addresses, one by
one, on small ranges; and its splices against the whole computation."""

from hypothesis import given
from hypothesis import strategies as st

from crashhpd.sysview.ranges import Cover


def subtract(ranges, holes):  # type: ignore[no-untyped-def]
    return Cover(holes).missing(ranges)  # the RAM plan() keeps: System RAM less the excluded ranges


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


# Cover.of and Missing.of against a cover and a missing() computed whole: whatever rows change between two
# lists, the spliced result is the one computed from scratch. Gaps of 0 to 3 make adjacent rows common, and most
# edits keep the rows ascending (the path that splices), some do not (the path that builds whole).
steps = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), max_size=14)


def _rows(steps: list[tuple[int, int]], at: int = 0) -> tuple[tuple[int, int], ...]:
    """Ascending disjoint (possibly adjacent) rows from (gap, length) steps."""
    rows = []
    for gap, length in steps:
        rows.append((at + gap, at + gap + length))
        at += gap + length + 1
    return tuple(rows)


@st.composite
def edits(draw):
    """(rows, edited rows): a run of rows replaced, the new ones usually in the gap the old ones left."""
    rows = _rows(draw(steps))
    at = draw(st.integers(0, len(rows)))
    cut = draw(st.integers(0, len(rows) - at))
    low = rows[at - 1][1] + 1 if at else 0
    if draw(st.booleans()):
        insert = _rows(draw(steps), low)
        high = rows[at + cut][0] if at + cut < len(rows) else None
        insert = tuple(r for r in insert if high is None or r[1] < high)
    else:
        insert = tuple(draw(spans))
    return rows, rows[:at] + insert + rows[at + cut:]


@given(edits())
def test_a_cover_rebuilt_from_its_previous_is_the_cover_built_whole(edit):
    from crashhpd.sysview.ranges import Cover
    rows, edited = edit
    rebuilt = Cover.of(edited, Cover(rows))
    assert rebuilt.ranges == Cover(edited).ranges
    assert rebuilt.source == edited


@given(edits(), edits())
def test_missing_recomputed_from_its_previous_is_missing_computed_whole(holes, wanted):
    from crashhpd.sysview.ranges import Cover, Missing
    first = Missing.of(Cover(holes[0]), wanted[0])
    for cover, want in ((Cover(holes[0]), wanted[1]),  # the wanted rows change
                        (Cover.of(holes[1], Cover(holes[0])), wanted[0]),  # the cover changes
                        (Cover(holes[1]), wanted[1])):  # both
        again = Missing.of(cover, want, first)
        assert again.ranges == tuple(cover.missing(want)), (cover.ranges, want)


@given(edits())
def test_a_total_resummed_between_the_common_ends_is_the_whole_sum(edit):
    from crashhpd.sysview.ranges import total_bytes, total_bytes_since
    rows, edited = edit
    assert total_bytes_since(rows, total_bytes(rows), edited) == sum(end - start + 1 for start, end in edited)
