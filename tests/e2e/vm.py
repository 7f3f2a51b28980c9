# SPDX-License-Identifier: GPL-2.0-only
"""One QEMU guest, driven from the host: the agent's channel on ttyS1, QMP for hot-plug, a hard deadline.

The host listens on both Unix sockets before QEMU starts and QEMU connects
to them as a client, so not a byte of either is lost to a race. Everything
the guest and QMP said is kept in the run's directory (console.log,
channel.log, qmp.log) and the tail of each is part of every failure message.
"""

import json
import os
import re
import select
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from .parts import Kernel, Qemu

MIB = 1 << 20
GIB = 1 << 30
HOTPLUG_BASE = 4 * GIB  # where QEMU's pc machine puts the first DIMM when all boot RAM is below 4 GiB
BOOT_ARGS = "console=ttyS0 crashkernel=256M memhp_default_state=online panic=0 loglevel=4"
TAIL_LINES = 40


class GuestError(AssertionError):
    """The guest did not do what the test needed; the message carries the transcripts."""


def accelerator() -> str:
    """KVM where it works (CPU flags say the host can virtualise and /dev/kvm opens), else TCG."""
    forced = os.environ.get("CRASHHPD_E2E_ACCEL")
    if forced:
        return forced
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
    except OSError:
        return "tcg"
    return "kvm" if {"vmx", "svm"} & set(flags) else "tcg"


