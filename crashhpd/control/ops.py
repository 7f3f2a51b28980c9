# SPDX-License-Identifier: GPL-2.0-only
"""The control operations: one table that the daemon's server and crashhpctl both read.

Each row names an op, the function that answers it in the daemon (inside the
event loop, against the small `Target` interface the loop implements; an
answer may be a Later, for an op that waits for an update), the
result type a client validates, whether it needs root, how crashhpctl prints
it, and its help text. Adding an op is adding a row.

A request never takes the daemon down: a failure becomes an error reply,
and a bug is logged with its traceback and answered as `internal`, because
the hotplug tracking matters more than the admin's query.
"""

import base64
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from .. import log
from ..elfcorehdr.validate import NotAHeader, parse
from ..errors import CrashhpdError
from ..service.later import Later
from ..service.reconcile import Outcome
from ..service.status import ControlCounters, HeaderInForce, Status, Verdict
from ..sysview.loaded_header import LoadedHeader
from . import render
from .limits import Budgets, LogLimit
from .protocol import (
    HeaderResult,
    MetricsResult,
    ReconcileResult,
    RequestError,
    VerifyResult,
    failure,
    parse_request,
    success,
)
from .server import Peer

logger = logging.getLogger(__name__)

RECONCILE_REASON = "crashhpctl"
DEFAULT_TIMEOUT_S = 10.0
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


# --- the daemon's side ---------------------------------------------------------------------------


def status(target: Target) -> Status:
    return target.status()


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
    return HeaderResult.model_validate({
        "generation": generation,
        "sha256": hashlib.sha256(data).hexdigest(),
        "header_bytes": len(data),
        "capacity_bytes": capacity,
        "data_base64": base64.b64encode(data).decode(),
        "segments": segments,
    })


def verify(target: Target) -> VerifyResult:
    verdict = target.verify()
    return VerifyResult(
        in_sync=verdict.in_sync,
        generation=verdict.generation,
        changes=verdict.changes,
        cpus=len(verdict.built.model.cpu_notes),
        ram_ranges=len(verdict.built.model.ram),
        source=verdict.source,
    )


def reconcile(target: Target) -> Later[ReconcileResult]:
    """Answered after the update, a kexec load included: the reply waits, the loop does not."""
    return target.reconcile_now(RECONCILE_REASON).then(lambda ended: _reconciled(target, *ended))


def _reconciled(target: Target, outcome: Outcome | None, events: int) -> ReconcileResult:
    if outcome is None:
        raise RequestError("failed", target.status().last_error or "the update failed; see the daemon's log")
    return ReconcileResult(
        applied=outcome.applied is not None,
        generation=target.status().generation,
        changes=outcome.changes,
        events=events,
        duration_s=outcome.duration_s,
    )


def metrics(target: Target) -> MetricsResult:
    return MetricsResult(text=target.metrics_text())


# --- the table ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Op:
    name: str
    answer: Callable[[Target], object]  # in the daemon
    result: type  # what the reply's `result` is validated as, by crashhpctl
    show: Callable[[Any, float], tuple[str, int]]  # crashhpctl's rendering: (text, exit status)
    help: str
    privileged: bool = False  # uid 0 only, as SO_PEERCRED says: it changes what is loaded
    timeout_s: float = DEFAULT_TIMEOUT_S  # crashhpctl's default wait for the reply
    # A reply that depends only on the daemon's revision is computed once per revision and served from
    # memory. With a max age it also depends on a fresh snapshot (verify: drift no event announced): then
    # root always gets a fresh one, and other peers one at most that old.
    cached: bool = False
    max_age_s: float | None = None


OPS: Mapping[str, Op] = MappingProxyType({op.name: op for op in (
    Op("status", status, Status, render.show_status, "what the daemon holds and has done"),
    Op("header", header, HeaderResult, render.show_header, "the header in force, as program headers", cached=True),
    Op("verify", verify, VerifyResult, render.show_verify,
       "compare the header in force with a fresh snapshot (exit 1 if they differ)", cached=True,
       max_age_s=VERIFY_MAX_AGE_S),
    # the daemon answers after the update, and a kexec reload may take a minute
    Op("reconcile", reconcile, ReconcileResult, render.show_reconcile,
       "rescan and apply now, without waiting for the debounce (root only)", privileged=True, timeout_s=120.0),
    Op("metrics", metrics, MetricsResult, render.show_metrics, "the Prometheus metrics"),
    Op("kernel-header", kernel_header, HeaderResult, render.show_header,
       "the header the kernel holds, read back from its memory (also: header --kernel)"),
)})


class Dispatcher:
    """Turns request lines into reply lines for the server: the op table, applied with what a client may cost.

    A non-root uid has a request budget (limits.Budgets): past it, `busy`.
    Replies that depend only on the daemon's revision are served from memory
    once computed. A line about a peer (a refused request, a bug it
    triggered) is logged once per peer per interval and the rest counted.
    """

    def __init__(self, target: Target, counters: ControlCounters, clock: Callable[[], float] = time.monotonic) -> None:
        self._target = target
        self._counters = counters
        self._clock = clock
        self._budgets = Budgets(clock=clock)
        self._log_limit = LogLimit(clock=clock)
        self._cache: dict[str, tuple[int, float, bytes]] = {}  # op -> (revision, computed at, reply)

    def handle(self, line: bytes, peer: Peer) -> bytes | Later[bytes]:
        """One request line in, one reply line out, now or Later for an op that waits; never raises."""
        try:
            if not self._budgets.take(peer.uid):
                self._counters.busy += 1
                raise RequestError("busy", f"uid {peer.uid} is over its request budget; retry in "
                                           f"{self._budgets.retry_after(peer.uid):.1f} s")
            request = parse_request(line)
            op = OPS.get(request.op)
            if op is None:
                raise RequestError("unknown-op", f"unknown op {request.op!r}; known: {', '.join(OPS)}")
            if op.privileged:
                self._authorize(op.name, peer)
            if op.cached:
                return self._cached(op, peer)
            answer = op.answer(self._target)
            if not isinstance(answer, Later):
                return success(answer)
        except Exception as err:
            return self._failure(err, peer)
        return answer.then(success).otherwise(lambda err: self._failure(err, peer))

    def _cached(self, op: Op, peer: Peer) -> bytes:
        revision, now = self._target.revision(), self._clock()
        hit = self._cache.get(op.name)
        fresh_enough = op.max_age_s is None or (peer.uid != 0 and hit is not None and now - hit[1] < op.max_age_s)
        if hit is not None and hit[0] == revision and fresh_enough:
            return hit[2]
        reply = success(op.answer(self._target))
        self._cache[op.name] = (revision, now, reply)
        return reply

    def _failure(self, err: Exception, peer: Peer) -> bytes:
        if isinstance(err, RequestError):
            return failure(err.code, err.message)
        if isinstance(err, CrashhpdError):
            return failure("failed", str(err))
        if self._may_log(("internal", peer.uid)):
            logger.error("control request from uid %d (pid %d) failed", peer.uid, peer.pid, exc_info=err,
                         extra=log.fields("control", uid=peer.uid, pid=peer.pid))
        return failure("internal", "internal error in crashhpd; its log has the details")

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
