# SPDX-License-Identifier: GPL-2.0-only
"""A kexec load runs beside the event loop: the real loop, in this process, while the stand-in kexec works.

The Daemon here is crashhpd's own, built the way `crashhpd run` builds it
(crashhpd.wiring.build_parts, the real ControlServer on a real socket, the
real KexecBackend), around a fake event source: a socketpair whose every
byte is one uevent, so no test here broadcasts a kernel uevent. The kexec
is tests/support/kexec_standin.py on a Debian-like fake tree, scripted to take
about a second, hang, chatter or leave a child behind. The loop runs in the
main thread, as in the daemon (signal handlers need it); each test's script
talks to it from a second thread, over the control socket, as an admin would.
"""

import hashlib
import json
import logging
import os
import select
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
from daemonproc import NotifyListener, wait_for, write_config
from faketree import kernel
from repo_paths import REPO
from standin import Standin, alive, hot_add, kind_of, model, root, standin  # noqa: F401  (fixtures)

from crashhpd import config as config_mod
from crashhpd import log
from crashhpd.backends.kexec import KexecBackend
from crashhpd.backends.kexec_process import OUTPUT_CAP, run
from crashhpd.backends.kexec_state import STATE_FILE
from crashhpd.config import KexecConfig
from crashhpd.errors import BackendError
from crashhpd.service import daemon as daemon_mod
from crashhpd.service.daemon import Daemon
from crashhpd.service.metrics import Metrics
from crashhpd.service.notify import Notifier
from crashhpd.service.parts import Drained
from crashhpd.wiring import build_parts, control_server

UDEV_RULES = REPO / "udev"

LOAD_S = 1.0  # what one scripted load takes


class FakeEvents:
    """An EventSource: each byte written to the other end of a socketpair is one uevent."""

    source = "a socketpair"

    def __init__(self) -> None:
        self._ours, self._theirs = socket.socketpair()
        self._ours.setblocking(False)

    def open(self) -> None:
        pass

    def fileno(self) -> int:
        return self._ours.fileno()

    def close(self) -> None:
        pass

    def drain(self) -> Drained:
        try:
            return Drained(events=len(self._ours.recv(65536)))
        except BlockingIOError:
            return Drained()

    def send(self, count: int = 1) -> None:
        self._theirs.send(b"e" * count)


