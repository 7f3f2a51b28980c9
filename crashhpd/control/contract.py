# SPDX-License-Identifier: GPL-2.0-only
"""The control protocol as the daemon and crashhpctl both speak it, in the standard library only.

crashhpctl imports this module and nothing of the daemon, so it starts in
milliseconds and runs where none of the daemon's dependencies are installed.
What both sides must agree on is here: the ops (one row each: help, time
limit, root only or not, the result keys a client reads), the error codes,
crashhpctl's exit statuses, the framing, and where the socket is found.

One JSON object per line each way. A request is `{"v": 1, "op": "status"}`
(`v` may be left out); a reply is `{"v": 1, "ok": true, "result": {...}}` or
`{"v": 1, "ok": false, "error": {"code": "...", "message": "..."}}`. Admins'
scripts read these names, so within a version a key is never renamed or
removed; new keys may appear, which is why a client ignores keys it does not
know while the daemon refuses requests it does not understand.
"""

import json
from collections.abc import Mapping
from functools import cache
from types import MappingProxyType, NoneType, UnionType
from typing import Any, Literal, NamedTuple, NotRequired, TypedDict, get_args, get_origin, get_type_hints, is_typeddict

VERSION = 1

# where the daemon listens unless [control] socket says otherwise, and where that is said: the main file,
# then MAIN.d/*.toml in lexical order (hidden files skipped), a later file winning (crashhpd/config.py)
DEFAULT_SOCKET = "/run/crashhpd/control.sock"
DEFAULT_CONFIG = "/etc/crashhpd/crashhpd.toml"
DROPIN_SUFFIX = ".d"

# crashhpctl's exit statuses, which scripts rely on
EXIT_OK = 0
EXIT_FAILED = 1  # the daemon answered with an error, `verify` found the header differs, `status` says NOT protected
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3  # no reply: the daemon is not running, refuses the connection or does not answer

ErrorCode = Literal[
    "bad-request",  # not one JSON object with the fields of a request
    "unknown-op",
    "unsupported-version",
    "too-large",  # the line exceeded [control] max_request_bytes; the connection is closed
    "timeout",  # no complete request within [control] timeout_ms; the connection is closed
    "busy",  # too many clients connected (the connection is closed), or the uid is over its request budget
    "permission-denied",  # the op needs uid 0
    "no-header",  # nothing is loaded yet
    "failed",  # the op ran and failed; the message says why
    "internal",  # a bug in crashhpd; the daemon logged the traceback and goes on
]


class RequestError(Exception):
    """A request the daemon answers with an error reply instead of a result."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        self.code: ErrorCode = code
        self.message = message
        super().__init__(message)


# --- the results: the keys a client reads (a reply may carry more) -----------------------------------


class Readiness(TypedDict):
    """One readiness check (crashhpd/service/protection.py): passed (ok true), failed (false: what a dump would
    lose and the fix), or unknown (null: why)."""

    check: str
    ok: bool | None
    reason: str


class StatusResult(TypedDict):
    """The daemon's Status (crashhpd/service/status.py); these are the fields crashhpctl shows, in its order."""

    protected: NotRequired[bool]  # the NotRequired keys came later: an older daemon leaves them out
    unprotected_reasons: NotRequired[list[str]]
    readiness: NotRequired[list[Readiness]]
    crash_kernel_loaded: NotRequired[int | None]
    kexec_sysfs: NotRequired[str]
    crash_kernel_cmdline: NotRequired[str | None]
    crash_kernel_cmdline_missing: NotRequired[list[str]]
    kdump_initrd_missing_modules: NotRequired[list[str]]
    kdump_initrd_source: NotRequired[str | None]
    crashkernel_reserved_bytes: NotRequired[int | None]
    crashkernel_needed_bytes: NotRequired[int | None]
    kernel_header_readable: NotRequired[bool]
    kernel_header_unreadable_reason: NotRequired[str | None]
    kernel_header_in_sync: NotRequired[bool | None]
    uncovered_ram_bytes: NotRequired[int | None]
    missing_cpu_notes: NotRequired[int | None]
    stale_ram_bytes: NotRequired[int | None]
    backend: str
    backend_setting: NotRequired[str]
    backend_ok: bool
    backend_detail: str
    version: str
    pid: int
    uptime_s: float
    layout: str
    generation: int
    in_sync: bool
    last_apply_at: float | None
    last_apply_reason: str | None
    last_changes: list[str]
    cpus: int
    cpus_without_notes: NotRequired[list[int]]
    ram_ranges: int
    ram_bytes: int
    capacity_bytes: int | None
    header_bytes: int
    fill_ratio: float | None
    events_received: int
    events_coalesced: int
    rescans: int
    updates: int
    applies: int
    skipped_noop: int
    pending_events: int
    next_update_in_s: float | None
    applying: NotRequired[bool]
    apply_running_s: NotRequired[float | None]
    crash_hotplug_cpu: int | None
    crash_hotplug_memory: int | None
    udev_rule_inert: NotRequired[bool]
    udev_rule_detail: NotRequired[str]
    errors: dict[str, int]
    last_error: str | None
    last_error_at: float | None


