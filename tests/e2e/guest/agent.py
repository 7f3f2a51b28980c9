# SPDX-License-Identifier: GPL-2.0-only
"""The guest's half of the e2e test, run by /init in both kernels; it talks to the host over ttyS1.

Every message is one line, `E2E <KIND> <json>` from the guest and `<COMMAND> <args>` from the
host; the kernel's console stays on ttyS0, so its messages never break a line. What the guest does
is chosen by `crashhpd_e2e.mode=` on the command line:

  kexec    load the crash kernel with `kexec -p`, run crashhpd with the kexec backend
  auto     load it with `kexec -p -s`, run crashhpd with backend = "auto"
  control  load it with `kexec -p` and run no crashhpd at all: what the test must catch
  stale    load it with kexec_load, which a 6.6+ kernel does not update, and tell crashhpd the
           backend is `kernel`: it must see the header go stale and reload (recover) with `kexec -p -s`
  distro   load it as Debian's kdump-tools does by default (no acpi_no_memhotplug; `kexec -p -s` with
           crashhpd_e2e.load=file), run crashhpd with backend = "auto" and [kexec] complete_cmdline
           as crashhpd_e2e.complete= says (0 or 1): it must see what the command line lacks
  bench    load the crash kernel, then obey BENCH commands (hotplug_bench.py, for tests/bench/guest_hotplug_emulated.py)

crashhpd_e2e.recover=0 sets [kernel] recover = false: a stale kernel header is reported, not reloaded.
PATTERN writes a known pattern into pages of a hot-added DIMM (dimm_pattern.py); FIND looks for it in the dump.

In the kdump kernel (/proc/vmcore exists) it reports the program headers of /proc/vmcore, read
with crashhpd's own validator, reads the pages the host asks for, or all of it. The systemd
guest (system.py) boots this kdump kernel too: kdump-tools loads it with this archive.
"""

import errno
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import tty
from collections.abc import Callable
from typing import Any

import dimm_pattern  # beside this file in both archives

from crashhpd.abi.elf import EHDR
from crashhpd.elfcorehdr.validate import parse  # the kdump kernel's archive has no more of crashhpd than this needs

PORT = "/dev/ttyS1"
KERNEL = "/boot/vmlinuz"
INITRD = "/boot/initrd.img"
RUN = "/run/crashhpd"
CONFIG = f"{RUN}/e2e.toml"
KEXEC_SHIM = "/usr/lib/crashhpd-e2e/kexec-shim"  # logs each call: a count crashhpd cannot fake
KEXEC_CALLS = f"{RUN}/kexec-calls"
CONTROL = f"{RUN}/control.sock"
NOTIFY = f"{RUN}/notify.sock"
# The kdump kernel must not hot-add the DIMMs it finds in ACPI as its own RAM: /proc/vmcore could not
# read them then (ioremap refuses RAM). Fedora's kdump appends the same; Debian's defaults do not.
APPEND = "acpi_no_memhotplug"
MEMORY = "/sys/devices/system/memory"
PAGE = 4096
READY_TIMEOUT_S = 240.0
SETTLE_TIMEOUT_S = 240.0


class Channel:
    """ttyS1 in raw mode: bytes pass untouched both ways."""

    def __init__(self, path: str = PORT) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        self._buffer = b""

    def send(self, kind: str, payload: Any = None) -> None:
        line = f"E2E {kind} {json.dumps(payload, separators=(',', ':'))}\n".encode()
        while line:
            line = line[os.write(self.fd, line):]

    def receive(self) -> list[str]:
        while b"\n" not in self._buffer:
            chunk = os.read(self.fd, 4096)
            if not chunk:
                raise EOFError("ttyS1 closed")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode().strip().split()


def param(name: str, default: str | None = None) -> str | None:
    with open("/proc/cmdline") as f:
        for word in f.read().split():
            key, _, value = word.partition("=")
            if key == f"crashhpd_e2e.{name}":
                return value
    return default


def uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


def run(argv: list[str]) -> dict[str, Any]:
    started = time.monotonic()
    proc = subprocess.run(argv, check=False, capture_output=True, text=True)
    return {"argv": argv, "exit": proc.returncode, "stderr": proc.stderr[-2000:],
            "seconds": time.monotonic() - started}


# --- first kernel -------------------------------------------------------------------------------


def crash_load_argv(file_load: bool, binary: str = "kexec", append: str | None = APPEND) -> list[str]:
    """The same `kexec -p` that crashhpd's kexec backend runs: one command line for every load."""
    from crashhpd.backends.kdump_discovery import discover
    from crashhpd.backends.kexec import load_argv
    crash = discover("/", KERNEL, INITRD, None, append)  # after the kdump-tools defaults (nr_cpus=1 ...)
    return load_argv(binary, crash, file_load, hotplug=False)


