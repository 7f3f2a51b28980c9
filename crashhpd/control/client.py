"""`crashhpctl`: ask the running crashhpd what it holds and does, check it, and make it act now.

Exit status, which scripts rely on: 0 ok; 1 the daemon answered with an
error, or `verify` found the header in force differs from the system; 2 a
usage error; 3 the daemon cannot be reached. `--json` prints the reply's
`result` (or its `error`) as the daemon sent it, keys it may add included.
"""

import argparse
import base64
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Sequence

from .. import config as config_mod
from ..cli import table
from ..config import ControlConfig
from ..elfcorehdr.validate import parse
from ..errors import ConfigError
from ..sysview.ranges import size_text
from .protocol import (
    OPS,
    RESULTS,
    VERSION,
    HeaderResult,
    MetricsResult,
    ReconcileResult,
    Reply,
    StatusResult,
    VerifyResult,
    encode_request,
    parse_reply,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
HINT = "is crashhpd running? systemctl status crashhpd"
DEFAULT_TIMEOUT_S = 10.0
RECONCILE_TIMEOUT_S = 120.0  # the daemon answers after the update, and a kexec reload may take a minute
RECV_CHUNK = 65536


class Unreachable(Exception):
    """No reply from the daemon: not running, not allowed to connect, or not answering."""


# --- the client -----------------------------------------------------------------------------------


def request(path: str, op: str, timeout: float) -> Reply:
    """Send one request and read its reply; Unreachable when there is none."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(encode_request(op))
        line = _read_line(sock)
    except TimeoutError:
        raise Unreachable(f"{path}: no reply within {timeout:g} s") from None
    except OSError as err:
        raise Unreachable(f"cannot reach crashhpd at {path}: {err.strerror or err}") from None
    finally:
        sock.close()
    try:
        return parse_reply(line)
    except ValueError as err:
        raise Unreachable(f"{path}: {err}") from None


def _read_line(sock: socket.socket) -> bytes:
    data = bytearray()
    while (end := data.find(b"\n")) < 0:
        chunk = sock.recv(RECV_CHUNK)
        if not chunk:
            raise ConnectionError(0, "the daemon closed the connection without a reply")
        data += chunk
    return bytes(data[:end])


def default_socket(config_path: str | None) -> str:
    """The config's socket; the built-in default when the default config cannot be read (often not by non-root)."""
    try:
        return config_mod.load(config_path).control.socket
    except ConfigError:
        if config_path is not None:
            raise
        return ControlConfig().socket


# --- readable output: pure --------------------------------------------------------------------------


def age(seconds: float) -> str:
    return f"{duration(seconds)} ago"


def duration(seconds: float) -> str:
    """The way an admin says it: '3 s', '5 min', '2 h', '4 d'."""
    seconds = max(seconds, 0.0)
    for unit, size, limit in (("s", 1, 120), ("min", 60, 120), ("h", 3600, 48)):
        if seconds < size * limit:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds // 86400)} d"


def gib(nbytes: int) -> str:
    return f"{nbytes / (1 << 30):.2f} GiB"


def aligned(rows: Sequence[tuple[str, str]]) -> str:
    """Label and value columns; a value's further lines line up under its first."""
    width = max(len(label) for label, _ in rows) + 2
    lines = []
    for label, value in rows:
        first, *rest = value.split("\n")
        lines.append(f"{label:<{width}}{first}".rstrip())
        lines += [" " * width + line for line in rest]
    return "\n".join(lines)


def show_status(s: StatusResult, now: float) -> tuple[str, int]:
    errors = ", ".join(f"{kind} {count}" for kind, count in sorted(s.errors.items())) or "none"
    pending = "none"
    if s.next_update_in_s is not None:
        pending = f"{s.pending_events} events, update in {s.next_update_in_s:.1f} s"
    hotplug = ("not published (kernel before 6.6, or no CONFIG_CRASH_HOTPLUG)"
               if s.crash_hotplug_cpu is None and s.crash_hotplug_memory is None
               else f"cpu {_unknown(s.crash_hotplug_cpu)}, memory {_unknown(s.crash_hotplug_memory)}")
    rows = [
        ("crashhpd", f"{s.version}, pid {s.pid}, up {duration(s.uptime_s)}"),
        ("backend", f"{s.backend} ({'healthy' if s.backend_ok else 'UNHEALTHY'}: {s.backend_detail})"),
        ("layout", s.layout),
        ("generation", f"{s.generation}, {'in sync' if s.in_sync else 'NOT in sync: the last update failed'}"),
        ("last apply", _last_apply(s, now)),
        ("CPUs", str(s.cpus)),
        ("RAM", f"{s.ram_ranges} ranges, {gib(s.ram_bytes)}"),
        ("segment", _segment(s)),
        ("events", f"{s.events_received} received, {s.events_coalesced} coalesced, "
                   f"{s.rescans} rescans after lost events"),
        ("updates", f"{s.updates} run: {s.applies} applied, {s.skipped_noop} no-op"),
        ("pending", pending),
        ("crash_hotplug", hotplug),
        ("errors", errors),
        ("last error", "none" if s.last_error is None
         else f"{age(now - s.last_error_at) if s.last_error_at else 'at some time'}: {s.last_error}"),
    ]
    return aligned(rows), EXIT_OK


def _unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


def _last_apply(s: StatusResult, now: float) -> str:
    if s.last_apply_at is None:
        return "never"
    when = f"{age(now - s.last_apply_at)} ({s.last_apply_reason or 'before this daemon started'})"
    return "\n".join([when, *s.last_changes])


def _segment(s: StatusResult) -> str:
    if s.capacity_bytes is None:
        return f"{size_text(s.header_bytes)} used, no fixed capacity"
    return f"{size_text(s.header_bytes)} of {size_text(s.capacity_bytes)} ({100 * (s.fill_ratio or 0):.1f}%)"


def show_header(h: HeaderResult, _now: float) -> tuple[str, int]:
    parsed = parse(base64.b64decode(h.data_base64))
    capacity = f" of a {size_text(h.capacity_bytes)} segment" if h.capacity_bytes is not None else ""
    ram = parsed.ram
    summary = (f"generation {h.generation}: {h.header_bytes} bytes{capacity}, sha256 {h.sha256}\n"
               f"{len(parsed.segments)} program headers: {len(parsed.notes)} notes, {len(ram)} RAM ranges "
               f"({gib(sum(end - start + 1 for start, end in ram))})")
    return f"{summary}\n{table(parsed)}", EXIT_OK


def show_verify(v: VerifyResult, _now: float) -> tuple[str, int]:
    if v.in_sync:
        return (f"in sync: generation {v.generation} is the header a fresh snapshot gives "
                f"({v.cpus} CPUs, {v.ram_ranges} RAM ranges)"), EXIT_OK
    lines = [f"DIFFERS: generation {v.generation} is not the header a fresh snapshot gives; applying it would change:",
             *(f"  {line}" for line in v.changes or ["(no visible change: the bytes differ)"]),
             "crashhpctl reconcile applies it now"]
    return "\n".join(lines), EXIT_FAILED


def show_reconcile(r: ReconcileResult, _now: float) -> tuple[str, int]:
    took = f"{r.duration_s * 1000:.0f} ms"
    taken = f", {r.events} pending events taken over" if r.events else ""
    if not r.applied:
        return f"nothing to apply: generation {r.generation} already matches the system ({took}{taken})", EXIT_OK
    return "\n".join([f"applied generation {r.generation} in {took}{taken}:", *(f"  {c}" for c in r.changes)]), EXIT_OK


def show_metrics(m: MetricsResult, _now: float) -> tuple[str, int]:
    return m.text.rstrip("\n"), EXIT_OK


SHOW: dict[str, Callable[..., tuple[str, int]]] = {
    "status": show_status,
    "header": show_header,
    "verify": show_verify,
    "reconcile": show_reconcile,
    "metrics": show_metrics,
}


def render(op: str, reply: Reply, as_json: bool, now: float) -> tuple[str, str, int]:
    """(stdout, stderr, exit status) for a reply."""
    if reply.v != VERSION:
        return "", f"crashhpctl: the daemon speaks protocol version {reply.v}, this crashhpctl {VERSION}", EXIT_FAILED
    if reply.error is not None:
        if as_json:
            return json.dumps(reply.error.model_dump(), indent=2), "", EXIT_FAILED
        return "", f"crashhpctl: {op}: {reply.error.message} ({reply.error.code})", EXIT_FAILED
    assert reply.result is not None
    text, status = SHOW[op](RESULTS[op].model_validate(reply.result), now)
    if as_json:
        text = json.dumps(reply.result, indent=2)
    return text, "", status


# --- the command line ----------------------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="crashhpctl", description="Query and control the running crashhpd.")
    ap.add_argument("--socket", metavar="PATH",
                    help=f"control socket (default: [control] socket of the config, else {ControlConfig().socket})")
    ap.add_argument("--config", metavar="FILE",
                    help=f"config file to take the socket from (default {config_mod.DEFAULT_PATH})")
    ap.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                    help=f"how long to wait for the reply (default {DEFAULT_TIMEOUT_S:g}, "
                         f"reconcile {RECONCILE_TIMEOUT_S:g})")
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print the reply's result (or error) as JSON")
    sub = ap.add_subparsers(dest="op", required=True, metavar="COMMAND")
    helps = {
        "status": "what the daemon holds and has done",
        "header": "the header in force, as program headers",
        "verify": "compare the header in force with a fresh snapshot (exit 1 if they differ)",
        "reconcile": "rescan and apply now, without waiting for the debounce (root only)",
        "metrics": "the Prometheus metrics",
    }
    for op in OPS:
        sub.add_parser(op, parents=[json_flag], help=helps[op], description=helps[op])
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    try:
        path = args.socket or default_socket(args.config)
    except ConfigError as err:
        print(f"crashhpctl: {err}", file=sys.stderr)
        return EXIT_USAGE
    timeout = args.timeout or (RECONCILE_TIMEOUT_S if args.op == "reconcile" else DEFAULT_TIMEOUT_S)
    try:
        reply = request(path, args.op, timeout)
    except Unreachable as err:
        print(f"crashhpctl: {err} ({HINT})", file=sys.stderr)
        return EXIT_UNREACHABLE
    out, err_text, status = render(args.op, reply, args.json, time.time())
    try:
        if out:
            print(out)
        if err_text:
            print(err_text, file=sys.stderr)
        sys.stdout.flush()
    except BrokenPipeError:  # `crashhpctl metrics | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status