class Loop:
    """A daemon on the `root` tree with the kexec backend and the stand-in, and the means to talk to it."""

    def __init__(self, tmp_path: Path, root: Path, standin: Standin, **tables: dict) -> None:
        self.tmp_path = tmp_path
        self.root = root
        self.standin = standin
        self.socket = str(tmp_path / "control.sock")
        self.state_dir = tmp_path / "state"
        self.tables = {
            "root": str(root), "backend": "kexec",
            "debounce": {"quiet_ms": 50, "max_delay_ms": 500},
            "sandbox": {"state_dir": str(self.state_dir)},
            "control": {"socket": self.socket, **tables.get("control", {})},
            "kexec": {"binary": str(standin.path), **tables.get("kexec", {})},
            "udev": {"rules": str(UDEV_RULES)},  # the overrides go to the fake root's /run/udev/rules.d
        }
        self.config = write_config(tmp_path / "crashhpd.toml", self.tables)
        cfg = config_mod.load(str(self.config), None)
        self.events = FakeEvents()
        selector = selectors.DefaultSelector()
        self.daemon = Daemon(replace(build_parts(cfg, None), monitor=self.events), build_parts, selector, Metrics(),
                             Notifier(), str(self.config), None, config_mod.load)
        self.control = control_server(cfg, selector, self.daemon)
        self.stops_sent = 0

    def run(self, script: Callable[["Loop"], None], timeout: float = 30) -> int:
        """The loop in this (the main) thread until the script, in another thread, has ended; then SIGTERM."""
        failures: list[BaseException] = []

        def body() -> None:
            try:
                wait_for(lambda: self.ready(), 10, "the daemon to answer, its start-up load done")
                script(self)
            except BaseException as err:  # handed to the main thread, which raises it
                failures.append(err)
            finally:
                if not self.stops_sent:  # a second SIGTERM would mean "now"
                    self.signal(signal.SIGTERM)

        thread = threading.Thread(target=body, daemon=True)
        thread.start()
        try:
            code = self.daemon.run(self.control)
        finally:
            thread.join(timeout)
        if failures:
            raise failures[0]
        assert not thread.is_alive(), "the script did not end"
        return code

    def signal(self, signum: int) -> None:
        self.stops_sent += signum == signal.SIGTERM
        os.kill(os.getpid(), signum)  # the daemon's handler while it runs; the fixture's no-op after

    def ready(self) -> bool:
        try:
            s = self.status()
        except OSError:
            return False
        return s["generation"] >= 1 and not s["applying"]

    def request(self, op: str, timeout: float = 10) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(self.socket)
            sock.sendall(json.dumps({"op": op}).encode() + b"\n")
            return read_reply(sock)

    def status(self) -> dict:
        reply = self.request("status")
        assert reply["ok"], reply
        return reply["result"]

    def burst(self, blocks: int, events: int = 8) -> None:
        """A hot-add of `blocks` blocks in all, announced by a burst of events."""
        hot_add(self.root, blocks)
        self.events.send(events)

    def wait_status(self, wanted: Callable[[dict], bool], what: str, timeout: float = 10) -> dict:
        """The first status that has what the test waits for."""
        found: list[dict] = []
        wait_for(lambda: found.append(s := self.status()) or wanted(s), timeout, what)
        return found[-1]

    def wait_applying(self) -> dict:
        return self.wait_status(lambda s: s["applying"], "a load to be running")

    def wait_idle(self, timeout: float = 10) -> dict:
        return self.wait_status(lambda s: not s["applying"] and s["next_update_in_s"] is None, "the loads to end",
                                timeout)

    def statuses_while_applying(self, at_least: int = 20) -> list[dict]:
        """Status replies, one request after the other, for as long as the load runs (and at least `at_least`):
        those that say it runs."""
        replies = [self.status()]
        while replies[-1]["applying"] or len(replies) < at_least:
            replies.append(self.status())
            time.sleep(0.005)
        return [s for s in replies if s["applying"]]

    def saved_generation(self) -> int:
        return json.loads((self.state_dir / STATE_FILE).read_text())["generation"]


def read_reply(sock: socket.socket) -> dict:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed without a reply")
        data += chunk
    return json.loads(data)


@pytest.fixture(autouse=True)
def harmless_signals() -> Iterator[None]:
    """The test process's SIGTERM and SIGHUP do nothing outside the loop, which puts back what it found."""
    before = {signum: signal.signal(signum, lambda *_: None) for signum in (signal.SIGTERM, signal.SIGHUP)}
    crashhpd_logger = logging.getLogger(log.LOGGER_NAME)
    level = crashhpd_logger.level
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)
    for handler in [h for h in crashhpd_logger.handlers if isinstance(h, log.StderrHandler | log.JournalHandler)]:
        crashhpd_logger.removeHandler(handler)  # a SIGHUP's log.setup() installed it
    crashhpd_logger.setLevel(level)


@pytest.fixture
def loop(tmp_path: Path, root: Path, standin: Standin) -> Callable[..., Loop]:
    return partial(Loop, tmp_path, root, standin)


def answered_while_loading(replies: list[dict]) -> None:
    """The loop answered status again and again while kexec ran, each reply saying so, its clock going on.

    How fast it answers is measured by tests/bench/status_during_kexec.py, against a loop that waits for kexec.
    """
    assert len(replies) >= 5, f"only {len(replies)} status replies while the load ran"
    running = [s["apply_running_s"] for s in replies]
    assert running == sorted(running) and running[-1] > running[0], running


def one_at_a_time(loads: list[dict]) -> None:
    """No load started while another ran (the stand-in's lock says so)."""
    assert not any(c["overlapped"] for c in loads), loads


# --- health follows what the load did to the kernel ------------------------------------------------


