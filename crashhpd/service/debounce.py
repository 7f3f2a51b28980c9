# SPDX-License-Identifier: GPL-2.0-only
"""When to act on a burst of events: a trailing quiet window, capped by a maximum delay.

Hot-adding 480 GiB is 7680 events in a few seconds. Waiting for `quiet`
seconds without an event turns the burst into one update; `max_delay` from
the first pending event guarantees an update even while a storm never pauses.
Paced (where each update reloads the crash kernel), every update the storm forces
doubles the next maximum delay, up to MAX_STRETCH times: a 144 s storm costs a
handful of reloads, not one per max_delay; its end still waits only `quiet`.
The policy takes time as an argument, so it is tested without sleeping.
"""

from dataclasses import dataclass

MAX_STRETCH = 32  # a storm's updates come at most max_delay * 32 apart (64 s with the default 2 s)


@dataclass(slots=True)
class Debouncer:
    quiet: float  # seconds without an event that end a burst
    max_delay: float  # seconds from a burst's first event to its update, at most
    first_at: float | None = None  # time of the first event not yet acted on
    last_at: float | None = None  # time of the latest such event
    pending: int = 0  # events since the last update
    paced: bool = False  # updates reload the crash kernel: a storm's forced updates space out
    stretch: int = 1  # the maximum delay's factor now: doubled by each update a storm forced

    def event(self, now: float, count: int = 1) -> None:
        """Record events seen at `now`."""
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        self.pending += count

    def due(self) -> float | None:
        """When the pending burst must be acted on, or None when nothing is pending."""
        if self.first_at is None or self.last_at is None:
            return None
        return min(self.last_at + self.quiet, self.first_at + self.max_delay * self.stretch)

    def ready(self, now: float) -> bool:
        due = self.due()
        return due is not None and now >= due

    def take(self, now: float | None = None) -> int:
        """Start the update at `now`: returns how many events it covers and clears the burst. An update the
        maximum delay forced while events still came (paced) stretches the next; one after a quiet resets it."""
        if now is not None and self.last_at is not None:
            storming = self.paced and now < self.last_at + self.quiet
            self.stretch = min(self.stretch * 2, MAX_STRETCH) if storming else 1
        taken = self.pending
        self.first_at = self.last_at = None
        self.pending = 0
        return taken
