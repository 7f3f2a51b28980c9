# SPDX-License-Identifier: GPL-2.0-only
"""splice.common_ends against a brute-force walk, element by element, from each end."""

from hypothesis import given, settings
from hypothesis import strategies as st

from crashhpd.sysview.splice import CHUNK, common_ends, rows_differing, spliced


def brute(a, b) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    n = min(len(a), len(b))
    prefix = next((i for i in range(n) if a[i] != b[i]), n)
    suffix = next((i for i in range(n - prefix) if a[len(a) - 1 - i] != b[len(b) - 1 - i]), n - prefix)
    return prefix, suffix


edits = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3 * CHUNK), st.binary(max_size=4)), max_size=3)


def edited(data: bytes, changes: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(data)
    for kind, at, part in changes:
        at = min(at, len(out))
        if kind == 0:
            out[at:at] = part
        elif kind == 1:
            del out[at:at + len(part) + 1]
        else:
            out[at:at + len(part)] = part
    return bytes(out)


@settings(max_examples=300)
@given(st.integers(0, 3 * CHUNK), st.integers(0, 2), edits)
def test_the_common_ends_are_those_a_walk_finds_in_bytes_str_and_tuples(size, fill, changes):
    """Long runs of one value (fill) make most of a sequence match: the chunks and the bisection both count."""
    a = bytes([fill]) * size
    b = edited(a, changes)
    assert common_ends(a, b) == brute(a, b)
    assert common_ends(a.decode("latin-1"), b.decode("latin-1")) == brute(a, b)
    assert common_ends(tuple(a), tuple(b)) == brute(a, b)


def test_rows_differing_counts_whole_rows_and_spliced_puts_the_middle_back():
    rows = tuple(bytes([i]) * 4 for i in range(10))
    old, new = b"".join(rows), b"".join(rows[:3] + (b"abcd",) + rows[5:])
    assert rows_differing(old, new, 4) == (3, 5)
    assert spliced(rows, 3, 5, (b"abcd",)) == rows[:3] + (b"abcd",) + rows[5:]