def test_a_crash_kernel_crashhpd_loaded_itself_is_healthy_at_once(loop, standin, root):
    """No crash kernel at boot (kdump-tools failed, say): crashhpd's start-up load is the first one."""
    (root / "sys/kernel/kexec_crash_loaded").write_text("0\n")
    seen: dict = {}

    def script(lp: Loop) -> None:
        seen["after"] = lp.wait_idle()

    assert loop().run(script) == 0
    after = seen["after"]
    assert [c["exit"] for c in standin.loads()] == [0]
    assert (after["crash_kernel_loaded"], after["backend_ok"]) == (1, True), after["backend_detail"]
    assert after["backend_detail"] == f"crash kernel loaded by crashhpd, generation {after['generation']}"


def test_a_failed_load_that_freed_the_crash_kernel_is_unhealthy_at_once(loop, standin):
    """The kernel frees the crash image before loading its replacement: a failed load can leave none.

    Each failure here is followed by a retry on a new snapshot (at once, then backed off); status between
    them must say what the kernel holds now, not what it held before the load.
    """
    failing = {"exit": 1, "kernel": "freed", "stderr": "kexec_load failed: Cannot allocate memory\n"}
    standin.script({}, default=failing)  # the start-up load works; every one after it (the retries too) fails
    seen: dict = {}

    def script(lp: Loop) -> None:
        lp.burst(1)
        seen["after"] = lp.wait_status(lambda s: bool(s["errors"]) and not s["applying"],
                                       "the failed load to be counted")

    assert loop().run(script) == 0
    after = seen["after"]
    assert (after["crash_kernel_loaded"], after["backend_ok"]) == (0, False), after
    assert after["backend_detail"].startswith("NO CRASH KERNEL LOADED: "), after["backend_detail"]


def test_a_kexec_state_unreadable_after_a_load_is_logged_and_the_next_snapshot_names_it(loop, standin, caplog):
    standin.script({}, {"kernel": "garbled"})
    seen: dict = {}

    def script(lp: Loop) -> None:
        lp.burst(1)
        lp.wait_status(lambda s: s["generation"] == 2, "the load to be accounted")
        lp.request("reconcile")
        seen["after"] = lp.status()

    with caplog.at_level(logging.WARNING, logger="crashhpd"):
        assert loop().run(script) == 0
    after = seen["after"]
    assert after["errors"].get("snapshot-failed") == 1 and "kexec_crash_loaded" in after["last_error"], after
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith("after the apply, the kexec state could not be read: ") and "kexec_crash_loaded" in m
               for m in warnings), warnings


# --- the loop goes on while kexec works ---------------------------------------------------------------


def test_status_answers_at_once_during_a_load_and_says_so(loop, standin):
    standin.script({}, {"delay_s": LOAD_S})
    seen: dict = {}

    def script(lp: Loop) -> None:
        lp.burst(1)
        seen["first"] = lp.wait_applying()
        seen["during"] = lp.statuses_while_applying()
        seen["after"] = lp.wait_idle()

    assert loop().run(script) == 0
    answered_while_loading(seen["during"])
    assert seen["first"]["applying"] and seen["first"]["apply_running_s"] >= 0
    after = seen["after"]
    assert (after["generation"], after["applying"], after["apply_running_s"]) == (2, False, None) and after["in_sync"]
    assert [c["exit"] for c in standin.loads()] == [0, 0]


def test_a_burst_during_a_load_is_counted_and_costs_exactly_one_more_load_after_it(loop, standin, root):
    standin.script({}, {"delay_s": LOAD_S}, {})
    seen: dict = {}

    def script(lp: Loop) -> None:
        lp.burst(1)
        lp.wait_applying()
        for blocks in (2, 3):  # two more bursts while the first one's load runs
            lp.burst(blocks)
        seen["during"] = lp.wait_status(lambda s: s["events_received"] == 24, "both bursts to be read")
        seen["after"] = lp.wait_idle()  # the daemon's word that nothing more is due: no further load may follow

    loop().run(script)
    during = seen["during"]
    assert during["applying"] and during["pending_events"] == 16
    loads = standin.loads()
    assert len(loads) == 3 and seen["after"]["generation"] == 3
    one_at_a_time(loads)  # the third not before the second had ended
    assert loads[2]["iomem_sha256"] == hashlib.sha256((root / "proc/iomem").read_bytes()).hexdigest()


