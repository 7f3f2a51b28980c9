# SPDX-License-Identifier: GPL-2.0-only
"""The debounce policy, driven by an injected clock: no sleeping."""

from crashhpd.service.debounce import Debouncer


def run(events: list[float], quiet: float = 0.2, max_delay: float = 2.0,
        step: float = 0.001) -> list[tuple[float, int]]:
    """Feed event times, tick a fake clock, return (time, events) of every update."""
    d = Debouncer(quiet, max_delay)
    updates: list[tuple[float, int]] = []
    queue = sorted(events)
    now = 0.0
    end = (queue[-1] if queue else 0) + max_delay + 1
    i = 0
    while now <= end:
        while i < len(queue) and queue[i] <= now:
            d.event(queue[i])
            i += 1
        if d.ready(now):
            updates.append((round(now, 3), d.take()))
        now = round(now + step, 6)
    return updates


def test_nothing_pending_means_no_deadline():
    d = Debouncer(0.2, 2.0)
    assert d.due() is None
    assert not d.ready(100.0)


def test_one_burst_is_one_update_after_the_quiet_window():
    burst = [1.0 + k * 0.001 for k in range(100)]  # 100 events within 0.1 s
    updates = run(burst)
    assert len(updates) == 1
    at, count = updates[0]
    assert count == 100
    assert abs(at - (burst[-1] + 0.2)) < 0.0015


def test_quiet_window_restarts_on_every_event():
    d = Debouncer(0.2, 2.0)
    d.event(0.0)
    d.event(0.15)
    assert not d.ready(0.3)
    assert d.due() == 0.35
    assert d.ready(0.35)


def test_trickle_slower_than_quiet_gives_one_update_per_event():
    trickle = [0.0, 0.5, 1.0, 1.5]
    updates = run(trickle)
    assert [c for _, c in updates] == [1, 1, 1, 1]
    assert [t for t, _ in updates] == [0.2, 0.7, 1.2, 1.7]


def test_storm_longer_than_max_delay_still_updates_every_max_delay():
    storm = [k * 0.01 for k in range(1000)]  # an event every 10 ms for 10 s: never 200 ms quiet
    updates = run(storm)
    times = [t for t, _ in updates]
    assert times[0] == 2.0  # the first update does not wait for a quiet window that never comes
    # each later burst starts with the first event after an update (10 ms later) and ends max_delay after it
    assert all(b - a <= 2.0 + 0.011 for a, b in zip(times, times[1:]))
    assert sum(c for _, c in updates) == 1000
    assert len(updates) == 5


def test_take_resets_the_burst():
    d = Debouncer(0.2, 2.0)
    d.event(5.0, count=3)
    assert d.take() == 3
    assert d.due() is None and d.pending == 0
    d.event(9.0)
    assert d.due() == 9.2


def test_max_delay_counts_from_the_first_pending_event():
    d = Debouncer(0.2, 1.0)
    for k in range(12):
        d.event(k * 0.1)
    assert d.due() == 1.0  # first at 0.0 + 1.0, earlier than last (1.1) + 0.2


def storm(paced: bool, seconds: float = 144.0, rate: float = 26.7) -> list[tuple[float, int]]:
    """The public report's hot-add: 3840 events at 26.7 a second, each update taken at once (its cost aside)."""
    d = Debouncer(0.2, 2.0, paced=paced)
    events = [i / rate for i in range(int(seconds * rate))]
    updates, now, i = [], 0.0, 0
    while now <= events[-1] + 1:
        while i < len(events) and events[i] <= now:
            d.event(events[i])
            i += 1
        if d.ready(now):
            updates.append((round(now, 2), d.take(now)))
        now = round(now + 0.01, 6)
    return updates


def test_a_paced_storm_spaces_its_updates_out_and_its_end_still_waits_only_the_quiet_window():
    paced, plain = storm(True), storm(False)
    assert len(plain) == 72  # every 2 s for 144 s, and the end: the reloads of today's kexec backend
    times = [t for t, _ in paced]
    gaps = [b - a for a, b in zip(times, times[1:5])]  # from one burst's first event, a few ms after the update
    assert times[0] == 2.0 and all(expected <= gap < expected + 0.05 for gap, expected in zip(gaps, (4, 8, 16, 32)))
    assert len(paced) == 7 and sum(n for _, n in paced) == sum(n for _, n in plain) == 3844
    assert paced[-1][0] - 3843 / 26.7 <= 0.2 + 0.01  # the newest state right after the storm's quiet window


def test_a_quiet_window_ends_the_stretch():
    d = Debouncer(0.2, 2.0, paced=True)
    d.event(0.0)
    d.event(1.9)
    assert d.ready(2.0) and d.take(2.0) == 2 and d.stretch == 2  # forced while events came
    d.event(2.05)
    assert d.due() == 2.25 and d.take(2.25) == 1 and d.stretch == 1  # ended by quiet: back to 2 s