class Guest:
    """A guest booted with the crashhpd initramfs; use as a context manager so QEMU always dies."""

    def __init__(self, qemu: Qemu, kernel: Kernel, initrd: Path, workdir: Path, mode: str,
                 deadline_s: float = 150.0, memory: str = "1G,slots=4,maxmem=4G", smp: str = "2",
                 append: str | None = None, extra: Sequence[str] = ()) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.console = workdir / "console.log"
        self.channel_log = workdir / "channel.log"
        self.qmp_log = workdir / "qmp.log"
        self.deadline = time.monotonic() + deadline_s
        self.accel = accelerator()
        self._buffers = {"channel": b"", "qmp": b""}
        self.events: list[dict[str, Any]] = []  # QMP events, in the order they came
        self._sockets: dict[str, socket.socket] = {}
        listeners = {name: self._listen(workdir / f"{name}.sock") for name in ("channel", "qmp")}
        argv = [
            str(qemu.binary), *(arg for fw in qemu.firmware for arg in ("-L", str(fw))),
            "-accel", self.accel, "-machine", "pc", "-cpu", "max" if self.accel == "kvm" else "qemu64",
            "-m", memory, "-smp", smp, "-nodefaults", "-display", "none", "-no-reboot",
            "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
            "-append", append if append is not None else f"{BOOT_ARGS} crashhpd_e2e.mode={mode}",
            "-chardev", f"file,id=console,path={self.console}", "-serial", "chardev:console",
            "-chardev", f"socket,id=channel,path={workdir / 'channel.sock'}", "-serial", "chardev:channel",
            "-chardev", f"socket,id=qmp,path={workdir / 'qmp.sock'}", "-mon", "chardev=qmp,mode=control",
            *extra,
        ]
        (workdir / "qemu.argv").write_text(" ".join(argv) + "\n")
        with open(workdir / "qemu.out", "wb") as out:
            self.proc = subprocess.Popen(argv, env=qemu.env(), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)
        try:
            for name, listener in listeners.items():
                listener.settimeout(max(1.0, self.deadline - time.monotonic()))
                try:
                    self._sockets[name], _ = listener.accept()
                except TimeoutError:
                    raise self.failure(f"QEMU did not connect its {name} socket") from None
                finally:
                    listener.close()
            self._qmp_read()  # the greeting
            self.qmp("qmp_capabilities")
        except BaseException:
            self.kill()
            raise

    @staticmethod
    def _listen(path: Path) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        sock.listen(1)
        return sock

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        """SIGKILL by pid if it still runs: a guest never outlives its test."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for sock in self._sockets.values():
            sock.close()

    # --- transcripts --------------------------------------------------------------------------

    def failure(self, message: str) -> GuestError:
        parts = [f"{message} (accel {self.accel}, artefacts in {self.workdir})"]
        for path in (self.console, self.channel_log, self.qmp_log, self.workdir / "qemu.out"):
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-TAIL_LINES:]
                parts.append(f"--- {path.name} (last {len(lines)} lines) ---\n" + "\n".join(lines))
        return GuestError("\n".join(parts))

    def _log(self, path: Path, direction: str, line: str) -> None:
        with open(path, "a") as f:
            f.write(f"{time.monotonic():.3f} {direction} {line}\n")

    def _readline(self, name: str) -> str:
        """The next line from a socket, waiting at most until the guest's deadline."""
        sock = self._sockets[name]
        while b"\n" not in self._buffers[name]:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise self.failure(f"deadline passed waiting on {name}")
            ready, _, _ = select.select([sock], [], [], min(remaining, 1.0))
            if not ready:
                if self.proc.poll() is not None and name == "channel":
                    raise self.failure(f"QEMU exited with status {self.proc.returncode} while waiting on {name}")
                continue
            chunk = sock.recv(65536)
            if not chunk:
                raise self.failure(f"QEMU closed the {name} socket (exit status {self.proc.poll()})")
            self._buffers[name] += chunk
        line, self._buffers[name] = self._buffers[name].split(b"\n", 1)
        text = line.decode(errors="replace").rstrip("\r")
        self._log(self.channel_log if name == "channel" else self.qmp_log, "<", text)
        return text

    # --- QMP ----------------------------------------------------------------------------------

    def _qmp_read(self) -> dict[str, Any]:
        return json.loads(self._readline("qmp"))

    def qmp(self, command: str, **arguments: Any) -> Any:
        request = json.dumps({"execute": command, **({"arguments": arguments} if arguments else {})})
        self._log(self.qmp_log, ">", request)
        self._sockets["qmp"].sendall(request.encode() + b"\n")
        while True:
            reply = self._qmp_read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise self.failure(f"QMP {command} failed: {reply['error']}")
            return reply["return"]

    def qmp_event(self, name: str, timeout_s: float, **data: Any) -> dict[str, Any]:
        """The first QMP event `name` whose data has `data`, seen before or within `timeout_s`."""
        deadline = min(self.deadline, time.monotonic() + timeout_s)
        while True:
            for event in self.events:
                if event["event"] == name and all(event.get("data", {}).get(k) == v for k, v in data.items()):
                    return event
            if time.monotonic() > deadline:
                raise self.failure(f"no QMP event {name} {data} within {timeout_s:g} s")
            ready, _, _ = select.select([self._sockets["qmp"]], [], [], 0.2)
            if ready or b"\n" in self._buffers["qmp"]:
                self.events.append(self._qmp_read())

    def hot_add_memory(self, size: int, address: int, name: str = "dimm0") -> dict[str, Any]:
        """object-add + device_add pc-dimm: what a cloud's "add memory" does to the guest."""
        self.qmp("object-add", **{"qom-type": "memory-backend-ram", "id": f"{name}-mem", "size": size})
        self.qmp("device_add", driver="pc-dimm", id=name, memdev=f"{name}-mem", addr=address)
        for device in self.qmp("query-memory-devices"):
            data = device["data"]
            if data.get("id") == name:
                return data
        raise self.failure(f"QMP query-memory-devices does not list {name}")

    def hot_remove_memory(self, name: str, timeout_s: float = 180.0) -> dict[str, Any]:
        """device_del a DIMM: the guest offlines and removes its blocks and ejects it; QEMU's DEVICE_DELETED."""
        self.qmp("device_del", id=name)
        return self.qmp_event("DEVICE_DELETED", timeout_s, device=name)

    def hot_add_cpu(self, name: str = "cpu-hot") -> dict[str, Any]:
        """device_add the first free CPU slot QEMU offers (boot with -smp N,maxcpus=M); returns its slot."""
        free = [slot for slot in self.qmp("query-hotpluggable-cpus") if "qom-path" not in slot]
        if not free:
            raise self.failure("no free CPU slot: boot with -smp N,maxcpus=M")
        slot = min(free, key=lambda s: tuple(sorted(s["props"].items())))
        self.qmp("device_add", driver=slot["type"], id=name, **slot["props"])
        return slot

    # --- the agent ----------------------------------------------------------------------------

    def send(self, *words: object) -> None:
        line = " ".join(str(w) for w in words)
        self._log(self.channel_log, ">", line)
        self._sockets["channel"].sendall(line.encode() + b"\n")

    def expect(self, kind: str) -> Any:
        """The payload of the agent's next message, which must be `kind`; anything else fails the test."""
        while True:
            line = self._readline("channel")
            match = re.match(r"E2E (\S+) (.*)$", line)
            if match is None:
                continue  # line noise from the UART coming up
            got, payload = match.group(1), json.loads(match.group(2))
            if got == kind:
                return payload
            raise self.failure(f"expected {kind} from the guest, got {got}: {payload}")

    def wait_exit(self) -> int:
        remaining = self.deadline - time.monotonic()
        try:
            return self.proc.wait(timeout=max(remaining, 0.1))
        except subprocess.TimeoutExpired:
            raise self.failure("QEMU did not exit before the deadline") from None