def test_a_hung_kexec_is_killed_with_its_group_at_the_deadline_while_status_answers(loop, standin, root):
    # had it run to its end, it would have said the kernel freed the crash image (kexec_crash_loaded 0)
    standin.script({}, {"delay_s": 30, "child": True, "kernel": "freed"})
    seen: dict = {}

    def script(lp: Loop) -> None:
        lp.burst(1)
        lp.wait_applying()
        seen["during"] = lp.statuses_while_applying()
        seen["after"] = lp.status()

    loop(kexec={"timeout_s": 1}).run(script)
    answered_while_loading(seen["during"])
    assert (root / "sys/kernel/kexec_crash_loaded").read_text() == "1\n"  # killed before its end
    after = seen["after"]
    assert after["last_error"] == "apply failed: kexec -p did not finish within 1 s; killed its process group"
    assert not after["applying"] and after["generation"] == 1
    group = json.loads(pids(standin).read_text())
    wait_for(lambda: not any(alive(pid) for pid in group), 5, "the stand-in and its child to be gone")


def test_a_child_kexec_leaves_behind_holding_its_pipes_does_not_hold_up_the_load(loop, standin):
    standin.script({}, {"child": True})  # exits at once; its `sleep 60` keeps stdout and stderr open
    seen: dict = {}

    def script(lp: Loop) -> None:
        lp.burst(1)
        lp.wait_status(lambda s: s["generation"] == 2, "generation 2")
        _, grandchild = json.loads(pids(standin).read_text())
        seen["holder_alive"] = alive(grandchild)  # the pipes are still open: the load was accounted before EOF
        seen["after"] = lp.wait_idle()

    try:
        loop().run(script)
    finally:
        kill_left_behind(standin)
    assert seen["holder_alive"], "the load was accounted only once its pipes closed"
    assert seen["after"]["in_sync"]


def pids(standin: Standin) -> Path:
    """Where the stand-in writes its own pid and its child's, once that child runs."""
    return Path(str(standin.log) + ".pids")


