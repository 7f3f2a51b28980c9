# SPDX-License-Identifier: GPL-2.0-only
"""The control socket of a real daemon process on a fake root, spoken to over real sockets.

The root tree is fake; the daemon, its socket, SO_PEERCRED and the kernel
uevents are real. Other processes on this machine may inject uevents at any
time, so by default the debounce here is long enough that no event burst is
acted on during a test: only start-up and `reconcile` apply. Tests about
events shorten it and then wait for an outcome instead of counting applies.

The daemon set-up and the socket helpers are tests/support/control_env.py's, shared with crashhpctl's and
the metrics' tests.
"""

import base64
import hashlib
import json
import os
import select
import signal
import socket
import stat

import nobody
import pytest
from control_env import (  # noqa: F401  (env: a fixture)
    HOT_ADDED,
    NOGROUP,
    STATUS_KEYS,
    ask,
    assert_one_line,
    closed,
    connect,
    env,
    iomem,
    read_replies,
    read_reply,
    result,
    run_as_nobody,
    start_failing,
)
from daemonproc import UEVENTS, generated, generation, inject, segment_header, state, wait_for
from faketree import replace_iomem

from crashhpd.control.server import MAX_CLIENTS
from crashhpd.elfcorehdr.validate import parse

pytestmark = UEVENTS


# --- every request ---------------------------------------------------------------------------------


def test_status_describes_the_header_in_force(env):
    d = env.start()
    status = result(env.socket, "status")
    assert set(status) >= STATUS_KEYS
    built = generated(env.root)
    parsed = parse(built)
    assert status["generation"] == generation(env.state_dir) == 1
    assert status["in_sync"] is True
    assert (status["backend"], status["layout"], status["pid"]) == ("sandbox", "kernel", d.proc.pid)
    assert status["cpus"] == 4 and status["ram_ranges"] == len(parsed.ram)
    assert status["ram_bytes"] == sum(end - start + 1 for start, end in parsed.ram)
    assert status["header_bytes"] == len(built) == state(env.state_dir)["header_size"]
    assert status["capacity_bytes"] == state(env.state_dir)["capacity"]
    assert status["fill_ratio"] == pytest.approx(len(built) / status["capacity_bytes"])
    assert status["last_apply_at"] == pytest.approx(state(env.state_dir)["applied_at"])
    assert status["last_apply_reason"] == "startup" and status["last_changes"]
    assert status["last_error"] is None and status["backend_ok"] is True
    assert status["crash_hotplug_cpu"] is None  # the fake tree publishes no crash_hotplug


def test_status_reports_crash_hotplug_as_the_kernel_publishes_it(env):
    (env.root / "sys/devices/system/cpu/crash_hotplug").write_text("0\n")
    (env.root / "sys/devices/system/memory/crash_hotplug").write_text("1\n")
    env.start()
    status = result(env.socket, "status")
    assert (status["crash_hotplug_cpu"], status["crash_hotplug_memory"]) == (0, 1)


def test_header_is_the_segment_in_force_with_its_program_headers(env):
    env.start()
    header = result(env.socket, "header")
    data = base64.b64decode(header["data_base64"])
    assert data == segment_header(env.state_dir) == generated(env.root)
    assert header["sha256"] == hashlib.sha256(data).hexdigest() == state(env.state_dir)["sha256"]
    assert header["generation"] == 1 and header["header_bytes"] == len(data)
    assert header["segments"] == parse(data).to_json()["segments"]
    assert [s["type"] for s in header["segments"]] == ["PT_NOTE"] * 5 + ["PT_LOAD"] * 8


def test_verify_sees_drift_that_no_event_announced(env):
    env.start()
    assert result(env.socket, "verify")["in_sync"] is True
    replace_iomem(env.root, iomem(hot_added=1))  # no uevent: the daemon cannot know
    verdict = result(env.socket, "verify")
    assert verdict["in_sync"] is False and HOT_ADDED in verdict["changes"]
    assert generation(env.state_dir) == 1, "verify must never apply"


def test_root_pipelining_verify_still_gets_a_fresh_look_for_a_request_sent_after_a_change(env):
    """Requests read together share one snapshot; one read after the last snapshot began waits for a new one."""
    env.start()
    with connect(env.socket) as sock:
        sock.sendall(b'{"op": "verify"}\n' * 50)
        assert all(r["result"]["in_sync"] is True for r in read_replies(sock, 50))
        replace_iomem(env.root, iomem(hot_added=1))  # no uevent: the daemon cannot know
        sock.sendall(b'{"op": "verify"}\n')  # at once: sooner than root's next snapshot may be taken
        verdict = read_reply(sock)["result"]
    assert verdict["in_sync"] is False and HOT_ADDED in verdict["changes"]


