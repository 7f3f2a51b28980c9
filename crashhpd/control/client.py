# SPDX-License-Identifier: GPL-2.0-only
"""`crashhpctl`: ask the running crashhpd what it holds and does, check it, and make it act now.

Exit status, which scripts rely on: 0 ok; 1 the daemon answered with an
error, or `verify` found the header in force differs from the system; 2 a
usage error; 3 the daemon cannot be reached. `--json` prints the reply's
`result` (or its `error`) as the daemon sent it, keys it may add included.
"""

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Sequence

from pydantic import TypeAdapter, ValidationError

from .. import config as config_mod
from ..config import ControlConfig
from ..errors import ConfigError
from .ops import OPS
from .protocol import VERSION, Reply, encode_request, parse_reply
from .render import EXIT_FAILED

EXIT_USAGE, EXIT_UNREACHABLE = 2, 3
HINT = "is crashhpd running? systemctl status crashhpd"
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


def render(op: str, reply: Reply, as_json: bool, now: float) -> tuple[str, str, int]:
    """(stdout, stderr, exit status) for a reply."""
    if reply.v != VERSION:
        return "", f"crashhpctl: the daemon speaks protocol version {reply.v}, this crashhpctl {VERSION}", EXIT_FAILED
    if reply.error is not None:
        if as_json:
            return json.dumps(reply.error.model_dump(), indent=2), "", EXIT_FAILED
        return "", f"crashhpctl: {op}: {reply.error.message} ({reply.error.code})", EXIT_FAILED
    assert reply.result is not None
    row = OPS[op]
    try:
        result: object = TypeAdapter(row.result).validate_python(reply.result)
    except ValidationError as err:
        return "", f"crashhpctl: {op}: not a {op} result: {err.errors()[0]['msg']}", EXIT_FAILED
    text, status = row.show(result, now)
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
                    help="how long to wait for the reply (default: "
                         + ", ".join(f"{op.name} {op.timeout_s:g}" for op in OPS.values()) + ")")
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print the reply's result (or error) as JSON")
    sub = ap.add_subparsers(dest="op", required=True, metavar="COMMAND")
    for op in OPS.values():
        command = sub.add_parser(op.name, parents=[json_flag], help=op.help, description=op.help)
        if op.name == "header":
            command.add_argument("--kernel", action="store_const", const="kernel-header", dest="asked",
                                 help="the header the kernel holds, read back from its memory, not crashhpd's")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    try:
        path = args.socket or default_socket(args.config)
    except ConfigError as err:
        print(f"crashhpctl: {err}", file=sys.stderr)
        return EXIT_USAGE
    args.op = getattr(args, "asked", None) or args.op
    timeout = args.timeout or OPS[args.op].timeout_s
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
