# SPDX-License-Identifier: GPL-2.0-only
"""The daemon's side of the control contract: how each op is answered, and what a client may cost.

contract.OPS is the one table of ops (names, help, who may call them);
HANDLERS here gives each the function that answers it inside the event
loop, against the small `Target` interface the loop implements (an answer
may be a Later, for an op that waits for an update), and whether its reply
may be served from memory. A test holds the two tables to the same ops.

A request never takes the daemon down: a failure becomes an error reply,
and a bug is logged with its traceback and answered as `internal`, because
the hotplug tracking matters more than the admin's query.
"""

import base64
import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any, Protocol

from .. import log
from ..elfcorehdr.validate import NotAHeader, parse
from ..errors import CrashhpdError
from ..service.later import Later
from ..service.reconcile import Outcome
from ..service.status import ControlCounters, HeaderInForce, Status, Verdict
from ..sysview.loaded_header import LoadedHeader
from .contract import (
    OPS,
    HeaderResult,
    MetricsResult,
    ReconcileResult,
    RequestError,
    VerifyResult,
    encode_error,
    encode_result,
    parse_request,
)
from .kept import Kept
from .limits import Budgets, LogLimit
from .server import Peer

logger = logging.getLogger(__name__)

RECONCILE_REASON = "crashhpctl"
VERIFY_MAX_AGE_S = 1.0  # a verify reply is at most this old: a fresh snapshot of 8000 ranges costs tens of ms


class Target(Protocol):
    """What the ops ask of the daemon, and nothing more."""

    def status(self) -> Status: ...

    def header_in_force(self) -> HeaderInForce | None: ...

    def kernel_header(self) -> LoadedHeader: ...

    def verify(self) -> Verdict: ...

    def reconcile_now(self, reason: str) -> Later[tuple[Outcome | None, int]]:
        """Resolved once the update has ended: its outcome (None: it failed) and the events it took over."""
        ...

    def metrics_text(self) -> str: ...

    def revision(self) -> int:
        """Changes whenever an update ends or a reload swaps parts: what `header` and `verify` depend on."""
        ...


# --- the answers ----------------------------------------------------------------------------------


def status(target: Target) -> dict[str, Any]:
    """The Status as it is: the contract's StatusResult names the fields crashhpctl reads of it."""
    return dataclasses.asdict(target.status())


def header(target: Target) -> HeaderResult:
    found = target.header_in_force()
    if found is None:
        raise RequestError("no-header", f"the {target.status().backend} backend holds no header yet")
    return _header_result(found.data, found.applied.generation, found.capacity)


def kernel_header(target: Target) -> HeaderResult:
    """The header the kernel holds, read back from its memory now."""
    loaded = target.kernel_header()
    if not loaded.readable:
        raise RequestError("no-header", f"the kernel's header cannot be read: {loaded.reason}")
    return _header_result(loaded.header, target.status().generation, loaded.memsz)


def _header_result(data: bytes, generation: int, capacity: int | None) -> HeaderResult:
    try:
        segments = parse(data).to_json()["segments"]
    except NotAHeader as err:
        raise RequestError("failed", f"the header cannot be read: {err}") from None
    return HeaderResult(generation=generation, sha256=hashlib.sha256(data).hexdigest(), header_bytes=len(data),
                        capacity_bytes=capacity, data_base64=base64.b64encode(data).decode(), segments=segments)


def verify(target: Target) -> VerifyResult:
    verdict = target.verify()
    return VerifyResult(in_sync=verdict.in_sync, generation=verdict.generation, changes=verdict.changes,
                        cpus=len(verdict.built.model.cpu_notes), ram_ranges=len(verdict.built.model.ram),
                        source=verdict.source)


def reconcile(target: Target) -> Later[ReconcileResult]:
    """Answered after the update, a kexec load included: the reply waits, the loop does not."""
    return target.reconcile_now(RECONCILE_REASON).then(lambda ended: _reconciled(target, *ended))


def _reconciled(target: Target, outcome: Outcome | None, events: int) -> ReconcileResult:
    if outcome is None:
        raise RequestError("failed", target.status().last_error or "the update failed; see the daemon's log")
    return ReconcileResult(applied=outcome.applied is not None, generation=target.status().generation,
                           changes=outcome.changes, events=events, duration_s=outcome.duration_s)


def metrics(target: Target) -> MetricsResult:
    return MetricsResult(text=target.metrics_text())