def test_reconcile_applies_at_once_bypassing_the_debounce(env):
    d = env.start()
    replace_iomem(env.root, iomem(hot_added=1))
    inject("online")
    wait_for(lambda: result(env.socket, "status")["pending_events"] >= 1, 5, "the event to be pending")
    done = result(env.socket, "reconcile")
    assert done["applied"] is True and done["generation"] == 2 and HOT_ADDED in done["changes"]
    assert done["events"] >= 1
    assert generation(env.state_dir) == 2 and segment_header(env.state_dir) == generated(env.root)
    status = result(env.socket, "status")
    assert status["last_apply_reason"] == "crashhpctl"
    again = result(env.socket, "reconcile")
    assert again["applied"] is False and again["generation"] == 2
    assert "reconcile requested by uid 0" in d.stderr()


def test_reconcile_failure_is_an_error_reply(env):
    env.start()
    replace_iomem(env.root, "this is not iomem\n")
    reply = ask(env.socket, "reconcile")
    assert reply["ok"] is False and reply["error"]["code"] == "failed"
    assert "proc/iomem:1" in reply["error"]["message"]
    assert result(env.socket, "status")["in_sync"] is False


def test_metrics_request_returns_the_exposition(env):
    env.start()
    text = result(env.socket, "metrics")["text"]
    assert "crashhpd_generation 1.0" in text and "# TYPE crashhpd_applies_total counter" in text


# --- access control --------------------------------------------------------------------------------


def test_socket_is_mode_0660_owned_by_root_with_the_configured_group(env):
    env.start(control={"group": NOGROUP})
    st = os.stat(env.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert (st.st_uid, st.st_gid) == (0, 65534)


def test_a_non_root_peer_may_read_but_not_reconcile(env):
    d = env.start(control={"group": NOGROUP})
    client = (f"import json, socket\n"
              f"for op in ('status', 'reconcile'):\n"
              f"    s = socket.socket(socket.AF_UNIX); s.connect({str(env.socket)!r})\n"
              f"    s.sendall(json.dumps({{'op': op}}).encode() + b'\\n')\n"
              f"    print(s.makefile().readline(), end='')\n")
    proc = run_as_nobody(nobody.staged().python, "-c", client)
    assert proc.returncode == 0, proc.stderr
    status, refused = (json.loads(line) for line in proc.stdout.splitlines())
    assert status["ok"] is True and status["result"]["generation"] == 1
    assert refused["ok"] is False and refused["error"]["code"] == "permission-denied"
    assert "uid 65534" in refused["error"]["message"]
    assert "reconcile refused for uid 65534" in d.stderr()
    assert generation(env.state_dir) == 1


def test_a_peer_outside_the_group_cannot_connect(env):
    env.start()  # group root
    proc = run_as_nobody(nobody.staged().python, "-c",
                         f"import socket; socket.socket(socket.AF_UNIX).connect({str(env.socket)!r})")
    assert proc.returncode != 0 and "PermissionError" in proc.stderr


# --- malformed, oversized and slow clients ---------------------------------------------------------


def test_bad_requests_get_error_replies_and_the_connection_stays_usable(env):
    env.start()
    lines = [b"not json", b'{"op": "bogus"}', b'{"v": 2, "op": "status"}', b'{"op": "status", "verbose": true}',
             b'{"op": 1}', b"[]", b"", b'{"v": 1, "op": "status"}']
    with connect(env.socket) as sock:
        sock.sendall(b"\n".join(lines) + b"\n")  # all at once: answered one by one, in order
        replies = read_replies(sock, len(lines))
    codes = [r["error"]["code"] if not r["ok"] else "ok" for r in replies]
    assert codes == ["bad-request", "unknown-op", "unsupported-version", "bad-request", "bad-request",
                     "bad-request", "bad-request", "ok"]
    assert all(r["v"] == 1 for r in replies)
    assert "status, header, verify, reconcile, metrics" in replies[1]["error"]["message"]
    assert "verbose" in replies[3]["error"]["message"]


def test_a_request_ended_by_closing_instead_of_a_newline_is_answered(env):
    env.start()
    with connect(env.socket) as sock:
        sock.sendall(b'{"op": "status"}')
        sock.shutdown(socket.SHUT_WR)
        assert read_reply(sock)["ok"] is True
        assert closed(sock)


@pytest.mark.parametrize("newline", [False, True], ids=["no-newline", "long-line"])
def test_an_oversized_request_is_refused_and_the_connection_closed(env, newline):
    env.start(control={"max_request_bytes": 1024})
    with connect(env.socket) as sock:
        sock.sendall(b'{"op": "status", "pad": "' + b"x" * 4000 + (b'"}\n' if newline else b""))
        reply = read_reply(sock)
        assert reply["error"]["code"] == "too-large" and "1024 bytes" in reply["error"]["message"]
        assert closed(sock)
    assert result(env.socket, "status")["generation"] == 1


def test_a_client_that_never_sends_is_told_and_dropped_after_timeout_ms(env):
    env.start(control={"timeout_ms": 1000})
    with connect(env.socket) as sock:
        clients = result(env.socket, "status")["control_clients"]  # served while the silent one waits
        early = select.select([sock], [], [], 0)[0]
        reply = read_reply(sock)
        assert reply["error"] == {"code": "timeout", "message": "no complete request within 1000 ms"}
        assert closed(sock)
    assert (clients, early) == (2, [])  # not told, nor dropped, before its time
    assert result(env.socket, "status")["control_clients"] == 1  # only the asker now


def test_abuse_does_not_stop_status_or_event_applies(env):
    """100 clients mid-request, a silent one, oversized and malformed ones and one that leaves mid-reply."""
    replace_iomem(env.root, iomem(separate=2000))  # a header reply of ~400 KB: more than one socket buffer
    d = env.start(control={"timeout_ms": 20_000, "max_request_bytes": 4096},
                  debounce={"quiet_ms": 100, "max_delay_ms": 1000})
    crowd = [connect(env.socket) for _ in range(100)]
    for sock in crowd:
        sock.sendall(b'{"op": "sta')  # half a request each: all 100 are open at once
    silent = connect(env.socket)
    oversized = connect(env.socket)
    try:
        oversized.sendall(b"x" * 200_000)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon closed it after 4096 bytes, as it should
    malformed = connect(env.socket)
    malformed.sendall(b"{{{{\n")
    leaver = connect(env.socket)
    leaver.sendall(b'{"op": "header"}\n')
    assert leaver.recv(100)  # the reply has started
    leaver.close()  # with most of the reply unread

    for _ in range(20):  # how fast, under attack: tests/bench/status_latency.py --hostile
        assert result(env.socket, "status")["backend"] == "sandbox"

    replace_iomem(env.root, iomem(hot_added=1, separate=2000))
    inject("online")
    wait_for(lambda: segment_header(env.state_dir) == generated(env.root), 10, "the event's apply under abuse")

    assert read_reply(malformed)["error"]["code"] == "bad-request"
    for sock in crowd:
        sock.sendall(b'tus"}\n')
    assert all(read_reply(sock)["result"]["generation"] >= 2 for sock in crowd)
    assert result(env.socket, "status")["in_sync"] is True
    wait_for(lambda: "went away mid-reply" in d.stderr(), 5, "the leaving client to be noticed")
    assert d.proc.poll() is None
    for sock in [*crowd, silent, oversized, malformed]:
        sock.close()


def test_more_clients_than_the_limit_are_told_busy(env):
    env.start(control={"timeout_ms": 60_000})
    held = [connect(env.socket) for _ in range(MAX_CLIENTS)]
    try:
        wait_for(lambda: ask(env.socket, "status").get("error", {}).get("code") == "busy", 5, "a busy reply")
        held.pop().close()
        wait_for(lambda: ask(env.socket, "status")["ok"], 5, "a free slot")
    finally:
        for sock in held:
            sock.close()


# --- the socket file -------------------------------------------------------------------------------


def test_a_stale_socket_is_replaced(env):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(env.socket))
    stale.close()  # the file stays, nobody listens: what a killed daemon leaves
    env.start()
    assert result(env.socket, "status")["generation"] == 1


