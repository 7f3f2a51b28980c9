# SPDX-License-Identifier: GPL-2.0-only
"""`status` round-trip latency on the control socket while the daemon works through an event storm.

Run as root: .venv/bin/python tests/bench/status_latency.py [--requests 10000] [--rate 0]

A real daemon process on a fake root (the virtio-mem fixture), with its
default debounce (200 ms quiet, 2 s max delay). A second process injects
real kernel uevents (writes to /sys/devices/system/memory/memoryN/uevent) in
a loop, as fast as it can or at --rate events per second, and every 64
events adds a 128 MiB block to the tree (starting over after 60), so the
storm's updates really apply. Meanwhile this process sends `status` requests one after the
other and times each from connect to the parsed reply, twice: a new
connection per request (what crashhpctl does) and all requests on one
connection. Printed: median, p90, p99 and max per mode, the events the
daemon received and the headers it applied during the run. Target: p99
under 5 ms.

With --hostile, instead of the storm: an 8000-range tree, and a second
process running as `nobody`, a member of the socket's group, pipelining
`verify` and `header` requests (200 of each per write) and reconnecting, as
fast as it can; root's `status` is timed the same way, first with no such
client (the baseline, same run, same tree), then during the attack. Printed
besides: how many of the attacker's requests were answered and how many
turned away (busy).

    .venv/bin/python tests/bench/status_latency.py --hostile --requests 2000 [--crashhpd OTHER/bin/crashhpd]

With --root-verify-flood, on the same 8000-range tree: a second process
running as root (exempt from the request budget) pipelines 1000 `verify`
requests in one write, reads the 1000 replies and starts over, as fast as it
can; root's `status` is timed as above, first with no flood, then during it.
Targets: p99 under 5 ms during the flood. Printed besides: `crashhpctl
--config FILE status` end to end, the median of --runs subprocess runs, beside
`python -c pass` run by the same interpreter (target: under 60 ms). --crashhpd
and --crashhpctl measure another build (say a checkout of the previous commit):

    .venv/bin/python tests/bench/status_latency.py --root-verify-flood --requests 2000 \
        [--crashhpd OTHER/crashhpd] [--crashhpctl OTHER/crashhpctl]
"""

import argparse
import json
import multiprocessing
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from daemonproc import DaemonProcess, generation, uevent_blocks, write_config
from faketree import (
    BLOCK,
    QEMU_GUEST,
    QEMU_HOT_ADD_BASE,
    VIRTIO_MEM,
    hot_added,
    make_tree,
    replace_iomem,
    virtio_mem_plugged,
)

MAX_BLOCKS = 60  # 128 MiB blocks that fit after the fixture's last one, inside its virtio1 device
EVENTS_PER_CHANGE = 64
REQUEST = b'{"op": "status"}\n'