def load_crash_kernel(file_load: bool, append: str | None = APPEND) -> dict[str, Any]:
    return run(crash_load_argv(file_load, append=append))


def kimage_cmdline_buf() -> dict[str, Any]:
    """struct kimage's cmdline_buf and cmdline_buf_len in the loaded crash image, read as crashhpd reads the
    image (kallsyms, BTF, kcore): whether the kernel keeps the command line there after a load."""
    from crashhpd.sysview.btf import read_vmlinux_btf
    from crashhpd.sysview.kallsyms import read_symbols
    from crashhpd.sysview.kcore import Kcore
    btf = read_vmlinux_btf("/")
    assert btf is not None
    kimage = btf.find_struct("kimage")
    buf, length = btf.field(kimage, "cmdline_buf"), btf.field(kimage, "cmdline_buf_len")
    symbols = read_symbols("/", ("kexec_crash_image",)) or {}
    with Kcore("/") as kcore:
        image = kcore.read_pointer(symbols["kexec_crash_image"] or 0, "kexec_crash_image")
        data = kcore.read(image, max(buf.offset + buf.size, length.offset + length.size), "struct kimage")
    return {"cmdline_buf": buf.value(data), "cmdline_buf_len": length.value(data)}


def daemon_quiet(done: Callable[[dict[str, Any]], bool], deadline: float) -> dict[str, Any]:
    """crashhpd's status once nothing is pending or running and `done` holds for it."""
    while True:
        status = control("status")
        if status["pending_events"] == 0 and status["next_update_in_s"] is None and not status["applying"] \
                and done(status):
            return status
        if time.monotonic() > deadline:
            raise RuntimeError(f"crashhpd did not settle before the deadline: {status}")
        time.sleep(0.05)


def write_config(backend: str, file_load: bool, append: str | None = APPEND, complete: bool = True,
                 recover: bool = True) -> None:
    os.makedirs(RUN, exist_ok=True)
    with open(CONFIG, "w") as f:
        f.write(f'backend = "{backend}"\n'
                '[monitor]\nsource = "kernel"\n'
                f'[sandbox]\nstate_dir = "{RUN}/state"\n'
                f'[control]\nsocket = "{CONTROL}"\n'
                '[log]\nlevel = "debug"\n'
                f'[kexec]\nbinary = "{KEXEC_SHIM}"\nkernel = "{KERNEL}"\ninitrd = "{INITRD}"\n'
                + (f'append = "{append}"\n' if append else "")
                + f'file_load = {"true" if file_load else "false"}\n'
                f'complete_cmdline = {"true" if complete else "false"}\n'
                f'[kernel]\nrecover = {"true" if recover else "false"}\n')


def start_crashhpd() -> tuple[subprocess.Popen, float]:
    """`crashhpd run` as systemd would start it (a NOTIFY_SOCKET); returns once it said READY=1."""
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(NOTIFY)
    started = time.monotonic()
    with open("/dev/console", "w") as console:  # the daemon's log lines land in the host's console.log
        proc = subprocess.Popen(["crashhpd", "run", "--config", CONFIG], stdout=console, stderr=console,
                                env={**os.environ, "NOTIFY_SOCKET": NOTIFY})
    notify.settimeout(1.0)
    while time.monotonic() - started < READY_TIMEOUT_S:
        try:
            if "READY=1" in notify.recv(4096).decode().split("\n"):
                return proc, time.monotonic() - started
        except TimeoutError:
            if proc.poll() is not None:
                raise RuntimeError(f"crashhpd exited with status {proc.returncode} before READY=1") from None
    raise RuntimeError(f"crashhpd did not say READY=1 within {READY_TIMEOUT_S:g} s")


def control(op: str) -> dict[str, Any]:
    from crashhpd.control.client import request
    reply = request(CONTROL, op, 30.0)
    if not reply.ok or reply.result is None:
        raise RuntimeError(f"crashhpctl {op}: {reply.error}")
    return reply.result


