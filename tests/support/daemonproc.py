# SPDX-License-Identifier: GPL-2.0-only
"""A real `crashhpd run` process on a fake root, with a real sd_notify socket, for end-to-end tests."""

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from repo_paths import STANDIN

from crashhpd.control.client import request

CRASHHPD = str(Path(sys.executable).with_name("crashhpd"))
MEMORY = Path("/sys/devices/system/memory")


@functools.cache
def uevent_blocks() -> tuple[Path, ...]:
    """This machine's memory blocks whose `uevent` file can be written to inject real kernel uevents."""
    return tuple(sorted(MEMORY.glob("memory[0-9]*/uevent"), key=lambda p: int(p.parent.name[6:])))


def can_inject() -> str | None:
    """Why real uevents cannot be injected here, or None when they can."""
    if os.geteuid() != 0:
        return "injecting kernel uevents needs root"
    if not uevent_blocks():
        return "no /sys/devices/system/memory blocks on this kernel"
    return None


# the marks of a module whose tests inject real uevents: `pytestmark = UEVENTS`
UEVENTS = [pytest.mark.root, pytest.mark.skipif(can_inject() is not None, reason=can_inject() or "")]


def inject(action: str, count: int = 1) -> None:
    """Write `action` to memory blocks' uevent files: the kernel broadcasts a real uevent per write."""
    blocks = uevent_blocks()
    for i in range(count):
        with open(blocks[i % len(blocks)], "w") as f:
            f.write(action)


