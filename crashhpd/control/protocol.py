# SPDX-License-Identifier: GPL-2.0-only
"""The control protocol: one JSON object per line each way, shared by the daemon and crashhpctl.

A request is `{"v": 1, "op": "status"}` (`v` may be left out); a reply is
`{"v": 1, "ok": true, "result": {...}}` or
`{"v": 1, "ok": false, "error": {"code": "...", "message": "..."}}`.
Admins' scripts read these names, so a field is never renamed or removed
within a version; new fields may appear, which is why clients ignore keys
they do not know while the daemon refuses requests it does not understand.
"""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import to_jsonable_python

from ..elfcorehdr.validate import Segment  # a header's program headers travel in the form validate reads them
from ..errors import CrashhpdError

VERSION = 1

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


class HeaderResult(_Received):
    generation: int
    sha256: str
    header_bytes: int
    capacity_bytes: int | None
    data_base64: str
    segments: list[Segment]


class VerifyResult(_Received):
    in_sync: bool  # the header in force covers what a fresh snapshot's does
    generation: int
    changes: list[str]  # what applying the fresh header would change
    cpus: int
    ram_ranges: int
    source: str = "model"  # "kernel": the header the kernel holds, read back; "model": the backend's record


class ReconcileResult(_Received):
    applied: bool  # False: the header in force already matched
    generation: int
    changes: list[str]
    events: int  # pending events the forced update took over from the debounce
    duration_s: float


class MetricsResult(_Received):
    text: str  # Prometheus text exposition format 0.0.4


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
    return request


def _first_problem(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def success(result: object) -> bytes:
    """A result model or dataclass (status) as the reply's `result` object."""
    reply = Reply(v=VERSION, ok=True, result=to_jsonable_python(result))
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
