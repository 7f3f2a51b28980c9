# SPDX-License-Identifier: GPL-2.0-only
"""A real daemon on a fake root with its control socket where `nobody` can reach it, and how tests talk to it.

Shared by the control socket's tests (tests/control/) and the metrics tests: the `env` fixture
(import it into the test module so pytest registers it), request helpers over real sockets,
and the one-line start-up error a bad socket setting must give.
"""

import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import faketree
import pytest
from daemonproc import CRASHHPD, DaemonProcess, write_config
from faketree import BLOCK, make_tree, virtio_mem_plugged

from crashhpd.control import contract

HOT_ADDED = "+ RAM 0x350000000-0x357ffffff (128 MiB)"
NEVER_MS = 600_000  # a debounce no stray uevent from another process ends during a test
NOBODY, NOGROUP = "nobody", "nogroup"
STATUS_KEYS = {"version", "backend", "layout", "generation", "in_sync", "events_received", "applies",
               "skipped_noop", "pending_events", "cpus", "ram_ranges", "capacity_bytes", "header_bytes",
               "last_apply_at", "last_error"}


def iomem(hot_added: int = 0, separate: int = 0) -> str:
    """The virtio-mem fixture, `hot_added` 128 MiB blocks after its last one, `separate` more ranges far above."""
    return faketree.hot_added(virtio_mem_plugged(hot_added), separate, 0x1000000000, stride=2 * BLOCK)


@dataclass
class Env:
    """A fake root, a state directory and a control socket in a directory `nobody` can enter."""

    tmp: Path
    root: Path
    state_dir: Path
    socket: Path
    daemons: list[DaemonProcess] = field(default_factory=list)

    def config(self, **tables: dict) -> Path:
        """The config every test starts from, with `tables` merged over it key by key."""
        base: dict[str, dict] = {
            "monitor": {"source": "kernel"},
            "debounce": {"quiet_ms": NEVER_MS, "max_delay_ms": NEVER_MS},
            "backend": "sandbox", "sandbox": {"state_dir": str(self.state_dir)},
            "log": {"level": "debug"},
            "control": {"socket": str(self.socket)},
        }
        for table, values in tables.items():
            base[table] = {**base.get(table, {}), **values}
        return write_config(self.tmp / "crashhpd.toml", {"root": str(self.root), **base})

    def start(self, **tables: dict) -> DaemonProcess:
        d = DaemonProcess(self.tmp, self.config(**tables))
        self.daemons.append(d)
        d.wait_ready()
        return d


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    socket_dir = Path(tempfile.mkdtemp(prefix="crashhpd-ctl-"))  # pytest's tmp_path is closed to other users
    socket_dir.chmod(0o755)
    e = Env(tmp_path, make_tree(tmp_path / "root", iomem()), tmp_path / "state", socket_dir / "control.sock")
    yield e
    for d in e.daemons:
        d.stop()
    shutil.rmtree(socket_dir)


def connect(path: Path, timeout: float = 5) -> socket.socket:
    """A connected socket; while the daemon's accept queue is full, a Unix connect fails with EAGAIN: retry."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.connect(str(path))
            return sock
        except BlockingIOError:
            if time.monotonic() > deadline:
                sock.close()
                raise
            time.sleep(0.001)


def read_reply(sock: socket.socket) -> dict:
    """One reply line; AssertionError if the connection ends first."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return json.loads(data)


def read_replies(sock: socket.socket, count: int) -> list[dict]:
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return [json.loads(line) for line in data.splitlines()]


def ask(path: Path, op: str | dict | bytes) -> dict:
    """One request on a fresh connection, as crashhpctl sends it."""
    line = op if isinstance(op, bytes) else json.dumps({"op": op} if isinstance(op, str) else op).encode() + b"\n"
    with connect(path) as sock:
        sock.sendall(line)
        return read_reply(sock)


def result(path: Path, op: str) -> dict:
    reply = ask(path, op)
    assert reply["v"] == contract.VERSION and reply["ok"], reply
    return reply["result"]


def closed(sock: socket.socket) -> bool:
    """Whether the daemon has closed its end (EOF, or a reset because our data went unread)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def run_as_nobody(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, user=NOBODY, group=NOGROUP, extra_groups=[], capture_output=True, text=True,
                          timeout=30)


def start_failing(env: Env, **tables: dict) -> subprocess.CompletedProcess:
    return subprocess.run([CRASHHPD, "run", "--config", str(env.config(**tables))], capture_output=True, text=True,
                          timeout=30)


def assert_one_line(proc: subprocess.CompletedProcess, *needles: str, code: int = 78) -> None:
    """78, EX_CONFIG (the unit's RestartPreventExitStatus, since restarting cannot help), unless `code`."""
    assert proc.returncode == code
    assert "Traceback" not in proc.stderr
    line = next(line for line in proc.stderr.splitlines() if "cannot start" in line)
    assert all(n in line for n in needles), line
