# SPDX-License-Identifier: GPL-2.0-only
"""`crashhpctl`: ask the running crashhpd what it holds and does, check it, and make it act now.

Exit status, which scripts rely on: 0 ok (for `status`: protected); 1 the
daemon answered with an error, `status` says NOT protected, or `verify` found
the header in force differs; 2 a usage error; 3 the daemon cannot be reached. `--json` prints the reply's
`result` (or its `error`) as the daemon sent it, keys it may add included.

Client side: this imports the contract and the standard library only. It
needs nothing of the configuration but `[control] socket`, and a
configuration it cannot read never keeps it from the daemon: the daemon
refuses a broken file on SIGHUP and goes on with the socket it has, so
crashhpctl says what is wrong on stderr and goes on too.
"""

import argparse
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Sequence

from .. import __version__
from .contract import (
    DEFAULT_CONFIG,
    DEFAULT_SOCKET,
    DROPIN_SUFFIX,
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    OPS,
    VERSION,
    Reply,
    encode_request,
    parse_reply,
    problem,
)
from .render import SHOW

__all__ = ["EXIT_UNREACHABLE", "Unreachable", "main", "request", "socket_from_config"]

HINT = "is crashhpd running? systemctl status crashhpd"
RECV_CHUNK = 65536
MAX_CONFIG_BYTES = 1 << 20  # as the daemon reads it (config.MAX_FILE_BYTES): a larger file is not a configuration


class Unreachable(Exception):
    """No reply from the daemon: not running, not allowed to connect, or not answering; `hint` says what to do."""

    def __init__(self, message: str, hint: str = HINT) -> None:
        super().__init__(message)
        self.hint = hint


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
    except PermissionError as err:  # the daemon may well run: this user is not let in
        raise Unreachable(f"cannot reach crashhpd at {path}: {err.strerror}",
                          "only root and members of the socket's group may connect ([control] group)") from None
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


def render(op: str, reply: Reply, as_json: bool, now: float) -> tuple[str, str, int]:
    """(stdout, stderr, exit status) for a reply."""
    if reply.v != VERSION:
        return "", f"crashhpctl: the daemon speaks protocol version {reply.v}, this crashhpctl {VERSION}", EXIT_FAILED
    if reply.error is not None:
        if as_json:
            return json.dumps(reply.error, indent=2), "", EXIT_FAILED
        return "", f"crashhpctl: {op}: {reply.error['message']} ({reply.error['code']})", EXIT_FAILED
    assert reply.result is not None
    wrong = problem(reply.result, OPS[op].result)
    if wrong is not None:
        return "", f"crashhpctl: {op}: not a {op} result: {wrong}", EXIT_FAILED
    text, status = SHOW[op](reply.result, now)
    if as_json:
        text = json.dumps(reply.result, indent=2)
    return text, "", status


# --- where the socket is ---------------------------------------------------------------------------


def socket_from_config(main: str, required: bool) -> tuple[str, list[str]]:
    """`[control] socket` as the daemon finds it (main file, then its drop-ins in order, a later one
    winning), and what was wrong on the way: a file that cannot be read or parsed, or a value that is
    no socket path, is passed over, so the socket is the one the files around it give (else the
    default): the one a daemon that refused the broken file on SIGHUP still answers on.

    `required`: the main file was named (--config), so its absence is a problem too.
    """
    path, problems = DEFAULT_SOCKET, []
    directory = main + DROPIN_SUFFIX
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        names = []
    except OSError as err:
        names, problems = [], [f"{directory}: {err.strerror or err}"]
    files = [main, *(os.path.join(directory, n) for n in names if n.endswith(".toml") and not n.startswith("."))]
    for index, file in enumerate(files):
        try:
            found = _socket_in(file)
        except FileNotFoundError:
            if index == 0 and not required:
                continue
            problems.append(f"{file}: no such file")
        except (OSError, ValueError) as err:
            problems.append(f"{file}: {err.strerror if isinstance(err, OSError) else err}")
        else:
            if found is not None:
                path = found
    return path, problems


def _socket_in(file: str) -> str | None:
    """One file's `[control] socket`, None when it sets none; ValueError when the file or the value is wrong."""
    with open(os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:  # a FIFO must not block
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ValueError("not a regular file")
        data = f.read(MAX_CONFIG_BYTES + 1)
    if len(data) > MAX_CONFIG_BYTES:
        raise ValueError(f"larger than {MAX_CONFIG_BYTES} bytes")
    import tomllib  # here, not at the top: --socket, --help and a host without the file skip its import (~6 ms)
    try:
        control = tomllib.loads(data.decode()).get("control", {})
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as err:
        raise ValueError(f"not a TOML file: {err}") from None
    if not isinstance(control, dict):
        raise ValueError("control: must be a table")
    value = control.get("socket")
    if value is not None and not (isinstance(value, str) and os.path.isabs(value) and "\0" not in value):
        raise ValueError(f"control.socket: must be an absolute path (got {value!r})")
    return value


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
    ap = argparse.ArgumentParser(prog="crashhpctl", description="Query and control the running crashhpd.",
                                 epilog="exit status: 0 ok (status: protected), 1 failed (status: NOT protected; "
                                        "verify: the header differs), 2 usage, 3 the daemon cannot be reached")
    ap.add_argument("--version", action="version", version=f"crashhpctl {__version__}")
    ap.add_argument("--socket", metavar="PATH",
                    help=f"control socket (default: [control] socket of the config, else {DEFAULT_SOCKET})")
    ap.add_argument("--config", metavar="FILE",
                    help=f"config file to take the socket from, with its drop-ins in FILE{DROPIN_SUFFIX}/ "
                         f"(default {DEFAULT_CONFIG})")
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
    args = _parser().parse_args(argv)
    path = args.socket
    if path is None:
        path, problems = socket_from_config(args.config or DEFAULT_CONFIG, required=args.config is not None)
        if problems:
            print(f"crashhpctl: warning: {'; '.join(problems)}; using {path}", file=sys.stderr)
    args.op = getattr(args, "asked", None) or args.op
    timeout = args.timeout or OPS[args.op].timeout_s
    try:
        reply = request(path, args.op, timeout)
    except Unreachable as err:
        if args.json:  # a script reading stdout gets an object, not nothing
            print(json.dumps({"code": "unreachable", "message": str(err), "hint": err.hint}, indent=2))
        print(f"crashhpctl: {err} ({err.hint})", file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
