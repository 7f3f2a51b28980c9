# SPDX-License-Identifier: GPL-2.0-only
"""Reloads and wall time for a 3840-event hot-add storm: crashhpd's kexec backend against one reload per event.

Run as root (it injects real kernel uevents):
    .venv/bin/python tests/bench/kexec_storm.py --events 3840 --rate 26.7 --reload-cost 0.5 --prefix 64 [--unpaced]

The storm: 3840 memory blocks of 128 MiB (a guest grown from 32 to 512 GiB)
arriving at 26.7 blocks/s, the pace of the public report in which scaling
took 144 s; each event is a real kernel uevent written to
/sys/devices/system/memory/memoryN/uevent, and before each one a fake root's
/proc/iomem gains that block. A reload is the stand-in kexec
(tests/support/kexec_standin.py) sleeping `--reload-cost` seconds, 0.5 s being the
low end of what one `kdumpctl reload` takes; this kernel has no kexec, so a
real reload cannot run here.

- crashhpd: the real daemon (`crashhpd run`, backend kexec, debounce 200 ms
  quiet and 2 s maximum delay, paced: each update the storm forces doubles the
  next maximum delay), reloading only when the header changed since the last
  load; with --unpaced also as before pacing ([debounce] pace = false).
- one reload per event: what the distributions' udev rules do, serialized:
  every event waits for the reloads before it. 3840 x 0.5 s is half an hour,
  so it is measured for real on a prefix of the storm (same pace, same
  growing tree, the same backend code and stand-in) and the full storm is
  extrapolated from the measured per-reload cost, and labelled so.

Printed: reloads, wall time (first event to the newest header loaded), and
the lag from the last event to the newest header loaded.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from daemonproc import DaemonProcess, can_inject, generated, inject, wait_for, write_config  # noqa: E402
from faketree import QEMU_GUEST, QEMU_HOT_ADD_BASE, hot_added, make_tree, replace_iomem  # noqa: E402
from repo_paths import STANDIN  # noqa: E402

from crashhpd.backends.kexec import KexecBackend  # noqa: E402
from crashhpd.backends.kexec_state import STATE_FILE  # noqa: E402
from crashhpd.config import KexecConfig  # noqa: E402
from crashhpd.elfcorehdr.build import build_valid  # noqa: E402
from crashhpd.elfcorehdr.layout import preset  # noqa: E402
from crashhpd.sysview.snapshot import read_boot_constants, read_snapshot  # noqa: E402

QUIET_MS, MAX_DELAY_MS = 200, 2000


@dataclass(frozen=True, slots=True)
class Result:
    reloads: int
    wall_s: float  # first event -> the newest header loaded
    lag_s: float  # last event -> the newest header loaded


def set_blocks(root: Path, blocks: int) -> None:
    """The tree's /proc/iomem with `blocks` hot-added blocks, replaced at once as the kernel's never tears."""
    replace_iomem(root, hot_added(QEMU_GUEST, blocks, QEMU_HOT_ADD_BASE))


def system(work: Path) -> Path:
    """A Debian guest with kdump-tools and a crash kernel loaded at boot."""
    return make_tree(work / "root", QEMU_GUEST, possible="0-3", extra={
        "sys/kernel/kexec_crash_loaded": "1\n",
        "proc/cmdline": "root=/dev/vda1 ro quiet crashkernel=256M\n",
        "etc/default/kdump-tools": "USE_KDUMP=1\n",
        "var/lib/kdump/vmlinuz": "kernel",
        "var/lib/kdump/initrd.img": "initrd",
    })


def standin(work: Path, root: Path, cost: float) -> Path:
    """The stand-in kexec, every load taking `cost` seconds; returns its control file."""
    control = work / "standin.json"
    control.write_text(json.dumps({"root": str(root), "log": str(work / "calls.jsonl"),
                                   "default": {"delay_s": cost}}))
    os.environ["KEXEC_STANDIN_CONTROL"] = str(control)
    return control


def loads(work: Path) -> int:
    path = work / "calls.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if "-p" in json.loads(line)["argv"])


def pace(started: float, index: int, rate: float) -> None:
    delay = started + index / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def run_crashhpd(work: Path, events: int, rate: float, cost: float, paced: bool = True) -> Result:
    root = system(work)
    state_dir = work / "state"
    control = standin(work, root, cost)
    config = write_config(work / "crashhpd.toml", {
        "root": str(root), "backend": "kexec", "monitor": {"source": "kernel"},
        "debounce": {"quiet_ms": QUIET_MS, "max_delay_ms": MAX_DELAY_MS, "pace": paced},
        "sandbox": {"state_dir": str(state_dir)}, "control": {"socket": str(work / "control.sock")},
        "kexec": {"binary": str(STANDIN)},
    })
    daemon = DaemonProcess(work, config, {"KEXEC_STANDIN_CONTROL": str(control)})
    try:
        daemon.wait_ready(60)
        at_start = loads(work)
        started = time.monotonic()
        for i in range(events):
            pace(started, i, rate)
            set_blocks(root, i + 1)
            inject("online")
        last = time.monotonic()
        want = hashlib.sha256(generated(root, "kexec-tools")).hexdigest()

        def newest_loaded() -> bool:
            return json.loads((state_dir / STATE_FILE).read_text())["sha256"] == want

        try:
            wait_for(newest_loaded, 120, "the newest header to be loaded")
        except AssertionError as err:
            sys.exit(f"kexec_storm.py: {err}; the daemon said:\n{daemon.stderr()[-3000:]}")
        done = time.monotonic()
        daemon.wait_idle(60)  # until the daemon says nothing more is due: any later reload would be counted
        return Result(loads(work) - at_start, done - started, done - last)
    finally:
        daemon.stop()


def run_per_event(work: Path, events: int, rate: float, cost: float) -> tuple[Result, float]:
    """One reload per event, serialized; returns the result and the mean measured reload time."""
    root = system(work)
    standin(work, root, cost)
    backend = KexecBackend(KexecConfig(binary=str(STANDIN)), str(root), str(work / "state"),
                           read_snapshot(str(root)).kernel)
    boot = read_boot_constants(str(root))
    durations = []
    started = time.monotonic()
    for i in range(events):
        pace(started, i, rate)
        set_blocks(root, i + 1)
        inject("online")
        snapshot = read_snapshot(str(root), boot)
        header = build_valid(snapshot, preset("kexec-tools")).data
        t = time.monotonic()
        backend.apply(header, snapshot.kernel)
        durations.append(time.monotonic() - t)
    done = time.monotonic()
    last_event = started + (events - 1) / rate
    return Result(loads(work), done - started, done - last_event), sum(durations) / len(durations)


def extrapolate(events: int, rate: float, reload_s: float) -> Result:
    """A serialized queue: event i arrives at i/rate and its reload starts when the one before it ended."""
    end = 0.0
    for i in range(events):
        end = max(i / rate, end) + reload_s
    return Result(events, end, end - (events - 1) / rate)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=3840)
    ap.add_argument("--rate", type=float, default=26.7, help="events per second (default: 3840 in 144 s)")
    ap.add_argument("--reload-cost", type=float, default=0.5, help="seconds one stand-in reload takes")
    ap.add_argument("--prefix", type=int, default=64, help="events of the per-event baseline measured for real")
    ap.add_argument("--unpaced", action="store_true", help="also crashhpd with [debounce] pace = false, the "
                    "daemon before pacing: one update per max_delay all through the storm")
    args = ap.parse_args()
    if can_inject() is not None:
        sys.exit(f"kexec_storm.py: {can_inject()}")
    print(f"storm: {args.events} events at {args.rate:g}/s ({args.events / args.rate:.0f} s), "
          f"stand-in reload {args.reload_cost:g} s, debounce {QUIET_MS} ms quiet / {MAX_DELAY_MS} ms max")
    with tempfile.TemporaryDirectory() as work:
        ours = run_crashhpd(Path(work), args.events, args.rate, args.reload_cost)
    unpaced = None
    if args.unpaced:
        with tempfile.TemporaryDirectory() as work:
            unpaced = run_crashhpd(Path(work), args.events, args.rate, args.reload_cost, paced=False)
    with tempfile.TemporaryDirectory() as work:
        prefix, reload_s = run_per_event(Path(work), args.prefix, args.rate, args.reload_cost)
    full = extrapolate(args.events, args.rate, reload_s)
    rows = [
        ("crashhpd (coalesced, paced), measured", args.events, ours),
        *([("crashhpd, [debounce] pace = false (before pacing), measured", args.events, unpaced)] if unpaced else []),
        (f"one reload per event, measured on the first {args.prefix}", args.prefix, prefix),
        (f"one reload per event, EXTRAPOLATED from the {args.prefix}-event prefix", args.events, full),
    ]
    print(f"{'':<62} {'events':>6} {'reloads':>8} {'wall time':>10} {'last event -> newest loaded':>28}")
    for label, events, r in rows:
        print(f"{label:<62} {events:>6} {r.reloads:>8} {r.wall_s:>9.1f}s {r.lag_s:>27.1f}s")
    print(f"measured cost of one reload (KexecBackend.apply running the stand-in kexec): {reload_s:.3f} s")
    print(f"reloads saved: {args.events - ours.reloads} of {args.events} "
          f"({args.events / max(ours.reloads, 1):.0f}x fewer); wall time {full.wall_s / ours.wall_s:.1f}x shorter")


if __name__ == "__main__":
    main()