# a PT_LOAD mapped at or above __START_KERNEL_map is the kernel image, the others are RAM (abi/x86_64.py)
KERNEL_IMAGE_VADDR = 0xFFFFFFFF80000000


class Segment(TypedDict):
    """One program header, as the daemon's header parser names its fields."""

    type: str  # PT_NOTE, PT_LOAD, or what pyelftools calls another type
    flags: int
    offset: int
    vaddr: int
    paddr: int
    filesz: int
    memsz: int
    align: int


class HeaderResult(TypedDict):
    generation: int
    sha256: str
    header_bytes: int
    capacity_bytes: int | None
    data_base64: str
    segments: list[Segment]


class VerifyResult(TypedDict):
    in_sync: bool  # the header in force covers what a fresh snapshot's does
    generation: int
    changes: list[str]  # what applying the fresh header would change
    cpus: int
    ram_ranges: int
    source: NotRequired[str]  # "kernel": the header the kernel holds, read back; "model" (the default): the backend's


class ReconcileResult(TypedDict):
    applied: bool  # False: the header in force already matched
    generation: int
    changes: list[str]
    events: int  # pending events the forced update took over from the debounce
    duration_s: float


class MetricsResult(TypedDict):
    text: str  # Prometheus text exposition format 0.0.4


# --- the ops -----------------------------------------------------------------------------------------

DEFAULT_TIMEOUT_S = 10.0


class Op(NamedTuple):  # a NamedTuple, not a dataclass: crashhpctl starts without importing dataclasses
    name: str
    help: str
    result: type  # the TypedDict a reply's `result` is checked against before crashhpctl shows it
    privileged: bool = False  # uid 0 only, as SO_PEERCRED says: it changes what is loaded
    timeout_s: float = DEFAULT_TIMEOUT_S  # crashhpctl's default wait for the reply


OPS: Mapping[str, Op] = MappingProxyType({op.name: op for op in (
    Op("status", "what the daemon holds and has done", StatusResult),
    Op("header", "the header in force, as program headers", HeaderResult),
    Op("verify", "compare the header in force with a fresh snapshot (exit 1 if they differ)", VerifyResult),
    # the daemon answers after the update, and a kexec reload may take a minute
    Op("reconcile", "rescan and apply now, without waiting for the debounce (root only)", ReconcileResult,
       privileged=True, timeout_s=120.0),
    Op("metrics", "the Prometheus metrics", MetricsResult),
    Op("kernel-header", "the header the kernel holds, read back from its memory (also: header --kernel)",
       HeaderResult),
)})


# --- shapes: what parsed JSON must look like -----------------------------------------------------------


