# SPDX-License-Identifier: GPL-2.0-only
"""Members of the socket's group, as attackers: they may read, never hold the loop, lock root out or flood the log.

The clients are real processes running as other uids (nobody, and spare uids
with the socket's group), speaking the protocol over the real socket of a
real daemon. Each case used to succeed: 2000 pipelined `verify` requests
blocked the loop for minutes, a slowloris of one uid left root one slot in
two hundred, a refused `reconcile` loop became 118,000 warning lines.
"""

import grp
import json
import os
import selectors
import stat
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from control_env import NOGROUP, Env, ask, assert_one_line, connect, env, iomem, result, start_failing  # noqa: F401
from daemonproc import daemon_status, wait_for
from faketree import replace_iomem

from crashhpd.config import ControlConfig
from crashhpd.control.limits import REQUEST_BURST
from crashhpd.control.server import MAX_CLIENTS, MAX_PER_UID, ControlServer

pytestmark = pytest.mark.root

PYTHON = "/usr/bin/python3"  # the system's: clients running as other users cannot enter a checkout under /root
NOBODY_UID = 65534
SPARE_UIDS = range(61000, 61010)  # uids no account uses, each a separate peer to the daemon

FLOOD = textwrap.dedent("""
    import json, socket, sys
    path, op, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    try:
        sock.sendall((json.dumps({"op": op}) + "\\n").encode() * count)  # every request in one write
    except OSError:
        pass  # turned away before it had sent all: the refusal is still there to read
    data = b""
    while data.count(b"\\n") < count:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    codes = [json.loads(line).get("error", {}).get("code", "ok") for line in data.splitlines()]
    print(json.dumps({code: codes.count(code) for code in set(codes)}))
""")

HOLD = textwrap.dedent("""
    import socket, sys, time
    path, count = sys.argv[1], int(sys.argv[2])
    held = []
    for _ in range(count):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(path)
        try:
            sock.sendall(b'{"op": "sta')  # half a request, never finished
        except OSError:  # turned away: the table is full
            continue
        held.append(sock)
    print("held", flush=True)
    sys.stdin.read()  # until the test lets go
""")


def as_user(uid: int, script: str, *args: object, **popen: object) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-c", script, *map(str, args)], user=uid, group=NOGROUP, extra_groups=[],
                            stdout=subprocess.PIPE, text=True, **popen)


def start(env: Env, **control: object):
    """The daemon with its socket open to the `nogroup` group, as a site's admin group would be."""
    return env.start(control={"group": NOGROUP, "timeout_ms": 60_000, **control})


def test_a_pipelined_flood_from_a_group_member_neither_holds_the_loop_nor_slows_root(env):
    replace_iomem(env.root, iomem(separate=8000))  # each fresh verify builds and checks 8000 ranges
    start(env)
    flood = as_user(NOBODY_UID, FLOOD, env.socket, "verify", 2000)
    answered = 0
    while flood.poll() is None or not answered:  # how fast, under the flood: tests/bench/status_latency.py
        assert result(env.socket, "status")["backend"] == "sandbox"
        answered += 1
    codes = json.loads(flood.stdout.read())
    assert sum(codes.values()) == 2000 and codes.get("busy", 0) >= 2000 - REQUEST_BURST - 100, codes
    status = result(env.socket, "status")
    assert status["control_busy"] == codes["busy"]


def test_root_is_never_locked_out_by_other_uids_holding_every_slot(env):
    start(env)
    assert len(SPARE_UIDS[:9]) * MAX_PER_UID > MAX_CLIENTS  # enough to fill the table
    holders = [as_user(uid, HOLD, env.socket, MAX_PER_UID, stdin=subprocess.PIPE) for uid in SPARE_UIDS[:9]]
    try:
        for holder in holders:
            assert holder.stdout.readline().strip() == "held"
        # 9 uids x 32 connections: the table takes 256 of them. The daemon accepts in the order of connect()
        # and each holder's have returned, so a tenth uid's connection is taken after all of them: no room
        assert one_request(env.socket, SPARE_UIDS[9]) == {"busy": 1}
        ok = sum(ask(env.socket, "status").get("ok", False) for _ in range(50))
        assert ok == 50, f"root got {ok} of 50 status replies with the table full of other uids"
    finally:
        for holder in holders:
            holder.stdin.close()
            holder.wait(timeout=30)
    wait_for(lambda: result(env.socket, "status")["control_clients"] == 1, 10, "the holders' connections to go")
    assert one_request(env.socket, SPARE_UIDS[9]) == {"ok": 1}  # with room, the same client: the busy was the table's


