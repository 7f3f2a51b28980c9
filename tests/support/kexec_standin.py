#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0-only
"""A stand-in for kexec-tools' `kexec`, for tests on kernels that have no kexec_load (like this test VM's).

It behaves towards crashhpd the way kexec and the kernel do, and nothing
more: it answers `--version`, and for a load (`-p`) it follows the next
scripted outcome (exit status, delay, stderr) and flips the fake tree's
sys/kernel/kexec_crash_loaded as the kernel would: 1 after a load, 0 after
`-u` or after a failed load that got as far as the syscall (the kernel frees
the old crash image before loading the new one), unchanged on EBUSY. After a
load with `--hotplug` or `-s` on a tree whose kernel publishes
crash_elfcorehdr_size, it sets both crash_hotplug attributes to 1.

Everything is driven by the JSON file named by $KEXEC_STANDIN_CONTROL:
  {"root": "/fake/tree", "log": "/tmp/calls.jsonl", "version": "kexec-tools 2.0.25",
   "outcomes": [{"exit": 16, "stderr": "...", "delay_s": 0.5, "kernel": "freed", "child": true,
                 "chatter_bytes": 1048576}, ...],
   "default": {...}}
Outcome n applies to the n-th load (counted from the log); "default" after the
script runs out (absent: success). "kernel" is "loaded", "freed" or "kept";
by default "loaded" on exit 0 and "kept" otherwise. "child": start a `sleep`
in the same process group first, to prove a timeout kills the whole group
(it inherits stdout and stderr, and outlives a load that does not hang).
"chatter_bytes": write that many bytes of noise to stdout and to stderr
before the outcome's own stderr, as a very verbose kexec would.
Every call is appended to the log with its argv, pid, time, the outcome's
index and exit status, and the sha256 of the tree's proc/iomem at that moment
(what real kexec would build its header from). A load holds a lock on LOG.lock
until it exits and is logged with "overlapped": true when another load held it
as it started: two loads at once, which crashhpd must never run.
"""

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time

EBUSY = "kexec_load failed: Device or resource busy\n"


def _write(root: str, rel: str, text: str) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _iomem_sha(root: str) -> str | None:
    try:
        with open(os.path.join(root, "proc/iomem"), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except FileNotFoundError:
        return None


def _loads_so_far(log: str) -> int:
    try:
        with open(log) as f:
            calls = [json.loads(line)["argv"] for line in f]
    except FileNotFoundError:
        return 0
    return sum(1 for argv in calls if "-p" in argv and "-u" not in argv)


def _record(control: dict, argv: list[str], extra: dict) -> None:
    entry = {"argv": argv, "pid": os.getpid(), "time": time.time(), "iomem_sha256": _iomem_sha(control["root"]),
             **extra}
    with open(control["log"], "a") as f:
        f.write(json.dumps(entry) + "\n")


def _kernel_effect(control: dict, argv: list[str], state: str) -> None:
    root = control["root"]
    if state == "loaded":
        _write(root, "sys/kernel/kexec_crash_loaded", "1\n")
        hotplug_capable = os.path.exists(os.path.join(root, "sys/kernel/crash_elfcorehdr_size"))
        if hotplug_capable and ("--hotplug" in argv or "-s" in argv):
            _write(root, "sys/devices/system/cpu/crash_hotplug", "1\n")
            _write(root, "sys/devices/system/memory/crash_hotplug", "1\n")
    elif state == "freed":
        _write(root, "sys/kernel/kexec_crash_loaded", "0\n")
    elif state == "garbled":  # what no kernel writes: for the reader of the state after a load
        _write(root, "sys/kernel/kexec_crash_loaded", "loaded?\n")


def _overlapped(log: str) -> bool:
    """Lock LOG.lock for as long as this load runs (a child started later does not inherit it); True when
    another load holds it now."""
    fd = os.open(log + ".lock", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False  # fd stays open, the lock held, until this process exits


def _load(control: dict, argv: list[str]) -> int:
    index = _loads_so_far(control["log"])
    outcomes = control.get("outcomes", [])
    outcome = outcomes[index] if index < len(outcomes) else control.get("default", {})
    code = outcome.get("exit", 0)
    _record(control, argv, {"outcome": index, "exit": code, "overlapped": _overlapped(control["log"])})
    if outcome.get("child"):
        child = subprocess.Popen(["sleep", "60"])
        with open(control["log"] + ".pids", "w") as f:
            json.dump([os.getpid(), child.pid], f)
    chatter = outcome.get("chatter_bytes", 0)
    for stream in (sys.stdout, sys.stderr):
        for _ in range(chatter // 64):
            stream.write("kexec stand-in: nothing to see here, just a lot of words ......\n")
        stream.flush()
    time.sleep(outcome.get("delay_s", 0))
    if "-u" in argv:
        _kernel_effect(control, argv, "freed")
        return 0
    _kernel_effect(control, argv, outcome.get("kernel", "loaded" if code == 0 else "kept"))
    sys.stderr.write(outcome.get("stderr", ""))
    return code


def main(argv: list[str]) -> int:
    with open(os.environ["KEXEC_STANDIN_CONTROL"]) as f:
        control = json.load(f)
    if argv[:1] in (["--version"], ["-v"]):
        _record(control, argv, {})
        time.sleep(control.get("version_delay_s", 0))
        print(control.get("version", "kexec-tools 2.0.25"))
        return 0
    if "-p" not in argv:
        sys.stderr.write("kexec stand-in: only -p (and --version) are modelled\n")
        return 2
    return _load(control, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
