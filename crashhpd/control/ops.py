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
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

from .. import log
from ..elfcorehdr.validate import NotAHeader, parse
from ..errors import CrashhpdError
from ..later import Later
from ..service.reconcile import Outcome
from ..service.status import HeaderInForce, Status, Verdict
from . import render
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


class Target(Protocol):
    """What the ops ask of the daemon, and nothing more."""

    def status(self) -> Status: ...

    def header_in_force(self) -> HeaderInForce | None: ...

    def verify(self) -> Verdict: ...

    def reconcile_now(self, reason: str) -> Later[tuple[Outcome | None, int]]:
        """Resolved once the update has ended: its outcome (None: it failed) and the events it took over."""
        ...

    def metrics_text(self) -> str: ...


# --- the daemon's side ---------------------------------------------------------------------------


def status(target: Target) -> Status:
    return target.status()


def header(target: Target) -> HeaderResult:
    found = target.header_in_force()
    if found is None:
        raise RequestError("no-header", f"the {target.status().backend} backend holds no header yet")
    try:
        segments = parse(found.data).to_json()["segments"]
    except NotAHeader as err:
        raise RequestError("failed", f"the header in force cannot be read: {err}") from None
    return HeaderResult.model_validate({
        "generation": found.applied.generation,
        "sha256": found.applied.sha256,
        "header_bytes": len(found.data),
        "capacity_bytes": found.capacity,
        "data_base64": base64.b64encode(found.data).decode(),
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


OPS: Mapping[str, Op] = MappingProxyType({op.name: op for op in (
    Op("status", status, Status, render.show_status, "what the daemon holds and has done"),
    Op("header", header, HeaderResult, render.show_header, "the header in force, as program headers"),
    Op("verify", verify, VerifyResult, render.show_verify,
       "compare the header in force with a fresh snapshot (exit 1 if they differ)"),
    # the daemon answers after the update, and a kexec reload may take a minute
    Op("reconcile", reconcile, ReconcileResult, render.show_reconcile,
       "rescan and apply now, without waiting for the debounce (root only)", privileged=True, timeout_s=120.0),
    Op("metrics", metrics, MetricsResult, render.show_metrics, "the Prometheus metrics"),
)})


def handle(target: Target, line: bytes, peer: Peer) -> bytes | Later[bytes]:
    """One request line in, one reply line out, now or Later for an op that waits; never raises."""
    try:
        request = parse_request(line)
        op = OPS.get(request.op)
        if op is None:
            raise RequestError("unknown-op", f"unknown op {request.op!r}; known: {', '.join(OPS)}")
        if op.privileged:
            _authorize(op.name, peer)
        answer = op.answer(target)
        if not isinstance(answer, Later):
            return success(answer)
    except Exception as err:
        return _failure(err, peer)
    return answer.then(success).otherwise(lambda err: _failure(err, peer))


def _failure(err: Exception, peer: Peer) -> bytes:
    if isinstance(err, RequestError):
        return failure(err.code, err.message)
    if isinstance(err, CrashhpdError):
        return failure("failed", str(err))
    logger.error("control request from pid %d failed", peer.pid, exc_info=err,
                 extra=log.fields("control", pid=peer.pid))
    return failure("internal", "internal error in crashhpd; its log has the details")


def _authorize(op: str, peer: Peer) -> None:
    fields = log.fields("control", op=op, uid=peer.uid, pid=peer.pid)
    if peer.uid != 0:
        logger.warning("%s refused for uid %d (pid %d): root only", op, peer.uid, peer.pid, extra=fields)
        raise RequestError("permission-denied", f"{op} needs root (uid 0); the request came from uid {peer.uid}")
    logger.info("%s requested by uid %d (pid %d)", op, peer.uid, peer.pid, extra=fields)