def one_request(path: Path, uid: int) -> dict[str, int]:
    """The reply codes, counted, of one `status` request by `uid` on a connection of its own."""
    return json.loads(as_user(uid, FLOOD, path, "status", 1).communicate(timeout=30)[0])


def test_one_uid_holds_at_most_its_share_of_connections(env):
    start(env)
    holder = as_user(NOBODY_UID, HOLD, env.socket, MAX_PER_UID, stdin=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "held"
        extra = as_user(NOBODY_UID, FLOOD, env.socket, "status", 1)
        assert json.loads(extra.communicate(timeout=30)[0]) == {"busy": 1}
        assert ask(env.socket, "status")["ok"]  # root still gets in
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_a_refused_request_loop_is_one_log_line_and_counted(env):
    d = start(env)
    for _ in range(5):  # 5 connections, each pipelining 400 reconcile requests root alone may make
        flood = as_user(NOBODY_UID, FLOOD, env.socket, "reconcile", 400)
        codes = json.loads(flood.communicate(timeout=60)[0])
        assert set(codes) <= {"permission-denied", "busy"}, codes
    status = result(env.socket, "status")
    refused = [line for line in d.stderr().splitlines() if "reconcile refused for uid" in line]
    assert len(refused) == 1, f"{len(refused)} warning lines for one peer's refusals"
    assert status["control_refused"] >= REQUEST_BURST and status["control_refused"] + status["control_busy"] == 2000
    assert status["log_suppressed"] == status["control_refused"] - 1
    assert result(env.socket, "metrics")["text"].count("crashhpd_control_refused_total") >= 1


# --- the socket file -------------------------------------------------------------------------------


def test_symlinks_planted_at_the_names_the_socket_is_bound_under_change_nothing(env, tmp_path, monkeypatch):
    """The socket is bound in a fresh directory that mkdtemp names at random. Here its random names are
    made the test's, so the links are planted at exactly the names it will try first: it must pass over
    them (a directory is never created through a link) and bind under the next one."""
    secret = tmp_path / "root-only"
    secret.write_text("secret\n")
    secret.chmod(0o600)
    lure = tmp_path / "lure"
    lure.mkdir()
    tried: list[str] = []

    def candidate_names() -> Iterator[str]:
        for name in ("file", "dir", "fresh"):
            tried.append(name)
            yield name

    monkeypatch.setattr(tempfile, "_get_candidate_names", candidate_names)
    directory = env.socket.parent
    (directory / ".crashhpd-bind-file").symlink_to(secret)
    (directory / ".crashhpd-bind-dir").symlink_to(lure, target_is_directory=True)
    server = ControlServer(ControlConfig(socket=str(env.socket), group=NOGROUP), selectors.DefaultSelector(),
                           NoRequests())
    server.open()
    try:
        assert tried == ["file", "dir", "fresh"]  # both planted names were tried, and passed over
        assert (stat.S_IMODE(secret.stat().st_mode), secret.stat().st_gid, secret.read_text()) == (0o600, 0, "secret\n")
        assert list(lure.iterdir()) == []
        st = os.lstat(env.socket)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == grp.getgrnam(NOGROUP).gr_gid
        assert sorted(p.name for p in directory.iterdir()) == [".crashhpd-bind-dir", ".crashhpd-bind-file",
                                                               env.socket.name]  # the fresh one removed
    finally:
        server.close()


class NoRequests:
    """A handler for a server that is only opened and closed."""

    def handle(self, line: bytes, peer: object, received_at: float) -> bytes:
        raise AssertionError("no request expected")

    def next_deadline(self) -> None:
        return None

    def expire(self, now: float) -> None:
        pass


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o1777])
def test_a_socket_directory_others_can_write_is_refused(env, mode):
    env.socket.parent.chmod(mode)
    proc = start_failing(env, control={"group": NOGROUP})
    assert_one_line(proc, str(env.socket.parent), "writable by nobody else")


def test_the_socket_is_bound_with_its_final_mode_and_group(env):
    start(env)
    st = os.lstat(env.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == grp.getgrnam(NOGROUP).gr_gid
    assert not [p for p in env.socket.parent.iterdir() if p.name.startswith(".crashhpd-bind-")]
    assert daemon_status(env.socket)["control_clients"] == 1
    with connect(env.socket):
        wait_for(lambda: daemon_status(env.socket)["control_clients"] == 2, 5, "the held connection counted")