def blocks_online(start: int, size: int) -> bool:
    with open(f"{MEMORY}/block_size_bytes") as f:
        block = int(f.read(), 16)
    for index in range(start // block, (start + size) // block):
        try:
            with open(f"{MEMORY}/memory{index}/state") as f:
                if f.read().strip() != "online":
                    return False
        except FileNotFoundError:
            return False
    return True


def blocks_gone(start: int, size: int) -> bool:
    """None of the memory blocks of [start, start + size) exists any more: the DIMM was removed."""
    with open(f"{MEMORY}/block_size_bytes") as f:
        block = int(f.read(), 16)
    return not any(os.path.exists(f"{MEMORY}/memory{i}") for i in range(start // block, (start + size) // block))


def wait_for(condition: Callable[[], bool], what: str, deadline: float) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not reached before the deadline")
        time.sleep(0.05)


def daemon_idle(events_before: int, deadline: float) -> dict[str, Any]:
    """crashhpd's status once it has seen new events and has nothing pending: the burst is handled."""
    while True:
        status = control("status")
        if status["pending_events"] == 0 and status["next_update_in_s"] is None and not status["applying"] \
                and status["events_received"] > events_before:
            return status
        if time.monotonic() > deadline:
            raise RuntimeError(f"crashhpd did not finish the burst before the deadline: {status}")
        time.sleep(0.05)


def cpu_online(cpu: int) -> bool:
    """Online a hot-added CPU, as a distribution's udev rule would; True once it is."""
    path = f"/sys/devices/system/cpu/cpu{cpu}/online"
    if not os.path.exists(path):
        return False
    with open(path, "r+") as f:
        if f.read().strip() == "1":
            return True
        f.write("1")
    return False


def cpu_offline(cpu: int) -> bool:
    """Take a CPU offline, as an admin would; True once it is."""
    with open(f"/sys/devices/system/cpu/cpu{cpu}/online", "r+") as f:
        if f.read().strip() == "0":
            return True
        f.write("0")
    return False


def settle(what: list[str], daemon: bool, events_before: int) -> dict[str, Any]:
    """Wait until the hot-added memory is online (MEMORY) or removed (GONE), or the CPU online (CPU) or
    offline (CPU-OFFLINE), and crashhpd has finished the burst it caused."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    if what[0] in ("MEMORY", "GONE"):
        start, size = int(what[1], 0), int(what[2], 0)
        there = blocks_online if what[0] == "MEMORY" else blocks_gone
        wait_for(lambda: there(start, size), f"memory {start:#x}+{size:#x} {what[0].lower()}", deadline)
    elif what[0] == "CPU-OFFLINE":
        wait_for(lambda: cpu_offline(int(what[1])), f"CPU {what[1]} offline", deadline)
    else:
        wait_for(lambda: cpu_online(int(what[1])), f"CPU {what[1]} online", deadline)
    result: dict[str, Any] = {"online_at": uptime()}
    if daemon:
        result.update(status=daemon_idle(events_before, deadline), verify=control("verify"),
                      kernel_header=control("kernel-header")["segments"], model_header=control("header")["segments"],
                      kexec_loads=kexec_loads())
    return result


def kexec_calls() -> list[dict[str, Any]]:
    """Every kexec run through the shim: start and end (time.time() seconds), exit status, arguments."""
    try:
        with open(KEXEC_CALLS) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    calls = []
    for line in lines:
        start, end, status, *args = line.split(" ", 3)
        calls.append({"start": float(start), "end": float(end), "exit": int(status), "args": " ".join(args)})
    return calls


def is_load(call: dict[str, Any]) -> bool:
    """A `kexec -p` load: not a `--version` probe, not an unload, wherever its options stand."""
    options = call["args"].split()
    return "-p" in options and "-u" not in options


def kexec_loads() -> list[dict[str, Any]]:
    return [c for c in kexec_calls() if is_load(c)]


def first_kernel(channel: Channel, mode: str) -> None:
    file_load = mode == "auto" or (mode == "distro" and param("load") == "file")
    append = None if mode == "distro" else APPEND  # kdump-tools' default KDUMP_CMDLINE_APPEND, nothing more
    loaded = load_crash_kernel(file_load, append)
    if mode == "distro" and loaded["exit"] == 0:
        loaded["kimage"] = kimage_cmdline_buf()
    channel.send("LOADED", loaded)
    if loaded["exit"] != 0:
        return
    daemon = mode in ("kexec", "auto", "stale", "distro")  # bench starts its own when asked to
    ready: dict[str, Any] = {"uptime": uptime()}
    if daemon:
        complete = param("complete", "1") == "1"
        write_config({"auto": "auto", "stale": "kernel", "distro": "auto"}.get(mode, "kexec"), file_load, append,
                     complete, param("recover", "1") == "1")
        _, ready["seconds"] = start_crashhpd()
        # where crashhpd completes the command line, READY waits for its reload (the passive backend's recovery
        # follows the first update)
        ready["status"] = daemon_quiet(lambda s: not (complete and s["crash_kernel_cmdline_missing"]),
                                       time.monotonic() + READY_TIMEOUT_S) if mode == "distro" else control("status")
        ready["kexec_loads"] = kexec_loads()
        ready["acpi_devices"] = sorted(os.listdir("/sys/bus/acpi/devices"))
    channel.send("READY", ready)
    events_before = ready.get("status", {}).get("events_received", 0)
    while True:
        command = channel.receive()
        if command[0] == "SETTLE":
            settled = settle(command[1:], daemon, events_before)
            events_before = settled.get("status", {}).get("events_received", events_before)  # the next burst's
            channel.send("SETTLED", settled)
        elif command[0] == "BENCH":
            from hotplug_bench import serve  # the benchmark's guest half, only imported when asked for
            channel.send("BENCHED", serve(command[1:]))
        elif command[0] == "PATTERN":
            channel.send("PATTERN", dimm_pattern.write(int(command[1], 0), int(command[2], 0)))
        elif command[0] == "CRASH":
            channel.send("CRASHING", {"uptime": uptime(), "pattern_moved": dimm_pattern.moved()})
            os.sync()
            with open("/proc/sysrq-trigger", "w") as f:
                f.write("c")
        else:
            channel.send("ERROR", f"unknown command {command!r}")


# --- kdump kernel -------------------------------------------------------------------------------


def vmcore_headers() -> dict[str, Any]:
    """/proc/vmcore's program headers, read with crashhpd.validate.parse, and its CPU notes counted."""
    with open("/proc/vmcore", "rb") as f:
        phoff, _, _, _, phentsize, phnum = EHDR.unpack(f.read(EHDR.size))[5:11]
        f.seek(0)
        table = f.read(phoff + phnum * phentsize)
        header = parse(table)
        prstatus = 0
        for note in header.notes:  # the kdump kernel merged every CPU's note into one PT_NOTE
            f.seek(note.offset)
            prstatus += count_prstatus(f.read(note.filesz))
    return {"phnum": len(header.segments), "size": os.path.getsize("/proc/vmcore"), "prstatus": prstatus,
            "segments": [{"type": s.type, "offset": s.offset, "paddr": s.paddr, "filesz": s.filesz,
                          "memsz": s.memsz} for s in header.segments]}


def count_prstatus(notes: bytes) -> int:
    """NT_PRSTATUS notes named CORE: one per CPU whose registers the crashing kernel saved."""
    count, at = 0, 0
    while at + 12 <= len(notes):
        namesz, descsz, kind = (int.from_bytes(notes[at + i:at + i + 4], "little") for i in (0, 4, 8))
        name = notes[at + 12:at + 12 + namesz].rstrip(b"\0")
        count += kind == 1 and name == b"CORE"
        at += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return count


def read_page(segments: list[dict[str, Any]], address: int) -> dict[str, Any]:
    for s in segments:
        if s["type"] == "PT_LOAD" and s["paddr"] <= address and address + PAGE <= s["paddr"] + s["filesz"]:
            with open("/proc/vmcore", "rb") as f:
                f.seek(s["offset"] + address - s["paddr"])
                try:
                    data = f.read(PAGE)
                except OSError as err:  # EFAULT: the kdump kernel took the DIMM as its own RAM
                    return {"address": address, "covered": True, "bytes": 0, "error": errno.errorcode[err.errno]}
            return {"address": address, "covered": True, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return {"address": address, "covered": False, "bytes": 0}


def read_all() -> dict[str, Any]:
    """/proc/vmcore read from end to end, as makedumpfile or cp would: a PT_LOAD over memory that
    is gone shows up here as an error or a short read."""
    done, started = 0, time.monotonic()
    try:
        with open("/proc/vmcore", "rb", buffering=0) as f:
            while chunk := f.read(1 << 20):
                done += len(chunk)
    except OSError as err:
        return {"bytes": done, "error": f"{type(err).__name__}: {err}", "seconds": time.monotonic() - started}
    return {"bytes": done, "error": None, "seconds": time.monotonic() - started}


def kdump_kernel(channel: Channel) -> None:
    headers = vmcore_headers()
    channel.send("VMCORE", {**headers, "uptime": uptime()})
    while True:
        command = channel.receive()
        if command[0] == "PROBE":
            start, size = int(command[1], 0), int(command[2], 0)
            channel.send("PROBED", [read_page(headers["segments"], a) for a in (start, start + size - PAGE)])
        elif command[0] == "DMESG":
            channel.send("DMESG", subprocess.run(["dmesg"], capture_output=True, text=True).stdout[-20000:])
        elif command[0] == "FIND":
            channel.send("FOUND", dimm_pattern.read(headers["segments"], json.loads(command[1])))
        elif command[0] == "READALL":
            channel.send("READ", read_all())
        elif command[0] == "POWEROFF":
            return
        else:
            channel.send("ERROR", f"unknown command {command!r}")


def main() -> int:
    channel = Channel()
    try:
        if os.path.exists("/proc/vmcore"):
            kdump_kernel(channel)
        else:
            first_kernel(channel, param("mode", "kexec") or "kexec")
    except Exception as err:
        channel.send("ERROR", f"{type(err).__name__}: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
