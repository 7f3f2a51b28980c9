# SPDX-License-Identifier: GPL-2.0-only
"""A hot-add storm: crashhpd against the distributions' reload-per-event, in one run.

Run as root: .venv/bin/python tests/bench/storm.py [--counts 128 1024 3840]

Both sides see the same real kernel uevents (written to
/sys/devices/system/memory/memoryN/uevent) while a fake root's /proc/iomem
grows by one 128 MiB block per 8 events (a block's add + online... as on a
real hot-add), and both must end with the header `crashhpd generate` builds.

- crashhpd: the real daemon process with its default debounce (200 ms quiet,
  2 s max delay) and the sandbox backend.
- baseline: what Debian's 50-kdump-tools.rules does, emulated generously:
  for every event, serialized, a full unload (the segment and its state are
  deleted) and a full load (a fresh snapshot, a new header, a new segment),
  in-process, so it pays no process start-up and no kexec, which the real
  rule does pay on every event.

Printed per event count: applies, time from the last event to a correct
header, CPU seconds per event, peak RSS, and the work ratio.
"""

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyudev

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from daemonproc import DaemonProcess, generation, inject, segment_header, wait_for, write_config
from faketree import VIRTIO_MEM, make_tree, replace_iomem, virtio_mem_plugged

from crashhpd.backends.sandbox import SandboxBackend
from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.layout import preset
from crashhpd.sysview.snapshot import read_boot_constants, read_snapshot

# the virtio-mem fixture with its second device widened to 240 GiB, room for every block a storm adds
FIXTURE = VIRTIO_MEM.replace("334000000-533ffffff : virtio1", "334000000-3fffffffff : virtio1")
EVENTS_PER_BLOCK = 8


def iomem(blocks: int) -> str:
    return virtio_mem_plugged(blocks, FIXTURE)


def set_blocks(root: Path, blocks: int) -> None:
    replace_iomem(root, iomem(blocks))


def storm(root: Path, count: int) -> float:
    """Inject `count` events, growing the tree as they go; returns when the last one was sent."""
    for i in range(count):
        if i % EVENTS_PER_BLOCK == 0:
            set_blocks(root, i // EVENTS_PER_BLOCK + 1)
        inject("online")
    return time.monotonic()


def expected(root: Path) -> bytes:
    return build_valid(read_snapshot(str(root)), preset("kernel")).data


def proc_cpu_seconds(pid: int) -> float:
    """CPU time of every thread of the process, in ns from the scheduler (not 10 ms ticks)."""
    return sum(int((task / "schedstat").read_text().split()[0]) for task in Path(f"/proc/{pid}/task").iterdir()) / 1e9


def proc_peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_crashhpd(work: Path, count: int) -> dict[str, float]:
    root = make_tree(work / "root", iomem(0))
    state_dir = work / "state"
    config = write_config(work / "crashhpd.toml", {
        "root": str(root), "monitor": {"source": "kernel"}, "backend": "sandbox",
        "sandbox": {"state_dir": str(state_dir)},
        "control": {"socket": str(work / "control.sock")},
    })
    daemon = DaemonProcess(work, config)
    try:
        daemon.wait_ready()
        gen0, cpu0 = generation(state_dir), proc_cpu_seconds(daemon.proc.pid)
        last = storm(root, count)
        want = expected(root)

        def correct() -> bool:
            return segment_header(state_dir) == want

        wait_for(correct, 60, "the daemon's final header")
        latency = time.monotonic() - last
        daemon.wait_idle(60)  # until the daemon says nothing more is due: any later apply would be counted
        assert correct()
        return {"applies": generation(state_dir) - gen0, "latency_s": latency,
                "cpu_s": proc_cpu_seconds(daemon.proc.pid) - cpu0, "rss_mib": proc_peak_rss_mib(daemon.proc.pid)}
    finally:
        daemon.stop()


def run_baseline(work: Path, count: int) -> dict[str, float]:
    root = make_tree(work / "root", iomem(0))
    state_dir = work / "state"
    boot = read_boot_constants(str(root))
    monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="kernel")
    monitor.filter_by("memory")
    monitor.set_receive_buffer_size(256 << 20)  # generous: the baseline must not lose events
    monitor.start()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    last = storm(root, count)
    cpu0 = proc_cpu_seconds(os.getpid())  # the events wait in the socket: only their handling is counted
    applies = 0
    while applies < count:
        if monitor.poll(timeout=5) is None:
            raise RuntimeError(f"baseline saw only {applies} of {count} events")
        shutil.rmtree(state_dir, ignore_errors=True)  # kexec -p -u: no crash kernel from here on
        backend = SandboxBackend(str(state_dir), 64)  # a full load: fresh segment, fresh snapshot
        snapshot = read_snapshot(str(root), boot)
        backend.apply(build_valid(snapshot, preset("kernel")).data, snapshot.kernel)
        applies += 1
    latency = time.monotonic() - last
    assert backend.loaded(snapshot.kernel) == expected(root)
    return {"applies": applies, "latency_s": latency, "cpu_s": proc_cpu_seconds(os.getpid()) - cpu0,
            "rss_mib": max(rss0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--counts", type=int, nargs="+", default=[128, 1024, 3840])
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("storm.py needs root: it injects real kernel uevents")
    print(f"{'events':>6} {'side':<9} {'applies':>7} {'last event -> correct':>22} {'CPU s/event':>12} "
          f"{'peak RSS':>9} {'work ratio':>10}")
    for count in args.counts:
        results = {}
        for side, fn in (("crashhpd", run_crashhpd), ("baseline", run_baseline)):
            with tempfile.TemporaryDirectory() as work:
                results[side] = fn(Path(work), count)
        for side, r in results.items():
            ratio = results["baseline"]["cpu_s"] / max(results["crashhpd"]["cpu_s"], 1e-9)
            print(f"{count:>6} {side:<9} {r['applies']:>7} {r['latency_s'] * 1000:>19.0f} ms "
                  f"{r['cpu_s'] / count * 1e6:>9.0f} us {r['rss_mib']:>6.1f} MiB "
                  f"{(f'{ratio:.0f}x' if side == 'crashhpd' else ''):>10}")


if __name__ == "__main__":
    main()