def test_a_live_socket_is_an_error_naming_the_path(env):
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(env.socket))
    live.listen()
    try:
        # 69, EX_UNAVAILABLE: another daemon runs; not the invalid configuration that 78 tells the unit and alerts
        assert_one_line(start_failing(env), str(env.socket), "another process answers", code=69)
    finally:
        live.close()


def test_a_file_in_place_of_the_socket_is_an_error(env):
    env.socket.write_text("not a socket")
    assert_one_line(start_failing(env), str(env.socket), "not a socket")
    assert env.socket.read_text() == "not a socket"


def test_a_group_that_does_not_exist_is_a_start_up_error(env):
    assert_one_line(start_failing(env, control={"group": "crashhpd-no-such-group"}),
                    "crashhpd-no-such-group", "does not exist")


def test_the_socket_is_removed_on_stop(env):
    d = env.start()
    assert d.stop() == 0
    assert not env.socket.exists()


def test_sighup_moves_the_socket_to_a_new_path(env):
    d = env.start()
    moved = env.socket.with_name("moved.sock")
    env.config(control={"socket": str(moved), "group": NOGROUP})
    d.signal(signal.SIGHUP)
    wait_for(moved.exists, 5, "the new socket")
    assert result(moved, "status")["generation"] >= 1
    assert os.stat(moved).st_gid == 65534
    assert not env.socket.exists()


def test_sighup_with_a_group_that_does_not_exist_keeps_the_old_socket(env):
    d = env.start()
    env.config(control={"group": "crashhpd-no-such-group"})
    d.signal(signal.SIGHUP)
    wait_for(lambda: "control socket not changed" in d.stderr(), 5, "the reload error")
    assert "crashhpd-no-such-group" in d.stderr()
    assert result(env.socket, "status")["generation"] >= 1
