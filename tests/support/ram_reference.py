# SPDX-License-Identifier: GPL-2.0-only
"""The RAM a header must cover, computed independently of crashhpd: a point sweep over every boundary.

Every boundary of every RAM line and hole cuts the address space into elementary pieces, and
a piece is kept when its first address is in no hole. The property tests and the host test
check crashhpd's interval subtraction against it.
"""

Range = tuple[int, int]
MIB = 1 << 20


def expected_ram(ram_lines: list[Range], holes: list[Range]) -> list[Range]:
    """Each RAM line minus every hole, line by line in address order, by a point sweep."""
    cuts = {p for start, end in ram_lines + holes for p in (start, end + 1)}
    out: list[Range] = []
    for start, end in sorted(ram_lines):
        bounds = sorted({start, end + 1} | {p for p in cuts if start < p <= end})
        run_start = None
        for lo in bounds[:-1]:  # each piece runs from one bound to just before the next
            kept = not any(h_start <= lo <= h_end for h_start, h_end in holes)
            if kept and run_start is None:
                run_start = lo
            if not kept and run_start is not None:
                out.append((run_start, lo - 1))
                run_start = None
        if run_start is not None:
            out.append((run_start, end))
    return out