def problem(value: object, kind: Any, where: tuple[str, ...] = ()) -> str | None:
    """Why `value` (as json.loads gives it) is not a `kind`, naming where; None when it is one.

    `kind` is a TypedDict (keys it does not name are ignored), list[...], dict[str, ...], X | None, str,
    int, float (an int will do), bool or Any.
    """
    at = ".".join(where) + ": " if where else ""
    if kind is Any:
        return None
    if get_origin(kind) is UnionType:
        if value is None and NoneType in get_args(kind):
            return None
        kind = next(k for k in get_args(kind) if k is not NoneType)
    if is_typeddict(kind):
        if not isinstance(value, dict):
            return f"{at}must be an object"
        for key, sub in _fields(kind).items():
            if key not in value:
                if key in kind.__required_keys__:
                    return f"{at}{key}: missing"
            elif (found := problem(value[key], sub, (*where, key))) is not None:
                return found
        return None
    if get_origin(kind) is list:
        if not isinstance(value, list):
            return f"{at}must be an array"
        return next((p for i, item in enumerate(value) if (p := problem(item, get_args(kind)[0], (*where, str(i))))),
                    None)
    if get_origin(kind) is dict:
        if not isinstance(value, dict):
            return f"{at}must be an object"
        return next((p for key, item in value.items() if (p := problem(item, get_args(kind)[1], (*where, key)))),
                    None)
    allowed = {str: (str,), int: (int,), float: (int, float), bool: (bool,)}[kind]
    if isinstance(value, bool) != (kind is bool) or not isinstance(value, allowed):
        return f"{at}must be {_NAMES[kind]}, not {'null' if value is None else type(value).__name__}"
    return None


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


@cache
def _fields(kind: type) -> dict[str, Any]:
    return get_type_hints(kind)


# --- requests: crashhpctl writes them, the daemon reads them -------------------------------------------


def encode_request(op: str) -> bytes:
    return _line({"v": VERSION, "op": op})


def parse_request(line: bytes) -> str:
    """The op a request line asks for; RequestError naming what is wrong with the line.

    Strict, so a typo in a hand-written request is named instead of ignored.
    """
    try:
        request = json.loads(line)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise RequestError("bad-request", f"not JSON: {err}") from None
    if not isinstance(request, dict):
        raise RequestError("bad-request", "must be a JSON object")
    unknown = sorted(set(request) - {"v", "op"})
    if unknown:
        raise RequestError("bad-request", f"{unknown[0]}: unknown key; a request has only v and op")
    found = problem(request, _Request)
    if found is not None:
        raise RequestError("bad-request", found)
    if request.get("v", VERSION) != VERSION:
        raise RequestError("unsupported-version",
                           f"protocol version {request['v']} is not supported; this daemon speaks version {VERSION}")
    op: str = request["op"]
    return op


class _Request(TypedDict):
    v: NotRequired[int]
    op: str


# --- replies: the daemon writes them, crashhpctl reads them --------------------------------------------


def encode_result(result: Mapping[str, Any]) -> bytes:
    return _line({"v": VERSION, "ok": True, "result": result})


def encode_error(code: ErrorCode, message: str) -> bytes:
    return _line({"v": VERSION, "ok": False, "error": {"code": code, "message": message}})


def _line(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class ErrorBody(TypedDict):
    code: str  # one of ErrorCode from this daemon; a newer one may send others
    message: str


class Reply(NamedTuple):
    v: int
    ok: bool
    result: dict[str, Any] | None = None
    error: ErrorBody | None = None


class _Reply(TypedDict):
    v: int
    ok: bool
    result: NotRequired[dict[str, Any] | None]
    error: NotRequired[ErrorBody | None]


def parse_reply(line: bytes) -> Reply:
    """A reply as a client reads it; ValueError ("not a crashhpd reply: ...") when it is not one."""
    try:
        reply = json.loads(line)
    except (ValueError, RecursionError) as err:
        raise ValueError(f"not a crashhpd reply: not JSON: {err}") from None
    found = problem(reply, _Reply)
    if found is not None:
        raise ValueError(f"not a crashhpd reply: {found}")
    result, error = reply.get("result"), reply.get("error")
    if reply["ok"] != (result is not None) or reply["ok"] == (error is not None):
        raise ValueError("not a crashhpd reply: exactly one of result and error must be present")
    body = None if error is None else ErrorBody(code=error["code"], message=error["message"])
    return Reply(reply["v"], reply["ok"], result, body)
