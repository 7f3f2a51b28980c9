# SPDX-License-Identifier: GPL-2.0-only
"""The reservation counted from what the kernel lists, and the need taken from the measured table only."""

from crashhpd.sysview.headroom import GIB, MEASURED, MIB, Headroom, Measured, headroom, needed, newly_short, reserved

ROWS = (Measured(4 * GIB, 192 * MIB, 40 * MIB), Measured(16 * GIB, 256 * MIB, 40 * MIB))
SEGMENTS = ((0x2f000000, 30 * MIB), (0x2ff00000, 10 * MIB))  # 40 MiB: as measured


def test_reserved_sums_every_crash_kernel_range_and_crash_cma() -> None:
    low, high = (0x1000000, 0x1000000 + 128 * MIB - 1), (0x100000000, 0x100000000 + 256 * MIB - 1)
    cma = (0x200000000, 0x200000000 + 64 * MIB - 1)
    assert reserved([high, low], [cma], 256 * MIB) == 448 * MIB


def test_reserved_falls_back_to_kexec_crash_size_and_is_unknown_without_either() -> None:
    assert reserved([], [], 256 * MIB) == 256 * MIB
    assert reserved([], [], 0) is None
    assert reserved([], [], None) is None


def test_the_need_is_the_row_measured_at_or_above_this_ram() -> None:
    assert needed(4 * GIB, SEGMENTS, ROWS)[0] == 192 * MIB
    assert needed(5 * GIB, SEGMENTS, ROWS)[0] == 256 * MIB  # never the smaller row below
    assert needed(1 * GIB, SEGMENTS, ROWS)[0] == 192 * MIB


def test_above_what_was_measured_the_need_is_unknown_not_extrapolated() -> None:
    need, reason, _ = needed(17 * GIB, SEGMENTS, ROWS)
    assert need is None and "more than was measured (16 GiB)" in reason
    assert needed(GIB, SEGMENTS, ())[0] is None


def test_a_larger_loaded_image_makes_the_need_a_lower_bound_a_smaller_one_takes_nothing_off() -> None:
    bigger = (*SEGMENTS, (0x30000000, 24 * MIB))
    need, reason, at_least = needed(4 * GIB, bigger, ROWS)
    assert (need, at_least) == (216 * MIB, True) and "a crash image 24 MiB smaller than the one loaded" in reason
    assert needed(4 * GIB, SEGMENTS[:1], ROWS)[::2] == (192 * MIB, False)


def test_without_the_loaded_image_the_need_is_unknown() -> None:
    assert needed(4 * GIB, None, ROWS) == (None, "the loaded crash image's segments could not be read", False)
    assert needed(4 * GIB, (), ROWS) == (None, "no crash image is loaded", False)


def test_headroom_is_reserved_less_needed() -> None:
    h = headroom(4 * GIB, SEGMENTS, [(0, 128 * MIB - 1)], [], 128 * MIB, ROWS)
    assert (h.reserved_bytes, h.needed_bytes, h.headroom_bytes) == (128 * MIB, 192 * MIB, -64 * MIB)
    assert Headroom(None, 192 * MIB, "").headroom_bytes is None


def test_a_spell_of_being_short_starts_once_and_ends_when_the_need_is_met_or_unknown() -> None:
    fine, short, unknown = Headroom(256 * MIB, 192 * MIB, ""), Headroom(128 * MIB, 192 * MIB, ""), Headroom(
        128 * MIB, None, "")
    assert newly_short(fine, short) and newly_short(unknown, short)
    assert not newly_short(short, Headroom(128 * MIB, 256 * MIB, ""))  # still short after another hot-add
    assert not newly_short(short, fine) and not newly_short(fine, fine) and not newly_short(short, unknown)


def test_the_measured_table_ascends_and_each_row_holds_its_own_image() -> None:
    assert MEASURED, "the model has no measurement: run tests/bench/crashkernel_headroom.py"
    assert [m.ram_bytes for m in MEASURED] == sorted({m.ram_bytes for m in MEASURED})
    assert all(0 < m.loaded_bytes < m.reservation_bytes for m in MEASURED)
