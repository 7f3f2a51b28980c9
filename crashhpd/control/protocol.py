"""The control protocol: one JSON object per line each way, shared by the daemon and crashhpctl.

A request is `{"v": 1, "op": "status"}` (`v` may be left out); a reply is
`{"v": 1, "ok": true, "result": {...}}` or
`{"v": 1, "ok": false, "error": {"code": "...", "message": "..."}}`.
Admins' scripts read these names, so a field is never renamed or removed
within a version; new fields may appear, which is why clients ignore keys
they do not know while the daemon refuses requests it does not understand.
"""

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from ..elfcorehdr.validate import Segment  # a header's program headers travel in the form validate reads them
from ..errors import CrashhpdError

VERSION = 1

Op = Literal["status", "header", "verify", "reconcile", "metrics"]
OPS: tuple[str, ...] = get_args(Op)

ErrorCode = Literal[
    "bad-request",  # not one JSON object with the fields of a request
    "unknown-op",
    "unsupported-version",
    "too-large",  # the line exceeded [control] max_request_bytes; the connection is closed
    "timeout",  # no complete request within [control] timeout_ms; the connection is closed
    "busy",  # too many clients connected; the connection is closed
    "permission-denied",  # the op needs uid 0
    "no-header",  # nothing is loaded yet
    "failed",  # the op ran and failed; the message says why
    "internal",  # a bug in crashhpd; the daemon logged the traceback and goes on
]


class RequestError(CrashhpdError):
    """A request the daemon answers with an error reply instead of a result."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


class _Received(BaseModel):
    """What a client reads: keys a newer daemon adds are ignored, not an error."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Request(BaseModel):
    """Strict, so a typo in a hand-written request is named instead of ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    v: int = VERSION
    op: str


class ErrorBody(_Received):
    code: str
    message: str


class Reply(_Received):
    v: int
    ok: bool
    result: dict[str, Any] | None = None
    error: ErrorBody | None = None


class StatusResult(_Received):
    version: str
    pid: int
    started_at: float  # time.time() of the daemon's start
    uptime_s: float
    backend: str
    backend_ok: bool
    backend_detail: str
    layout: str
    generation: int  # of the header in force; 0 before the first apply
    in_sync: bool  # the last update succeeded (pending_events says whether another is coming)
    events_received: int
    events_coalesced: int
    updates: int
    applies: int
    skipped_noop: int
    rescans: int
    errors: dict[str, int]
    pending_events: int
    next_update_in_s: float | None  # when the debounce (or a retry) runs the next update
    cpus: int
    ram_ranges: int
    ram_bytes: int
    capacity_bytes: int | None
    header_bytes: int
    fill_ratio: float | None  # header_bytes / capacity_bytes
    crash_hotplug_cpu: int | None  # None: the kernel does not publish it (before 6.6)
    crash_hotplug_memory: int | None
    last_apply_at: float | None  # time.time(); may predate this daemon (the backend remembers it)
    last_apply_reason: str | None  # None when the last apply predates this daemon
    last_changes: list[str]
    last_update_duration_s: float | None
    last_error: str | None
    last_error_at: float | None


class HeaderResult(_Received):
    generation: int
    sha256: str
    header_bytes: int
    capacity_bytes: int | None
    data_base64: str
    segments: list[Segment]


class VerifyResult(_Received):
    in_sync: bool  # the header in force is byte for byte the one a fresh snapshot gives
    generation: int
    changes: list[str]  # what applying the fresh header would change
    cpus: int
    ram_ranges: int


class ReconcileResult(_Received):
    applied: bool  # False: the header in force already matched
    generation: int
    changes: list[str]
    events: int  # pending events the forced update took over from the debounce
    duration_s: float


class MetricsResult(_Received):
    text: str  # Prometheus text exposition format 0.0.4


RESULTS: dict[str, type[_Received]] = {
    "status": StatusResult,
    "header": HeaderResult,
    "verify": VerifyResult,
    "reconcile": ReconcileResult,
    "metrics": MetricsResult,
}


def encode_request(op: str) -> bytes:
    return Request(op=op).model_dump_json().encode() + b"\n"


def parse_request(line: bytes) -> Request:
    """The request on one line; RequestError naming what is wrong with it."""
    try:
        request = Request.model_validate_json(line)
    except ValidationError as err:
        raise RequestError("bad-request", _first_problem(err)) from None
    if request.v != VERSION:
        raise RequestError("unsupported-version",
                           f"protocol version {request.v} is not supported; this daemon speaks version {VERSION}")
    if request.op not in OPS:
        raise RequestError("unknown-op", f"unknown op {request.op!r}; known: {', '.join(OPS)}")
    return request


def _first_problem(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def success(result: BaseModel) -> bytes:
    reply = Reply(v=VERSION, ok=True, result=result.model_dump(mode="json"))
    return reply.model_dump_json(exclude={"error"}).encode() + b"\n"


def failure(code: ErrorCode, message: str) -> bytes:
    reply = Reply(v=VERSION, ok=False, error=ErrorBody(code=code, message=message))
    return reply.model_dump_json(exclude={"result"}).encode() + b"\n"


def parse_reply(line: bytes) -> Reply:
    """A reply as a client reads it; ValueError when it is not one."""
    try:
        reply = Reply.model_validate_json(line)
    except ValidationError as err:
        raise ValueError(f"not a crashhpd reply: {_first_problem(err)}") from None
    if reply.ok != (reply.result is not None) or reply.ok == (reply.error is not None):
        raise ValueError("not a crashhpd reply: exactly one of result and error must be present")
    return reply
