# SPDX-License-Identifier: GPL-2.0-only
"""Kept replies on a clock of the test's: what one computation may answer, and how often root makes one."""

from dataclasses import dataclass, field

import pytest

from crashhpd.control.kept import FRESH_SHARE, MAX_REST_S, Kept
from crashhpd.service.later import Later

COST_S = 0.02  # what one computation takes on the test's clock
MAX_AGE_S = 1.0


@dataclass
class World:
    """The clock, the daemon's revision, and a computation that counts itself and takes COST_S."""

    now: float = 100.0
    revision: int = 1
    cost: float = COST_S
    computed: list[float] = field(default_factory=list)  # when each computation started

    def compute(self) -> bytes:
        self.computed.append(self.now)
        self.now += self.cost
        return f"reply {len(self.computed)}".encode()


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def kept(world: World) -> Kept:
    return Kept(lambda: world.revision, lambda: world.now)


def ask(kept: Kept, world: World, root: bool = True, received_at: float | None = None,
        max_age_s: float | None = MAX_AGE_S) -> bytes | Later[bytes]:
    return kept.reply("verify", world.compute, max_age_s, root, world.now if received_at is None else received_at)


def test_one_computation_answers_every_request_read_before_it_began(kept, world):
    read_at = world.now  # a client pipelined 1000 requests: all were read at once
    replies = {ask(kept, world, received_at=read_at) for _ in range(1000)}
    assert replies == {b"reply 1"} and world.computed == [read_at]


def test_root_always_gets_a_computation_that_began_after_its_request_was_read(kept, world):
    assert ask(kept, world) == b"reply 1"
    world.now += 0.05
    read_at = world.now  # after the first computation began: it cannot answer this one
    waiting = [ask(kept, world, received_at=read_at) for _ in range(3)]
    assert all(isinstance(w, Later) and not w.done for w in waiting)
    rested = world.computed[0] + COST_S / FRESH_SHARE  # the first one's cost, then nine times as long idle
    assert kept.next_deadline() == pytest.approx(rested)
    kept.expire(rested - 0.001)
    assert not any(w.done for w in waiting) and len(world.computed) == 1
    world.now = rested
    kept.expire(world.now)
    assert [w.result() for w in waiting] == [b"reply 2"] * 3  # one computation for all three
    assert world.computed[1] >= read_at and kept.next_deadline() is None


def test_root_waits_only_when_it_asks_again_too_soon(kept, world):
    assert ask(kept, world) == b"reply 1"
    world.now += COST_S / FRESH_SHARE  # idle long enough
    assert ask(kept, world) == b"reply 2"


def test_after_a_slow_computation_root_waits_at_most_max_rest(kept, world):
    world.cost = MAX_REST_S  # nine times as long idle would be 9 s
    assert ask(kept, world) == b"reply 1"
    assert isinstance(ask(kept, world), Later)
    assert kept.next_deadline() == pytest.approx(world.computed[0] + world.cost + MAX_REST_S)


def test_other_peers_take_a_reply_up_to_max_age_old_and_never_wait(kept, world):
    assert ask(kept, world, root=False) == b"reply 1"
    world.now += MAX_AGE_S / 2
    assert ask(kept, world, root=False) == b"reply 1"
    world.now += MAX_AGE_S
    assert ask(kept, world, root=False) == b"reply 2"
    world.revision += 1  # an update ended: the kept reply is no answer, and root would wait its turn now...
    waiting = ask(kept, world)
    assert isinstance(waiting, Later) and not waiting.done
    assert ask(kept, world, root=False) == b"reply 3"  # ...another peer's request is answered at once
    assert waiting.result() == b"reply 3" and kept.next_deadline() is None  # and that answers root's as well


def test_a_new_revision_is_a_new_computation(kept, world):
    assert kept.reply("header", world.compute, None, False, world.now) == b"reply 1"
    world.now += 10
    assert kept.reply("header", world.compute, None, True, world.now) == b"reply 1"  # revision alone decides
    world.revision += 1
    assert kept.reply("header", world.compute, None, True, world.now) == b"reply 2"  # never held back
    read_at = world.now - 60  # read before the first computation, but the revision changed since
    assert ask(kept, world, root=False, received_at=read_at) == b"reply 3"


def test_root_asking_without_pause_holds_the_loop_at_most_its_share(kept, world):
    """A root client that sends its next verify as soon as it has the last reply, for a minute."""
    start = world.now
    answered = 0
    while world.now < start + 60:
        reply = ask(kept, world)
        if isinstance(reply, Later):
            world.now = max(world.now, kept.next_deadline())
            kept.expire(world.now)
            assert reply.done
        answered += 1
    busy = len(world.computed) * COST_S
    assert answered == len(world.computed) > 100  # every reply fresh: one computation each
    assert busy <= FRESH_SHARE * (world.now - start) + COST_S
