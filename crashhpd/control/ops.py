"""The daemon's side of each control request: one function per op, run inside the event loop.

Each op reads the daemon's own state, except `verify` (a fresh snapshot,
compared and never applied) and `reconcile` (the same update an event
burst runs, now). A request never takes the daemon down: a failure becomes
an error reply, and a bug is logged with its traceback and answered as
`internal`, because the hotplug tracking matters more than the admin's query.
"""

import base64
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydantic import BaseModel

from .. import __version__, log
from ..backends.kdump_discovery import crash_hotplug
from ..elfcorehdr.validate import NotAHeader, parse
from ..errors import CrashhpdError
from ..service.reconcile import build_valid, changes
from ..sysview.snapshot import read_snapshot
from .protocol import (
    HeaderResult,
    MetricsResult,
    ReconcileResult,
    RequestError,
    StatusResult,
    VerifyResult,
    failure,
    parse_request,
    success,
)
from .server import Peer

if TYPE_CHECKING:
    from ..service.daemon import Daemon

logger = logging.getLogger(__name__)

PRIVILEGED = frozenset({"reconcile"})  # changes what is loaded: root only
RECONCILE_REASON = "crashhpctl"


def handle(daemon: "Daemon", line: bytes, peer: Peer) -> bytes:
    """One request line in, one reply line out; never raises."""
    try:
        request = parse_request(line)
        if request.op in PRIVILEGED:
            _authorize(request.op, peer)
        return success(OPS[request.op](daemon))
    except RequestError as err:
        return failure(err.code, err.message)
    except CrashhpdError as err:
        return failure("failed", str(err))
    except Exception:
        logger.exception("control request from pid %d failed", peer.pid, extra=log.fields("control", pid=peer.pid))
        return failure("internal", "internal error in crashhpd; its log has the details")


def _authorize(op: str, peer: Peer) -> None:
    fields = log.fields("control", op=op, uid=peer.uid, pid=peer.pid)
    if peer.uid != 0:
        logger.warning("%s refused for uid %d (pid %d): root only", op, peer.uid, peer.pid, extra=fields)
        raise RequestError("permission-denied", f"{op} needs root (uid 0); the request came from uid {peer.uid}")
    logger.info("%s requested by uid %d (pid %d)", op, peer.uid, peer.pid, extra=fields)


# --- the ops ---------------------------------------------------------------------------------------


def status(d: "Daemon") -> StatusResult:
    stats = d.stats
    state = d.backend.state()
    health = d.backend.health()
    capacity = d.backend.capacity()
    header_bytes = state.header_size if state else 0
    hotplug_cpu, hotplug_memory = _crash_hotplug(d.cfg.root)
    return StatusResult(
        version=__version__,
        pid=os.getpid(),
        started_at=stats.started_at,
        uptime_s=time.time() - stats.started_at,
        backend=d.backend.name,
        backend_ok=health.ok,
        backend_detail=health.detail,
        layout=d.layout.name,
        generation=state.generation if state else 0,
        in_sync=stats.in_sync,
        events_received=stats.events_received,
        events_coalesced=stats.events_coalesced,
        updates=stats.updates,
        applies=stats.applies,
        skipped_noop=stats.skipped_noop,
        rescans=stats.rescans,
        errors=dict(stats.errors),
        pending_events=d.debounce.pending,
        next_update_in_s=_next_update_in(d),
        cpus=stats.cpus,
        ram_ranges=stats.ram_ranges,
        ram_bytes=stats.ram_bytes,
        capacity_bytes=capacity,
        header_bytes=header_bytes,
        fill_ratio=header_bytes / capacity if capacity else None,
        crash_hotplug_cpu=hotplug_cpu,
        crash_hotplug_memory=hotplug_memory,
        last_apply_at=state.applied_at if state else None,
        last_apply_reason=stats.last_apply_reason,
        last_changes=list(stats.last_changes),
        last_update_duration_s=stats.last_duration_s,
        last_error=stats.last_error,
        last_error_at=stats.last_error_at,
    )


def header(d: "Daemon") -> HeaderResult:
    data = d.backend.loaded()
    state = d.backend.state()
    if data is None or state is None:
        raise RequestError("no-header", f"the {d.backend.name} backend holds no header yet")
    try:
        segments = parse(data).to_json()["segments"]
    except NotAHeader as err:
        raise RequestError("failed", f"the header in force cannot be read: {err}") from None
    return HeaderResult.model_validate({
        "generation": state.generation,
        "sha256": state.sha256,
        "header_bytes": len(data),
        "capacity_bytes": d.backend.capacity(),
        "data_base64": base64.b64encode(data).decode(),
        "segments": segments,
    })


def verify(d: "Daemon") -> VerifyResult:
    """What an update would do now, without doing it: catches drift that no event announced."""
    built = build_valid(read_snapshot(d.cfg.root, d.boot), d.layout)
    loaded = d.backend.loaded()
    state = d.backend.state()
    in_sync = loaded == built.data
    return VerifyResult(
        in_sync=in_sync,
        generation=state.generation if state else 0,
        changes=[] if in_sync else changes(loaded, built),
        cpus=len(built.model.cpu_notes),
        ram_ranges=len(built.model.ram),
    )


def reconcile(d: "Daemon") -> ReconcileResult:
    """The update a burst would trigger, now: pending events are taken over, the debounce skipped."""
    events = d.debounce.pending
    outcome = d.update(RECONCILE_REASON)
    if outcome is None:
        raise RequestError("failed", d.stats.last_error or "the update failed; see the daemon's log")
    state = d.backend.state()
    return ReconcileResult(
        applied=outcome.applied is not None,
        generation=state.generation if state else 0,
        changes=outcome.changes,
        events=events,
        duration_s=outcome.duration_s,
    )


def metrics(d: "Daemon") -> MetricsResult:
    return MetricsResult(text=d.metrics.text())


OPS: dict[str, Callable[["Daemon"], BaseModel]] = {
    "status": status,
    "header": header,
    "verify": verify,
    "reconcile": reconcile,
    "metrics": metrics,
}


# --- helpers -----------------------------------------------------------------------------------------


def _next_update_in(d: "Daemon") -> float | None:
    due = [t for t in (d.debounce.due(), d.retry_at) if t is not None]
    return max(min(due) - d.clock(), 0.0) if due else None


def _crash_hotplug(root: str) -> tuple[int | None, int | None]:
    """The kernel's attributes as they read now; an unreadable one shows as None (unpublished)
    because one bad sysfs file must not cost the admin the whole status."""
    try:
        return crash_hotplug(root)
    except CrashhpdError:
        return None, None
