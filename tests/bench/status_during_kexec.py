# SPDX-License-Identifier: GPL-2.0-only
"""`status` round-trip latency while the daemon reloads the crash kernel, against the loop that waited for kexec.

Run as root (reconcile is root only): .venv/bin/python tests/bench/status_during_kexec.py [--loads 5] [--load-s 1]

A real daemon process (`crashhpd run`, backend kexec) on a fake Debian
guest, its kexec the stand-in (tests/support/kexec_standin.py) sleeping --load-s
seconds per load: this kernel has no kexec_load. Each load is started by
hot-adding a block to the tree and sending `reconcile` on one connection;
until its reply comes (after the load), this process sends `status`
requests one after the other, a new connection each (what crashhpctl does),
and times each from connect to the parsed reply. No uevent is injected.

Three runs, the same stand-in in each:
- idle: status with no load running, for reference;
- beside the loop: the daemon as it is, kexec a child the loop watches;
- synchronous: the same daemon started with KexecBackend.begin() replaced
  by begin() + settle(), so that a load runs to its end inside the loop,
  the way every load did before it became a child of the loop.

Printed: status replies, median, p90, p99 and max per run, and the mean
length of a reconcile (the load included). Target: p99 under 5 ms during a 1 s load.
"""

import argparse
import os
import select
import shlex
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from daemonproc import DaemonProcess, write_config  # noqa: E402
from kexec_storm import STANDIN, set_blocks, standin, system  # noqa: E402
from status_latency import figures, one_per_connection, read_line  # noqa: E402

# the daemon of before: a load runs to its end inside the loop, through the same backend code
SYNCHRONOUS = """\
import sys
from crashhpd.backends import kexec
from crashhpd.backends.base import settle
from crashhpd.cli import main
from crashhpd.sysview.kernel_state import read_kernel_state
begin = kexec.KexecBackend.begin
kexec.KexecBackend.begin = lambda self, header, kernel: settle(begin(self, header, kernel),
                                                               lambda: read_kernel_state(self._root))
sys.exit(main())
"""


def start(work: Path, load_s: float, synchronous: bool) -> tuple[DaemonProcess, str, Path]:
    root = system(work)
    sock_path = str(work / "control.sock")
    control = standin(work, root, load_s)
    config = write_config(work / "crashhpd.toml", {
        "root": str(root), "backend": "kexec", "monitor": {"source": "kernel"},
        "sandbox": {"state_dir": str(work / "state")}, "control": {"socket": sock_path},
        "kexec": {"binary": str(STANDIN)}, "log": {"level": "warning"},
    })
    command = [sys.executable, "-c", SYNCHRONOUS, "run", "--config", str(config)] if synchronous else None
    daemon = DaemonProcess(work, config, {"KEXEC_STANDIN_CONTROL": str(control)}, command)
    daemon.wait_ready(60)  # after the start-up load
    return daemon, sock_path, root


def during_loads(sock_path: str, root: Path, loads: int) -> tuple[list[float], list[float]]:
    """Status round trips while each of `loads` reconciles runs; and how long each reconcile took."""
    times: list[float] = []
    reconciles: list[float] = []
    for n in range(1, loads + 1):
        set_blocks(root, n)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as waiting:
            waiting.connect(sock_path)
            started = time.perf_counter()
            waiting.sendall(b'{"op": "reconcile"}\n')
            while not select.select([waiting], [], [], 0)[0]:
                times += one_per_connection(sock_path, 1)
            reply = read_line(waiting, bytearray())
            reconciles.append(time.perf_counter() - started)
        assert b'"applied":true' in reply.replace(b" ", b""), reply
    return times, reconciles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loads", type=int, default=5, help="loads per run")
    ap.add_argument("--load-s", type=float, default=1.0, help="seconds one stand-in load takes")
    ap.add_argument("--idle", type=int, default=1000, help="status requests with no load running")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("status_during_kexec.py needs root: reconcile is root only")
    rows = []
    for label, synchronous in (("beside the loop (kexec a child)", False),
                               ("synchronous (kexec inside the loop)", True)):
        with tempfile.TemporaryDirectory() as work:
            daemon, sock_path, root = start(Path(work), args.load_s, synchronous)
            try:
                if not synchronous:
                    rows.append(("idle, no load running", one_per_connection(sock_path, args.idle), None))
                times, reconciles = during_loads(sock_path, root, args.loads)
            finally:
                daemon.stop()
        rows.append((f"during loads, {label}", times, sum(reconciles) / len(reconciles)))
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"stand-in kexec: {args.load_s:g} s per load, {args.loads} loads per run, each started by a reconcile")
    for label, times, reconcile_s in rows:
        took = f"  (reconcile {reconcile_s:.2f} s)" if reconcile_s is not None else ""
        print(f"{label:<52} status x {len(times):>5}  {figures(times)}{took}")


if __name__ == "__main__":
    main()
