# SPDX-License-Identifier: GPL-2.0-only
"""What one client of the socket may cost: a request budget per uid, and one log line per peer per interval.

Members of the socket's group are trusted to read, not to spend the loop's
time: a group member pipelining thousands of requests, or reconnecting in a
loop, must leave root's `status` and the hotplug tracking unaffected, and a
refused request repeated 100,000 times must not become 100,000 journal lines
that push crashhpd's own lines past journald's rate limit. Root (uid 0) is
never limited: it is who fixes things when something is wrong.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

REQUESTS_PER_S = 20.0  # a non-root uid's sustained request rate (crashhpctl runs one per call)
REQUEST_BURST = 40.0  # ... and how many it may send at once
LOG_INTERVAL_S = 60.0  # one line per peer and kind of event in this long; the rest are counted
MAX_TRACKED = 4096  # uids and peers remembered; a table this full is cleared rather than grown


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class Budgets:
    """A token bucket per non-root uid, shared by all its connections (reconnecting resets nothing)."""

    rate: float = REQUESTS_PER_S
    burst: float = REQUEST_BURST
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[int, _Bucket] = field(default_factory=dict)

    def take(self, uid: int) -> bool:
        """Whether `uid` may make one more request now."""
        if uid == 0:
            return True
        now = self.clock()
        bucket = self._buckets.get(uid)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED:
                self._buckets.clear()
            bucket = self._buckets[uid] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens < 1:
            return False
        bucket.tokens -= 1
        return True

    def retry_after(self, uid: int) -> float:
        bucket = self._buckets.get(uid)
        return 0.0 if bucket is None else max(0.0, (1 - bucket.tokens) / self.rate)


@dataclass(slots=True)
class LogLimit:
    """Whether a line about a peer may be logged now: once per (key) per interval; the rest are counted."""

    interval: float = LOG_INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    suppressed: int = 0
    _last: dict[object, tuple[float, int]] = field(default_factory=dict)  # key -> (logged at, suppressed since)

    def allow(self, key: object) -> tuple[bool, int]:
        """(log it?, how many lines like it were held back since the last one logged)."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval:
            self._last[key] = (last[0], last[1] + 1)
            self.suppressed += 1
            return False, 0
        if len(self._last) >= MAX_TRACKED:
            self._last.clear()
        self._last[key] = (now, 0)
        return True, last[1] if last is not None else 0
