# SPDX-License-Identifier: GPL-2.0-only
"""What one update costs the loop at 64 CPUs and 8192 RAM ranges: snapshot, build, compare, the kernel's header.

Run: .venv/bin/python tests/bench/update_cost.py [--updates 50] [--baseline SRC] [--stages]

Wall time and the process's CPU time are both printed: on a machine whose cores
other work shares, the CPU time is what an update costs, the wall time what it
waited too. A fake root (tests/support/faketree.py) with 64 CPUs and 8192 RAM ranges, whose
fake kernel (tests/support/fakekcore.py) holds the header a fresh snapshot gives,
read back through kallsyms, BTF and /proc/kcore as on a real host. The daemon is
built as `crashhpd run` builds it (the passive kernel backend, so no kexec runs)
and each update is run as the loop runs it, in this process; `verify` likewise:
first on a system that does not change, then with /proc/iomem one 128 MiB block
larger at each update, as a hot-add brings them: a text never seen before each
time (the kernel's header then differs: the passive backend records, the
kernel's header is reported stale).
--baseline SRC measures the same tree with the crashhpd package found in SRC
(a checkout of an earlier commit: `git worktree add /tmp/before <commit>`), in a
child process, and prints the ratio. --stages runs this tree once more with the
functions of STAGES timed (their wrappers cost a little), for where the time goes.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "support"), str(HERE.parent.parent)]

MEASURE = """
import importlib, json, os, selectors, sys, time
from crashhpd import config as config_mod
from crashhpd.service.daemon import Daemon
from crashhpd.service.metrics import Metrics
from crashhpd.service.notify import Notifier
from crashhpd.wiring import build_parts

path, count, iomem, grown = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
stage_times, timing = {}, [False]


def timed_stage(name):  # "module:function" or "module:Class.method", timed wherever it is bound
    module_name, _, qualname = name.partition(":")
    *path, attr = qualname.split(".")
    owner = importlib.import_module(module_name)
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, attr)
    stage_times[name] = 0.0

    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            if timing[0]:
                stage_times[name] += time.perf_counter() - started
    holders = [owner] if path else [m for m in list(sys.modules.values()) if getattr(m, "__name__", "").startswith(
        "crashhpd")]  # a function: its own module and every module that imported it by name
    for holder in holders:
        if getattr(holder, attr, None) is original:
            setattr(holder, attr, wrapper)


for stage in sys.argv[5:]:
    timed_stage(stage)
original = open(iomem).read()
cfg = config_mod.load(path)
daemon = Daemon(build_parts(cfg, None), build_parts, selectors.DefaultSelector(), Metrics(), Notifier(), path,
                None, config_mod.load)
daemon.update("startup")
times = {what + clock: [] for what in ("update", "verify", "changed") for clock in ("", " cpu")}


def timed(what, call):
    started, cpu = time.perf_counter(), time.process_time()
    result = call()
    times[what].append(time.perf_counter() - started)
    times[what + " cpu"].append(time.process_time() - cpu)
    return result


for _ in range(count):
    timed("update", lambda: daemon.update("events"))
    verdict = timed("verify", daemon.verify)
status = daemon.status()
assert status.in_sync and verdict.in_sync and status.kernel_header_in_sync, status
for i in range(count):  # each update finds one 128 MiB block more than the one before
    with open(iomem + ".new", "w") as f:
        f.write(open(os.path.join(grown, str(i))).read())
    os.replace(iomem + ".new", iomem)
    timing[0] = True
    timed("changed", lambda: daemon.update("events"))
    timing[0] = False
    assert daemon.status().in_sync, daemon.status().last_error
with open(iomem, "w") as f:  # as it was, for the next run on the same tree
    f.write(original)