# --- the table ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Handler:
    answer: Callable[[Target], Any]  # a result of the contract's shape, or a Later of one
    # kept in memory (kept.Kept): its answer depends only on the daemon's revision, and with a max age
    # also on a fresh snapshot (verify: drift no event announced), fresh for root, at most that old for others
    cached: bool = False
    max_age_s: float | None = None


HANDLERS: Mapping[str, Handler] = MappingProxyType({
    "status": Handler(status),
    "header": Handler(header, cached=True),
    "verify": Handler(verify, cached=True, max_age_s=VERIFY_MAX_AGE_S),
    "reconcile": Handler(reconcile),
    "metrics": Handler(metrics),
    "kernel-header": Handler(kernel_header),
})


class Dispatcher:
    """Turns request lines into reply lines for the server: the op table, applied with what a client may cost.

    A non-root uid has a request budget (limits.Budgets): past it, `busy`.
    The replies of cached ops are kept (kept.Kept: what one computation may
    answer, and how often root's fresh ones may be computed). A line about a
    peer (a refused request, a bug it triggered) is logged once per peer per
    interval and the rest counted.
    """

    def __init__(self, target: Target, counters: ControlCounters, clock: Callable[[], float] = time.monotonic) -> None:
        self._target = target
        self._counters = counters
        self._budgets = Budgets(clock=clock)
        self._log_limit = LogLimit(clock=clock)
        self._kept = Kept(target.revision, clock)

    def handle(self, line: bytes, peer: Peer, received_at: float) -> bytes | Later[bytes]:
        """One request line, read at `received_at` (the clock's time), in; one reply line out, now or
        Later (an op that waits for an update, or root's fresh verify held back); never raises."""
        try:
            if not self._budgets.take(peer.uid):
                self._counters.busy += 1
                raise RequestError("busy", f"uid {peer.uid} is over its request budget; retry in "
                                           f"{self._budgets.retry_after(peer.uid):.1f} s")
            name = parse_request(line)
            handler = HANDLERS.get(name)
            if handler is None:
                raise RequestError("unknown-op", f"unknown op {name!r}; known: {', '.join(OPS)}")
            if OPS[name].privileged:
                self._authorize(name, peer)
            if handler.cached:
                return self._kept.reply(name, partial(self._answer_now, handler, peer), handler.max_age_s,
                                        peer.uid == 0, received_at)
            answer = handler.answer(self._target)
            if not isinstance(answer, Later):
                return encode_result(answer)
        except Exception as err:
            return self._failure(err, peer)
        return answer.then(encode_result).otherwise(lambda err: self._failure(err, peer))

    def next_deadline(self) -> float | None:
        return self._kept.next_deadline()

    def expire(self, now: float) -> None:
        """Answers the requests held back until now."""
        self._kept.expire(now)

    def _answer_now(self, handler: Handler, peer: Peer) -> bytes:
        try:
            return encode_result(handler.answer(self._target))
        except Exception as err:
            return self._failure(err, peer)

    def _failure(self, err: Exception, peer: Peer) -> bytes:
        if isinstance(err, RequestError):
            return encode_error(err.code, err.message)
        if isinstance(err, CrashhpdError):
            return encode_error("failed", str(err))
        if self._may_log(("internal", peer.uid)):
            logger.error("control request from uid %d (pid %d) failed", peer.uid, peer.pid, exc_info=err,
                         extra=log.fields("control", uid=peer.uid, pid=peer.pid))
        return encode_error("internal", "internal error in crashhpd; its log has the details")

    def _authorize(self, op: str, peer: Peer) -> None:
        fields = log.fields("control", op=op, uid=peer.uid, pid=peer.pid)
        if peer.uid != 0:
            self._counters.refused += 1
            if self._may_log(("refused", peer.uid)):
                logger.warning("%s refused for uid %d (pid %d): root only", op, peer.uid, peer.pid, extra=fields)
            raise RequestError("permission-denied", f"{op} needs root (uid 0); the request came from uid {peer.uid}")
        logger.info("%s requested by uid %d (pid %d)", op, peer.uid, peer.pid, extra=fields)

    def _may_log(self, key: object) -> bool:
        allowed, held_back = self._log_limit.allow(key)
        self._counters.log_suppressed = self._log_limit.suppressed
        if allowed and held_back:
            logger.warning("%d more lines like the next were held back in the last %g s", held_back,
                           self._log_limit.interval, extra=log.fields("control"))
        return allowed