def storm(root: Path, rate: float, stop: Event, sent: Synchronized) -> None:
    """The second process: real uevents until told to stop, the tree changing every EVENTS_PER_CHANGE."""
    files = [open(path, "w") for path in uevent_blocks()]
    interval = 1 / rate if rate else 0.0
    count = 0
    next_at = time.monotonic()
    while not stop.is_set():
        if count % EVENTS_PER_CHANGE == 0:
            replace_iomem(root, virtio_mem_plugged((count // EVENTS_PER_CHANGE) % MAX_BLOCKS + 1))
        files[count % len(files)].write("online")
        files[count % len(files)].flush()
        count += 1
        if interval:
            next_at += interval
            time.sleep(max(next_at - time.monotonic(), 0))
    sent.value = count


def read_line(sock: socket.socket, pending: bytearray) -> bytes:
    while (end := pending.find(b"\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the daemon closed the connection")
        pending += chunk
    line = bytes(pending[:end])
    del pending[:end + 1]
    return line


def one_per_connection(path: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            sock.sendall(REQUEST)
            reply = json.loads(read_line(sock, bytearray()))
        times.append(time.perf_counter() - started)
        assert reply["ok"], reply
    return times


def one_connection(path: str, count: int) -> list[float]:
    times = []
    pending = bytearray()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        for _ in range(count):
            started = time.perf_counter()
            sock.sendall(REQUEST)
            reply = json.loads(read_line(sock, pending))
            times.append(time.perf_counter() - started)
            assert reply["ok"], reply
    return times


def status(path: str) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(REQUEST)
        return json.loads(read_line(sock, bytearray()))["result"]


def figures(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p = statistics.quantiles(ms, n=100, method="inclusive")
    return (f"median {statistics.median(ms):6.3f} ms  p90 {p[89]:6.3f} ms  p99 {p[98]:6.3f} ms  "
            f"max {ms[-1]:7.3f} ms")


NOBODY, NOGROUP = 65534, 65534
ATTACK = b'{"op": "verify"}\n' * 200 + b'{"op": "header"}\n' * 200


def attacker(path: str, stop: Event, answered: Synchronized, busy: Synchronized) -> None:
    """The second process, as nobody in the socket's group: pipelined verify and header, reconnecting."""
    os.setgroups([])
    os.setgid(NOGROUP)
    os.setuid(NOBODY)
    ok = refused = 0
    while not stop.is_set():
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(path)
                sock.sendall(ATTACK)
                pending = bytearray()
                for _ in range(ATTACK.count(b"\n")):
                    reply = json.loads(read_line(sock, pending))
                    ok += reply["ok"]
                    refused += not reply["ok"] and reply["error"]["code"] == "busy"
        except OSError:
            continue  # turned away at connect: try again
    answered.value, busy.value = ok, refused


@dataclass(frozen=True)
class Attacked:
    baseline: list[float]  # root's status times with no second process
    during: list[float]  # ... and while it runs
    elapsed: float  # seconds the `during` requests took
    counts: tuple[int, int]  # what the second process counted
    first: object  # what `first` returned


def status_under(attack: Callable[..., None], requests: int, crashhpd: str | None, group: str = "root",
                 first: Callable[[Path], object] = lambda _config: None) -> Attacked:
    """root's `status` timed on an 8000-range tree, with no second process, then while `attack(socket, stop,
    count, count)` runs in one; `first(config)` runs once the daemon is ready, before either."""
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        root = make_tree(work / "root", hot_added(QEMU_GUEST, 8000, QEMU_HOT_ADD_BASE, stride=2 * BLOCK))
        sock_path = str(work / "control.sock")
        os.chmod(work, 0o755)  # nobody must reach the socket
        config = write_config(work / "crashhpd.toml", {
            "root": str(root), "monitor": {"source": "kernel"}, "backend": "sandbox",
            "sandbox": {"state_dir": str(work / "state")},
            "control": {"socket": sock_path, "group": group}, "log": {"level": "info"},
        })
        daemon = DaemonProcess(work, config, command=[crashhpd, "run", "--config", str(config)] if crashhpd else None)
        stop = multiprocessing.Event()
        counts = multiprocessing.Value("q", 0), multiprocessing.Value("q", 0)
        second = multiprocessing.Process(target=attack, args=(sock_path, stop, *counts))
        try:
            daemon.wait_ready()
            before = first(config)
            baseline = one_per_connection(sock_path, requests)
            second.start()
            time.sleep(1.0)  # the attack is under way
            started = time.monotonic()
            during = one_per_connection(sock_path, requests)
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            if second.pid is not None:
                second.join()
            daemon.stop()
    return Attacked(baseline, during, elapsed, (counts[0].value, counts[1].value), before)


def hostile(requests: int, crashhpd: str | None) -> None:
    run = status_under(attacker, requests, crashhpd, group="nogroup")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"tree: 8000 RAM ranges; attacker (uid {NOBODY}, in the socket's group): {run.counts[0]} requests "
          f"answered, {run.counts[1]} turned away (busy) over {run.elapsed:.1f} s")
    print(f"root status x {requests}, no attacker (baseline) {figures(run.baseline)}")
    print(f"root status x {requests}, during the attack     {figures(run.during)}")
    print(f"p99 during / baseline: {figures_p99(run.during) / figures_p99(run.baseline):.1f}x")


ROUND = 1000  # verify requests per write
FLOOD = b'{"op": "verify"}\n' * ROUND


def verify_flood(path: str, stop: Event, answered: Synchronized, rounds: Synchronized) -> None:
    """The second process, as root: ROUND pipelined `verify` requests per write, read back, over and over."""
    ok = done = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        pending = bytearray()
        while not stop.is_set():
            sock.sendall(FLOOD)
            for _ in range(ROUND):
                ok += json.loads(read_line(sock, pending))["ok"]
            done += 1
    answered.value, rounds.value = ok, done


INSTALLED = ("import sys; sys.path.insert(0, sys.argv.pop(1)); from crashhpd.control.client import main; "
             "sys.exit(main())")


def crashhpctl_runs(crashhpctl: str, config: Path, runs: int) -> tuple[list[float], ...]:
    """Wall-clock seconds of `crashhpctl --config CONFIG status` and of `python -c pass`, each run `runs` times;
    then both again as an installed crashhpctl runs: the system's python3 -I, no virtualenv, no editable finder."""
    def timed(argv: list[str]) -> float:
        started = time.perf_counter()
        code = subprocess.run(argv, stdout=subprocess.DEVNULL).returncode
        if code not in (0, 1):  # 1: answered, NOT protected (the sandbox never is)
            raise SystemExit(f"{argv}: exit status {code}")
        return time.perf_counter() - started

    ctl, bare, installed, system = [], [], [], []
    tree = str(Path(__file__).resolve().parents[2])
    for _ in range(runs):  # alternated, so a busy moment of the machine weighs on both alike
        ctl.append(timed([crashhpctl, "--config", str(config), "status"]))
        bare.append(timed([sys.executable, "-c", "pass"]))
        installed.append(timed(["/usr/bin/python3", "-I", "-c", INSTALLED, tree, "--config", str(config), "status"]))
        system.append(timed(["/usr/bin/python3", "-I", "-c", "pass"]))
    return ctl, bare, installed, system


def root_verify_flood(requests: int, runs: int, crashhpd: str | None, crashhpctl: str) -> None:
    run = status_under(verify_flood, requests, crashhpd, first=lambda config: crashhpctl_runs(crashhpctl, config, runs))
    ctl, bare, installed, system = cast(tuple[list[float], ...], run.first)
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"crashhpctl --config FILE status, median of {runs}: {statistics.median(ctl) * 1000:.1f} ms "
          f"(python -c pass: {statistics.median(bare) * 1000:.1f} ms)")
    print(f"the same as installed (/usr/bin/python3 -I, no virtualenv): {statistics.median(installed) * 1000:.1f} "
          f"ms (python3 -I -c pass: {statistics.median(system) * 1000:.1f} ms)")
    print(f"tree: 8000 RAM ranges; root flood: {run.counts[0]} verify replies in {run.counts[1]} rounds of "
          f"{ROUND} pipelined requests, over {run.elapsed:.1f} s of status requests")
    print(f"root status x {requests}, no flood (baseline) {figures(run.baseline)}")
    print(f"root status x {requests}, during the flood    {figures(run.during)}")


def figures_p99(times: list[float]) -> float:
    return statistics.quantiles(sorted(times), n=100, method="inclusive")[98]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10_000, help="status requests per mode")
    ap.add_argument("--rate", type=float, default=0, help="events per second (0: as fast as one process can)")
    ap.add_argument("--hostile", action="store_true", help="a group member hammering verify and header instead")
    ap.add_argument("--root-verify-flood", action="store_true",
                    help="root pipelining 1000 verify requests at a time instead, and crashhpctl's start-up")
    ap.add_argument("--runs", type=int, default=50, help="with --root-verify-flood: crashhpctl runs to time")
    ap.add_argument("--crashhpd", help="with --hostile or --root-verify-flood: the crashhpd to measure "
                                       "(e.g. an older build's)")
    ap.add_argument("--crashhpctl", default=str(Path(sys.executable).with_name("crashhpctl")),
                    help="with --root-verify-flood: the crashhpctl to time")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("status_latency.py needs root: it injects real kernel uevents or runs a client as nobody")
    if args.hostile:
        hostile(args.requests, args.crashhpd)
        return
    if args.root_verify_flood:
        root_verify_flood(args.requests, args.runs, args.crashhpd, args.crashhpctl)
        return
    with tempfile.TemporaryDirectory() as work_dir:
        work = Path(work_dir)
        root = make_tree(work / "root", VIRTIO_MEM)
        sock_path = str(work / "control.sock")
        config = write_config(work / "crashhpd.toml", {
            "root": str(root), "monitor": {"source": "kernel"}, "backend": "sandbox",
            "sandbox": {"state_dir": str(work / "state")},
            "control": {"socket": sock_path}, "log": {"level": "info"},
        })
        daemon = DaemonProcess(work, config)
        stop_storm = multiprocessing.Event()
        sent = multiprocessing.Value("q", 0)
        injector = multiprocessing.Process(target=storm, args=(root, args.rate, stop_storm, sent))
        try:
            daemon.wait_ready()
            before, gen_before = status(sock_path), generation(work / "state")
            injector.start()
            time.sleep(0.5)  # the storm is under way
            started = time.monotonic()
            results = {"new connection per request": one_per_connection(sock_path, args.requests),
                       "one connection, sequential": one_connection(sock_path, args.requests)}
            elapsed = time.monotonic() - started
            after, gen_after = status(sock_path), generation(work / "state")
        finally:
            stop_storm.set()
            injector.join()
            daemon.stop()
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"storm: {sent.value} uevents injected by a second process"
          f"{f' at {args.rate:g}/s' if args.rate else ' as fast as it could'}; "
          f"during the {elapsed:.1f} s of requests the daemon received "
          f"{after['events_received'] - before['events_received']} events and applied "
          f"{gen_after - gen_before} headers ({after['updates'] - before['updates']} updates)")
    for mode, times in results.items():
        print(f"status x {len(times)}, {mode:<27} {figures(times)}")


if __name__ == "__main__":
    main()
