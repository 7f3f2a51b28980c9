# SPDX-License-Identifier: GPL-2.0-only
"""Replies kept in memory, so that a client asking again and again costs the loop next to nothing.

Some replies depend only on the daemon's revision (`header`), some also on a
fresh look at the system (`verify`: a snapshot of 8000 ranges costs the loop
tens of ms, and catches drift no event announced). A kept reply carries the
revision it was computed at and the time its computation started:

- it answers any request of the same revision read before that start: that
  is as fresh as a computation of its own, so one computation answers every
  request already read when it began (a client pipelining a thousand
  `verify` requests costs one snapshot, not a thousand);
- with a max age, a peer other than root takes one that old at most;
- root always gets a fresh one, but not at any rate: a computation for root
  starts only once the last one has been followed by enough idle time that
  they take at most FRESH_SHARE of the loop (idle MAX_REST_S at most, so a
  slow snapshot does not make root wait past its timeout). A request sooner
  waits (a Later, which the server holds the client on), and the next
  computation, whoever it is for, answers everyone waiting. Root's reply can
  be late, never stale, and another client's `status` never waits behind a
  stream of them.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..service.later import Later

FRESH_SHARE = 0.1  # at most this share of the loop's time goes to fresh computations root waits for...
MAX_REST_S = 1.0  # ...unless one takes over 0.1 s: root waits no longer for its turn (crashhpctl waits 10 s)


@dataclass(frozen=True, slots=True)
class _Reply:
    revision: int
    started_at: float
    reply: bytes


@dataclass(slots=True)
class _Waiting:
    compute: Callable[[], bytes]  # the first waiter's: failures are logged against that peer
    laters: list[Later[bytes]] = field(default_factory=list)


class Kept:
    """The kept replies of every op, and root's requests waiting for a fresh one."""

    def __init__(self, revision: Callable[[], int], clock: Callable[[], float] = time.monotonic) -> None:
        self._revision = revision
        self._clock = clock
        self._replies: dict[str, _Reply] = {}
        self._rested_at: dict[str, float] = {}  # op -> when a computation for root may start again
        self._waiting: dict[str, _Waiting] = {}

    def reply(self, op: str, compute: Callable[[], bytes], max_age_s: float | None, root: bool,
              received_at: float) -> bytes | Later[bytes]:
        """The reply to a request read at `received_at`: kept, computed now, or Later. `compute` never raises."""
        revision, now = self._revision(), self._clock()
        kept = self._replies.get(op)
        if kept is not None and kept.revision == revision and (
                max_age_s is None or kept.started_at >= received_at
                or (not root and now - kept.started_at < max_age_s)):
            return kept.reply
        if max_age_s is not None and root and now < self._rested_at.get(op, now):
            waiting = self._waiting.setdefault(op, _Waiting(compute))
            later: Later[bytes] = Later()
            waiting.laters.append(later)
            return later
        return self._compute(op, compute)

    def next_deadline(self) -> float | None:
        """When the next computation root waits for may start."""
        return min((self._rested_at[op] for op in self._waiting), default=None)

    def expire(self, now: float) -> None:
        for op in [op for op in self._waiting if self._rested_at[op] <= now]:
            self._compute(op, self._waiting[op].compute)

    def _compute(self, op: str, compute: Callable[[], bytes]) -> bytes:
        """A new reply for `op`; it answers whoever waits for one too, as all their requests were read before."""
        revision, started = self._revision(), self._clock()
        reply = compute()
        ended = self._clock()
        self._replies[op] = _Reply(revision, started, reply)
        self._rested_at[op] = ended + min((ended - started) * (1 / FRESH_SHARE - 1), MAX_REST_S)
        waiting = self._waiting.pop(op, None)
        for later in waiting.laters if waiting is not None else []:
            later.resolve(reply)
        return reply