times["ranges"], times["cpus"] = status.ram_ranges, status.cpus
times["stages"] = {name: spent / count for name, spent in stage_times.items()}
print(json.dumps(times))
"""


def tree(work: Path, count: int) -> Path:
    """The root, its fake kernel holding the right header, and a configuration for the kernel backend."""
    from fakekcore import CrashKernel
    from faketree import BLOCK, QEMU_GUEST, QEMU_HOT_ADD_BASE, hot_added, make_tree

    from crashhpd.abi.elf import align_up
    from crashhpd.elfcorehdr.build import build_valid
    from crashhpd.elfcorehdr.layout import preset
    from crashhpd.sysview.snapshot import read_snapshot

    root = make_tree(work / "root", hot_added(QEMU_GUEST, 8190, QEMU_HOT_ADD_BASE, stride=2 * BLOCK),
                     possible="0-63", extra={"sys/devices/system/cpu/crash_hotplug": "1\n",
                                             "sys/devices/system/memory/crash_hotplug": "1\n",
                                             "sys/kernel/kexec_crash_loaded": "1\n"})
    memsz = align_up(64 + 56 * 8400, 4096)
    crash = CrashKernel(root).install(b"\x7fELF", memsz)
    crash.fill(build_valid(read_snapshot(str(root)), preset("kernel", "possible")).data, memsz)
    (work / "grown").mkdir()
    for i in range(count):
        (work / "grown" / str(i)).write_text(hot_added(QEMU_GUEST, 8191 + i, QEMU_HOT_ADD_BASE, stride=2 * BLOCK))
    config = work / "crashhpd.toml"
    config.write_text(f'root = "{root}"\nbackend = "kernel"\nstate_dir = "{work / "state"}"\n'
                      f'[kernel]\nrecover = false\n[control]\nsocket = "{work / "control.sock"}"\n')
    return config


# where an update with one block more spends its time (--stages): each function's time, nested ones inside the others
STAGES = ("crashhpd.sysview.snapshot:read_snapshot", "crashhpd.sysview.snapshot:_read_iomem",
          "crashhpd.sysview.iomem:view_of", "crashhpd.sysview.loaded_header:LoadedHeaderReader.read",
          "crashhpd.sysview.snapshot:_read_crash_notes", "crashhpd.elfcorehdr.build:build_valid",
          "crashhpd.elfcorehdr.coverage:view", "crashhpd.service.updater:Updater._succeeded")


def measure(src: Path, config: Path, count: int, stages: tuple[str, ...] = ()) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    work = config.parent
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(config), str(count), str(work / "root/proc/iomem"),
                           str(work / "grown"), *stages], env=env, capture_output=True, text=True,
                          cwd=work)  # not this tree's directory: `python -c` puts the cwd first on sys.path
    if proc.returncode != 0:
        sys.exit(f"the measurement with {src} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def row(name: str, times: list[float], cpu: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    return (f"| {name} | {statistics.median(ms):.2f} ms | {ms[int(len(ms) * 0.9)]:.2f} ms | {ms[-1]:.2f} ms "
            f"| {statistics.median(cpu) * 1000:.2f} ms | {len(ms)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--updates", type=int, default=50)
    ap.add_argument("--baseline", type=Path, help="a source tree whose crashhpd package is measured too")
    ap.add_argument("--stages", action="store_true",
                    help="a separate run of this tree that times each stage of an update with one block more")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = tree(Path(tmp), args.updates)
        runs = {"this tree": measure(HERE.parent.parent, config, args.updates)}
        stages = measure(HERE.parent.parent, config, args.updates, STAGES)["stages"] if args.stages else {}
        if args.baseline:
            runs[f"baseline {args.baseline}"] = measure(args.baseline, config, args.updates)
    first = next(iter(runs.values()))
    print(f"{first['cpus']} CPUs, {first['ranges']} RAM ranges, the kernel backend, the kernel's header read back\n")
    print("| run: what | median | p90 | max | median CPU time | n |\n| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, times in runs.items():
        for what, label in (("update", "update, nothing changed"), ("verify", "verify, nothing changed"),
                            ("changed", "update, one block more each time")):
            print(row(f"{name}: {label}", times[what], times[what + " cpu"]))
    if args.baseline:
        ours, theirs = runs["this tree"], runs[f"baseline {args.baseline}"]
        for what in ("update", "verify", "changed"):
            print(f"{what}: baseline / this tree = "
                  f"{statistics.median(theirs[what]) / statistics.median(ours[what]):.1f}x (medians)")
    if stages:
        print("\n| this tree, one block more: stage | mean per update |\n| --- | ---: |")
        for name, spent in stages.items():
            print(f"| {name} | {spent * 1000:.2f} ms |")


if __name__ == "__main__":
    main()