def kill_left_behind(standin: Standin) -> None:
    if pids(standin).exists():
        for pid in json.loads(pids(standin).read_text()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_kexecs_output_is_kept_to_its_tail(standin, tmp_path):
    complaint = "Cannot load /var/lib/kdump/initrd.img"
    standin.script({"exit": 1, "chatter_bytes": 4 << 20, "stderr": complaint + "\n"})
    result = run([str(standin.path), "-p", "x"], timeout_s=30)
    assert len(result.stdout) == OUTPUT_CAP and len(result.stderr) == OUTPUT_CAP
    assert result.stderr.endswith(complaint + "\n") and result.returncode == 1


def test_a_chatty_kexec_is_read_while_the_loop_runs_and_its_complaint_reported(loop, standin):
    complaint = "Cannot load /var/lib/kdump/initrd.img"
    standin.script({}, {"exit": 1, "chatter_bytes": 8 << 20, "stderr": complaint + "\n"})
    seen: dict = {}

    def script(lp: Loop) -> None:
        lp.burst(1)
        wait_for(lambda: (s := lp.status())["last_error"] is not None and not s["applying"], 20, "the failed load")
        seen["after"] = lp.status()

    loop().run(script)
    error = seen["after"]["last_error"]
    assert error.startswith("apply failed: kexec -p failed with exit status 1: ") and error.endswith(complaint)


def test_the_backends_synchronous_apply_takes_the_same_path(standin, root, tmp_path):
    standin.script({"exit": 1, "chatter_bytes": 1 << 20, "stderr": "kexec_load failed: Invalid argument\n"})
    b = KexecBackend(KexecConfig(binary=str(standin.path)), str(root), str(tmp_path / "state"), kernel(root))
    with pytest.raises(BackendError, match=r"^kexec -p failed with exit status 1: .*: Invalid argument$"):
        b.apply(model(root), kernel(root))


# --- reconcile answers after the update --------------------------------------------------------------


def test_reconcile_is_answered_after_the_load_and_its_wait_is_not_a_timeout(loop, standin):
    standin.script({}, {"delay_s": LOAD_S})
    seen: dict = {}

    def script(lp: Loop) -> None:
        hot_add(lp.root, 1)  # no event: only the reconcile sees it
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(lp.socket)
            sock.sendall(b'{"op": "reconcile"}\n')
            lp.wait_applying()
            seen["early"] = select.select([sock], [], [], 0)[0]  # no reply while the load runs
            seen["during"] = lp.statuses_while_applying()  # longer than timeout_ms: the waiting client stays
            seen["reply"] = read_reply(sock)
            seen["saved"] = lp.saved_generation()
            sock.sendall(b'{"op": "status"}\n')  # the connection goes on as before
            seen["next"] = read_reply(sock)

    loop(control={"timeout_ms": 300}).run(script)
    answered_while_loading(seen["during"])
    assert seen["early"] == []
    reply = seen["reply"]
    assert reply["ok"], reply
    assert reply["result"]["applied"] and reply["result"]["generation"] == 2 and reply["result"]["changes"]
    assert reply["result"]["duration_s"] >= LOAD_S  # the update it reports took the whole scripted load
    assert seen["saved"] == 2  # the load had ended, and been recorded, when the reply came
    assert seen["next"]["ok"] and seen["next"]["result"]["generation"] == 2


def test_reconcile_during_a_running_load_gets_its_own_update_after_it(loop, standin):
    standin.script({}, {"delay_s": LOAD_S}, {"delay_s": 0.2})
    seen: dict = {}

    def script(lp: Loop) -> None:
        lp.burst(1)
        lp.wait_applying()
        hot_add(lp.root, 2)  # after the running load read the tree
        seen["reply"] = lp.request("reconcile")

    loop().run(script)
    reply = seen["reply"]
    assert reply["ok"] and reply["result"]["applied"] and reply["result"]["generation"] == 3, reply
    assert len(standin.loads()) == 3


def test_a_client_that_hangs_up_while_its_reconcile_waits_costs_nothing(loop, standin, caplog):
    standin.script({}, {"delay_s": LOAD_S})
    seen: dict = {}

    def script(lp: Loop) -> None:
        hot_add(lp.root, 1)
        gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        gone.connect(lp.socket)
        gone.sendall(b'{"op": "reconcile"}\n')
        half = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a request ended by closing its sending side
        half.settimeout(10)
        half.connect(lp.socket)
        half.sendall(b'{"op": "reconcile"}')
        half.shutdown(socket.SHUT_WR)
        lp.wait_applying()
        gone.close()
        seen["during"] = lp.statuses_while_applying()
        seen["half"] = read_reply(half)
        half.close()
        seen["after"] = lp.wait_idle()
        wait_for(lambda: not lp.control._clients, 5, "every client to be gone")

    with caplog.at_level(logging.DEBUG, logger="crashhpd"):
        loop().run(script)
    answered_while_loading(seen["during"])
    assert seen["half"]["ok"] and seen["half"]["result"]["generation"] == 2
    assert seen["after"]["generation"] == 2
    assert any("went away while its reply was deferred" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(standin.loads()) == 2  # both requests were served by the one update


# --- signals -----------------------------------------------------------------------------------------------


def test_sigterm_during_a_load_lets_it_finish_then_stops(loop, standin, monkeypatch, caplog, deadline):
    """The grace is an hour here: a loop that stopped any later than the load's end would hit `deadline`."""
    standin.script({}, {"delay_s": LOAD_S})
    monkeypatch.setattr(daemon_mod, "STOP_GRACE_S", 3600.0)
    seen: dict = {}

    def script(lp: Loop) -> None:
        lp.burst(1)
        lp.wait_applying()
        lp.signal(signal.SIGTERM)
        seen["during"] = lp.status()  # still served until the load has ended

    lp = loop()
    with caplog.at_level(logging.INFO, logger="crashhpd"):
        assert lp.run(script) == 0
    assert seen["during"]["applying"]
    assert [c["exit"] for c in standin.loads()] == [0, 0]
    assert lp.saved_generation() == 2  # the load that ran when SIGTERM came was recorded
    assert any("stopping once the kexec apply still running has ended" in r.getMessage() for r in caplog.records)
    assert not os.path.exists(lp.socket)


@pytest.mark.parametrize("how", ["grace runs out", "second SIGTERM"])
def test_sigterm_ends_a_load_that_does_not_finish(loop, standin, monkeypatch, caplog, deadline, how):
    """A load of 30 s, and for the second SIGTERM a grace of an hour: only what is tested ends the loop
    before `deadline` does."""
    standin.script({}, {"delay_s": 30, "child": True})
    monkeypatch.setattr(daemon_mod, "STOP_GRACE_S", 0.5 if how == "grace runs out" else 3600.0)

    def script(lp: Loop) -> None:
        lp.burst(1)
        wait_for(pids(standin).exists, 10, "the stand-in and its child to run")
        lp.signal(signal.SIGTERM)
        if how == "second SIGTERM":
            wait_for(lambda: lp.daemon.stopping, 5, "the first SIGTERM to be seen")
            lp.signal(signal.SIGTERM)

    lp = loop()
    with caplog.at_level(logging.INFO, logger="crashhpd"):
        assert lp.run(script) == 0
    failed = [r.getMessage() for r in caplog.records if kind_of(r) == "apply-failed"]
    assert failed == ["apply failed: kexec -p was still running when crashhpd stopped; killed its process group"]
    group = json.loads(pids(standin).read_text())
    wait_for(lambda: not any(alive(pid) for pid in group), 5, "the stand-in and its child to be gone")


WAITS = "configuration reload waits for the kexec apply still running"


def test_sighup_during_a_load_reloads_after_it_never_under_it(loop, standin, caplog):
    standin.script({}, {"delay_s": LOAD_S}, {})
    seen: dict = {}

    def script(lp: Loop) -> None:
        old = lp.daemon.backend
        lp.burst(1)
        lp.wait_applying()
        # a backend key changes: the reload builds a new backend, with no record of its own, that loads once
        write_config(lp.config, {**lp.tables, "sandbox": {"state_dir": str(lp.tmp_path / "state2")}})
        lp.signal(signal.SIGHUP)
        wait_for(lambda: any(r.getMessage() == WAITS for r in list(caplog.records)), 5, "the SIGHUP to be seen")
        seen["during"] = (lp.status()["applying"], lp.daemon.backend is old)
        wait_for(lambda: lp.daemon.backend is not old, 10, "the reload")
        seen["after"] = lp.wait_idle()

    with caplog.at_level(logging.INFO, logger="crashhpd"):
        loop().run(script)
    assert seen["during"] == (True, True)
    loads = standin.loads()
    assert len(loads) == 3
    one_at_a_time(loads)
    kinds = [(kind_of(r), r.getMessage()) for r in caplog.records]
    order = [k for k, m in kinds if k == "reload" or (k == "kexec-load" and m.startswith("reloaded"))]
    assert order == ["kexec-load", "reload", "kexec-load", "reload", "kexec-load"]  # waits, then reloads


def test_the_watchdog_is_pinged_during_a_load_and_ready_follows_the_start_up_load(loop, standin, tmp_path,
                                                                                   monkeypatch):
    standin.script({"delay_s": 0.3}, {"delay_s": LOAD_S})
    listener = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 50 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    seen: dict = {}

    def script(lp: Loop) -> None:
        lp.burst(1)
        lp.wait_applying()
        seen["before"] = list(listener.messages)
        while True:
            received = list(listener.messages)
            if not lp.status()["applying"]:
                break
            seen["during"] = received  # all received before a reply that says the load still runs
            time.sleep(0.005)
        seen["after"] = list(listener.messages)

    try:
        loop().run(script)
    finally:
        listener.close()
    during = seen["during"][len(seen["before"]):]
    assert during.count("WATCHDOG=1") >= 2, during  # pinged again and again while kexec ran
    assert any(m.startswith("STATUS=") and m.endswith("reloading") for m in seen["after"])
    ready = [i for i, m in enumerate(seen["after"]) if m.startswith("READY=1")]
    assert ready and "generation 1" in seen["after"][ready[0]]  # after the start-up load, not before it