def toml_value(value: object) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def write_config(path: Path, tables: dict[str, object]) -> Path:
    """A TOML file from {key: value, "table": {key: value}}."""
    lines = [f"{k} = {toml_value(v)}" for k, v in tables.items() if not isinstance(v, dict)]
    for name, table in tables.items():
        if isinstance(table, dict):
            lines.append(f"[{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class NotifyListener:
    """The NOTIFY_SOCKET a service manager would give the daemon: reads every datagram as it comes.

    Like systemd, it reads continuously (a thread): a datagram socket whose
    queue fills up would block the daemon's sd_notify calls.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[str] = []
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except (TimeoutError, BlockingIOError):
                continue

    def seen(self, needle: str) -> bool:
        return any(needle in m for m in list(self.messages))

    def close(self) -> None:
        self._closing.set()
        self._reader.join()
        self.sock.close()


class DaemonProcess:
    def __init__(self, tmp: Path, config: Path, env: dict[str, str] | None = None,
                 command: list[str] | None = None) -> None:
        """`crashhpd run --config CONFIG`, or `command` (which must start the same daemon) in its place."""
        self.tmp = tmp
        self.notify = NotifyListener(tmp / "notify.sock")
        self.stderr_path = tmp / "daemon.stderr"
        self._stderr = open(self.stderr_path, "w")
        full_env = dict(os.environ, NOTIFY_SOCKET=str(self.notify.path), **(env or {}))
        full_env.pop("JOURNAL_STREAM", None)
        self.proc = subprocess.Popen(command or [CRASHHPD, "run", "--config", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=self._stderr, env=full_env)
        # as configured at start: never the default path, which may be a real daemon's
        self.control_socket: str | None = tomllib.loads(config.read_text()).get("control", {}).get("socket")

    def wait_ready(self, timeout: float = 20) -> None:
        wait_for(lambda: self.notify.seen("READY=1") or self.proc.poll() is not None, timeout, "READY=1")
        assert self.proc.poll() is None, f"daemon exited {self.proc.returncode}: {self.stderr()}"

    def wait_idle(self, timeout: float = 10) -> dict:
        """Until the daemon itself reports nothing more to do (see wait_idle below); its last status."""
        assert self.control_socket, "the daemon's config names no control.socket to ask"
        return wait_idle(self.control_socket, timeout)

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10) -> int:
        if self._stderr.closed:
            return self.proc.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        self.notify.close()
        return self.proc.returncode


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def daemon_status(socket_path: Path | str, timeout: float = 5) -> dict:
    """The daemon's own `status` report, asked over its control socket as crashhpctl asks."""
    reply = request(str(socket_path), "status", timeout)
    assert reply.ok and reply.result is not None, reply
    return reply.result


IDLE_POLL_S = 0.05  # longer than the loop's BATCH_S (10 ms), for which read uevents may wait unread


def wait_idle(socket_path: Path | str, timeout: float = 10) -> dict:
    """Until the daemon reports nothing left to do: no pending event, no update or retry due, no apply
    running; its last status.

    During a burst the loop leaves its uevent socket unread for up to BATCH_S
    between drains, so one idle report may still have events waiting behind
    it: the daemon counts as idle once two reports IDLE_POLL_S apart are idle
    and no event was received between them.
    """
    deadline = time.monotonic() + timeout
    previous: dict | None = None
    while True:
        now = daemon_status(socket_path)
        idle = now["pending_events"] == 0 and now["next_update_in_s"] is None and not now["applying"]
        if idle and previous is not None and previous["events_received"] == now["events_received"]:
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for the daemon to be idle: {now}")
        previous = now if idle else None
        time.sleep(IDLE_POLL_S)


def state(state_dir: Path) -> dict:
    return json.loads((state_dir / "state.json").read_text())


def generation(state_dir: Path) -> int:
    try:
        return state(state_dir)["generation"]
    except FileNotFoundError:
        return 0


def segment_header(state_dir: Path) -> bytes:
    """The header in the sandbox segment, without the zero padding after it: what the daemon applied last."""
    return (state_dir / "elfcorehdr").read_bytes()[: state(state_dir)["header_size"]]


def generated(root: Path, layout: str = "kernel") -> bytes:
    """What `crashhpd generate` builds for the tree now: the reference the daemon must match."""
    return subprocess.run([CRASHHPD, "generate", "--root", str(root), "--layout", layout],
                          capture_output=True, check=True).stdout


DEBIAN_KDUMP = {  # what a Debian host with a crash kernel loaded at boot shows the kexec backend
    "sys/kernel/kexec_crash_loaded": "1\n", "proc/cmdline": "root=/dev/vda1 quiet crashkernel=256M\n",
    "var/lib/kdump/vmlinuz": "kernel", "var/lib/kdump/initrd.img": "initrd",
}


@dataclass(frozen=True)
class KexecSetup:
    """A fake Debian root for the kexec backend, the stand-in kexec's script and log, and a config for both."""

    root: Path
    standin_control: Path
    standin_log: Path
    socket: Path
    config: Path

    def env(self) -> dict[str, str]:
        return {"KEXEC_STANDIN_CONTROL": str(self.standin_control)}

    def loads(self) -> int:
        """`kexec -p` runs the stand-in saw."""
        if not self.standin_log.exists():
            return 0
        return sum("-p" in json.loads(line)["argv"] for line in self.standin_log.read_text().splitlines())


def kexec_setup(tmp_path: Path, iomem: str, **tables: object) -> KexecSetup:
    """The kexec backend with the stand-in kexec (the machines here have no kexec_load) on a fake root."""
    from faketree import make_tree

    root = make_tree(tmp_path / "root", iomem, extra=DEBIAN_KDUMP)
    control, log = tmp_path / "standin.json", tmp_path / "standin.jsonl"
    control.write_text(json.dumps({"root": str(root), "log": str(log), "version": "kexec-tools 2.0.25",
                                   "outcomes": [], "default": {}}))
    sock = tmp_path / "control.sock"
    config = write_config(tmp_path / "crashhpd.toml", {
        "root": str(root), "backend": "kexec", "state_dir": str(tmp_path / "state"),
        "monitor": {"source": "kernel"}, "control": {"socket": str(sock)}, "kexec": {"binary": str(STANDIN)},
        **tables,
    })
    return KexecSetup(root, control, log, sock, config)
