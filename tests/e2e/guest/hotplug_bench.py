# SPDX-License-Identifier: GPL-2.0-only
"""The guest's half of tests/bench/guest_hotplug_emulated.py: one hot-add handled by crashhpd, one by the udev rule.

Driven by the host through the agent, one phase at a time:

  BENCH ARM crashhpd|rule          start the handler, the uevent recorder and the sampler
  (the host hot-adds a DIMM)
  BENCH MEASURE <name> <start> <size>   wait until the burst is handled, stop, report

`crashhpd` is `crashhpd run` with the kexec backend; `rule` is Debian's
50-kdump-tools.rules emulated: every memory online/offline or cpu
add/remove/online uevent starts `try-reload` at once (as udevd's workers
would), and the lock in it serialises the unload-and-load pairs. Both call
kexec through the same logging shim, and a separate process samples
/sys/kernel/kexec_crash_loaded every millisecond to see, from outside, how
long no crash kernel was loaded.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pyudev
from agent import (
    KEXEC_SHIM,
    UNLOAD,
    blocks_online,
    control,
    crash_load_argv,
    daemon_idle,
    is_load,
    kexec_calls,
    start_crashhpd,
    wait_for,
    write_config,
)

AGENT_DIR = os.path.dirname(os.path.abspath(__file__))
TRY_RELOAD = os.path.join(AGENT_DIR, "try-reload")
CRASH_LOADED = "/sys/kernel/kexec_crash_loaded"
SAMPLE_S = 0.001
IDLE_S = 2.0  # the rule's burst is over when no handler has run for this long
TIMEOUT_S = 600.0  # SETTLE_TIMEOUT_S is too short for 16 serialized reloads under TCG
RULE_EVENTS = {("memory", "online"), ("memory", "offline"), ("cpu", "add"), ("cpu", "remove"), ("cpu", "online")}


class Recorder(threading.Thread):
    """Every cpu and memory uevent with its time; in the rule's phase, a try-reload per matching one."""

    def __init__(self, load_argv: list[str] | None) -> None:
        super().__init__(daemon=True)
        self.load_argv = load_argv
        self.events: list[tuple[float, str, str]] = []
        self.handlers: list[subprocess.Popen] = []
        self.monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
        self.monitor.filter_by("memory")
        self.monitor.filter_by("cpu")
        self.monitor.start()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            device = self.monitor.poll(timeout=0.2)
            if device is None:
                continue
            self.events.append((time.time(), device.subsystem, device.action))
            if self.load_argv is not None and (device.subsystem, device.action) in RULE_EVENTS:
                self.handlers.append(subprocess.Popen([TRY_RELOAD, *self.load_argv]))

    def busy(self) -> bool:
        return any(h.poll() is None for h in self.handlers)


class Phase:
    def __init__(self, name: str) -> None:
        self.name = name
        self.daemon: subprocess.Popen | None = None
        self.events_before = 0
        load_argv = None
        if name == "crashhpd":
            write_config("kexec", file_load=False)
            self.daemon, _ = start_crashhpd()
            self.events_before = control("status")["events_received"]
        else:
            load_argv = crash_load_argv(file_load=False, binary=KEXEC_SHIM)
        self.calls_before = len(kexec_calls())  # after crashhpd's startup load, which is not part of the burst
        self.recorder = Recorder(load_argv)
        self.recorder.start()
        self.sampler = subprocess.Popen([sys.executable, os.path.abspath(__file__), "sample"],
                                        stdout=subprocess.PIPE, text=True)
        if self.sampler.stdout is None or self.sampler.stdout.readline().strip() != "sampling":
            raise RuntimeError("the kexec_crash_loaded sampler did not start")

    def settle(self, start: int, size: int) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        wait_for(lambda: blocks_online(start, size), "memory online", deadline)
        if self.daemon is not None:
            daemon_idle(self.events_before, deadline)
            return
        last_busy = time.monotonic()
        while time.monotonic() - last_busy < IDLE_S:  # the rule's burst is over when its handlers are
            if self.recorder.busy():
                last_busy = time.monotonic()
            if time.monotonic() > deadline:
                raise RuntimeError(f"try-reload handlers still running after {TIMEOUT_S:g} s")
            time.sleep(0.05)

    def finish(self) -> dict[str, Any]:
        self.recorder.stopping.set()
        self.recorder.join()
        self.sampler.send_signal(signal.SIGTERM)
        sampled = json.loads(self.sampler.communicate()[0])
        if self.daemon is not None:
            self.daemon.send_signal(signal.SIGTERM)
            self.daemon.wait()
        calls = kexec_calls()[self.calls_before:]
        loads = [c for c in calls if is_load(c)]
        unloads = [c for c in calls if c["args"] == UNLOAD]
        memory_events = [t for t, subsystem, _ in self.recorder.events if subsystem == "memory"]
        last_event = max(memory_events)
        good = [c["end"] for c in loads if c["exit"] == 0]
        # each unload leaves no crash kernel until the load after it returns
        windows = [next((load["end"] for load in loads if load["start"] >= u["end"]), u["end"]) - u["start"]
                   for u in unloads]
        return {
            "phase": self.name,
            "uevents": len(memory_events),
            "rule_runs": len(self.recorder.handlers),
            "loads": len(loads),
            "unloads": len(unloads),
            "failed": [c for c in calls if c["exit"] != 0],
            "burst_s": last_event - min(memory_events),
            "lag_s": max(good) - last_event if good else None,  # last uevent -> newest load returned
            "unload_window_s": sum(windows),
            "sampled_unloaded_s": sampled["unloaded_s"],
            "sampled_unloaded_max_s": sampled["longest_s"],
            "samples": sampled["samples"],
            "load_s": [round(c["end"] - c["start"], 4) for c in loads],
        }


_phase: Phase | None = None


def serve(args: list[str]) -> dict[str, Any]:
    global _phase
    if args[0] == "ARM":
        _phase = Phase(args[1])
        return {"armed": args[1]}
    if args[0] == "MEASURE" and _phase is not None and _phase.name == args[1]:
        _phase.settle(int(args[2], 0), int(args[3], 0))
        result, _phase = _phase.finish(), None
        return result
    raise ValueError(f"BENCH {' '.join(args)}: not armed for that")


def sample() -> None:
    """Until SIGTERM: how long, and how many times, /sys/kernel/kexec_crash_loaded read 0."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    samples, unloaded, longest, since = 0, 0.0, 0.0, None
    previous = time.monotonic()
    fd = os.open(CRASH_LOADED, os.O_RDONLY)
    print("sampling", flush=True)
    while not stop.is_set():
        now = time.monotonic()
        loaded = os.pread(fd, 4, 0).strip() == b"1"
        samples += 1
        if not loaded:
            unloaded += now - previous
            since = now if since is None else since
            longest = max(longest, now - since)
        else:
            since = None
        previous = now
        time.sleep(SAMPLE_S)
    print(json.dumps({"samples": samples, "unloaded_s": unloaded, "longest_s": longest}))


if __name__ == "__main__" and sys.argv[1:] == ["sample"]:
    sample()
