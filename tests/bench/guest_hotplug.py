# SPDX-License-Identifier: GPL-2.0-only
"""crashhpd against kdump-tools' real udev rule under real udevd: a hot-add of 8 GiB each, in the systemd guest.

Run (it builds what the e2e suite builds: the cached Debian image, this run's .deb):
    .venv/bin/python tests/bench/guest_hotplug.py [--gib 8] [--guest bookworm|trixie]

One boot of tests/e2e/system.py's guest: Debian 12 on Linux 6.1 (no
CONFIG_CRASH_HOTPLUG, so crashhpd's backend is kexec), or with --guest trixie
Debian 13 on its own Linux 6.12, where kdump-tools' plain `kexec -p` loads with
kexec_file_load and the kernel rewrites its header at each event itself (crashhpd's
backend is kernel: it loads nothing unless the kernel's header goes stale).
systemd, udevd, kdump-tools and crashhpd are as the .deb installs them.
First phase: crashhpd runs (backend auto) and the host hot-adds one
DIMM; kdump-tools' rule is kept out of it by the override crashhpd ships, put
in place by crashhpd itself where it takes over /run/udev/rules.d and by the
README's manual step otherwise (the output says which). Second phase:
`systemctl stop crashhpd`, the override gone, so udevd runs
50-kdump-tools.rules (`kdump-config try-reload`, unload and load, per memory
online event), and the host hot-adds a second DIMM of the same size. As
Debian 12 and 13 ship them, every one of those runs fails: systemd-udevd.service's
SystemCallFilter has no kexec_load, so `kexec -p -u` gets EPERM (on Debian 12's
6.1 the header stays stale; Debian 13's kernel updates it). Third phase, the baseline the figures compare with: the
same with kexec_load and kexec_file_load added to udevd's filter (a drop-in),
what an admin would do to make the rule work, and a third DIMM.

Both phases are counted in the guest by the same means: kexec and
kdump-config are wrapped by scripts that log each run to the journal (start,
end, exit status, the unit it ran in); a recorder notes every uevent the
kernel sends, and a sampler reads /sys/kernel/kexec_crash_loaded every
millisecond. A phase ends when its DIMM is online, udevd's queue is empty
(`udevadm settle`) and crashhpd, where it runs, has nothing pending.

Printed per phase: memory uevents, runs of the rule, kexec loads and unloads,
the lag from the last uevent until the newest load returned (the header is
correct from then on) and how long no crash kernel was loaded, from the
unload/load times and as sampled. Under TCG every kexec is slow; the ratios
carry over.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e import initramfs, parts, system
from e2e.system import KDUMP_CONFIG_TAG, KEXEC_TAG, SystemGuest, kexec_loads, unloads
from e2e.vm import GIB, HOTPLUG_BASE

BENCH = "/usr/lib/crashhpd-e2e/bench"
OVERRIDE = "/etc/udev/rules.d/50-kdump-tools.rules"
TAKEOVER = "/run/udev/rules.d/50-kdump-tools.rules"
SHIPPED = "/usr/share/crashhpd/udev/50-kdump-tools.rules"


@dataclass(frozen=True, slots=True)
class Setup:
    """Which systemd guest: its release, the kernel (tests/e2e/parts.py's name) and its series in the image."""

    release: system.Release
    kernel: str
    series: str
    debian: int


GUESTS = {"bookworm": Setup(system.BOOKWORM, "6.1", "6.1", 12),
          "trixie": Setup(system.TRIXIE, "trixie-6.12", "6.12", 13)}


def phase(g: SystemGuest, name: str, address: int, size: int, dimm: str) -> dict[str, Any]:
    """Watchers on, the hot-add, everything it set off done, watchers off; the figures."""
    before = g.status()["events_received"] if name == "crashhpd" else None
    watchers = {}
    for kind in ("record", "sample"):
        out = f"/run/bench-{name}-{kind}.json"
        g.sh(f"rm -f {out}; {BENCH} {kind} {out} > /run/bench-{kind}.ready 2>&1 & echo $! > /run/bench-{kind}.pid")
        g.sh(f"until grep -q ready /run/bench-{kind}.ready; do kill -0 $(cat /run/bench-{kind}.pid) || exit 1; "
             "sleep 0.1; done", timeout=60)
        watchers[kind] = out
    cursor = g.mark()
    started = time.monotonic()
    g.guest.hot_add_memory(size, address, dimm)
    g.wait("online", hex(address), hex(size))
    g.sh("udevadm settle --timeout=1800", timeout=1900)
    if before is not None:
        g.wait("idle", before)
    handled_s = time.monotonic() - started
    for kind in watchers:  # each writes its figures as it exits: read them once it has
        g.sh(f"pid=$(cat /run/bench-{kind}.pid); kill -TERM $pid; while kill -0 $pid 2>/dev/null; do sleep 0.1; done",
             timeout=60)
    found = g.run(f"cat {watchers['record']} && echo && cat {watchers['sample']}")
    if found["exit"] != 0:
        raise g.guest.failure(f"the {name} phase's watchers wrote nothing: {found}")
    events_text, sampled_text = found["stdout"].split("\n", 1)
    events, sampled = json.loads(events_text), json.loads(sampled_text)
    calls = g.calls(KEXEC_TAG, cursor)
    loads, gone = kexec_loads(calls), unloads(calls)
    memory = [t for t, subsystem, _, _ in events if subsystem == "memory"]
    good = [c["end"] for c in loads if c["exit"] == 0]
    windows = [next((load["end"] for load in loads if load["start"] >= u["end"]), u["end"]) - u["start"]
               for u in gone]
    return {
        "phase": name, "uevents": len(memory), "handled_s": handled_s,
        "rule_runs": len([r for r in g.calls(KDUMP_CONFIG_TAG, cursor) if r["args"] == "try-reload"]),
        "loads": len(loads), "unloads": len(gone), "failed": [c for c in calls if c["exit"] != 0],
        "units": sorted({c["unit"] for c in loads}),
        "burst_s": max(memory) - min(memory) if memory else None,
        "lag_s": max(good) - max(memory) if good and memory else None,
        "unload_window_s": sum(windows), "sampled_unloaded_s": sampled["unloaded_s"],
        "sampled_unloaded_max_s": sampled["longest_s"], "samples": sampled["samples"],
        "load_s": sorted(c["end"] - c["start"] for c in loads),
    }


def row(label: str, a: object, b: object, ratio: str = "") -> str:
    return f"{label:<46} {a!s:>12} {b!s:>12} {ratio:>10}"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def ratio(baseline: float | None, ours: float | None) -> str:
    if not baseline or ours is None:
        return ""
    return f"{baseline / ours:.1f}x" if ours else "inf"


def median(values: list[float]) -> float | None:
    return sorted(values)[len(values) // 2] if values else None


def table(ours: dict[str, Any], rule: dict[str, Any]) -> None:
    """The figures of both phases side by side (also guest_hotplug_emulated.py's)."""
    print(row("", "crashhpd", "udev rule", "rule/ours"))
    print(row("memory uevents", ours["uevents"], rule["uevents"]))
    print(row("runs of the rule (kdump-config try-reload)", ours["rule_runs"], rule["rule_runs"]))
    print(row("kexec -p loads", ours["loads"], rule["loads"], ratio(rule["loads"], ours["loads"])))
    print(row("kexec -p -u unloads", ours["unloads"], rule["unloads"]))
    print(row("burst: first to last uevent", ms(ours["burst_s"]), ms(rule["burst_s"])))
    print(row("last uevent -> newest load returned", ms(ours["lag_s"]), ms(rule["lag_s"]),
              ratio(rule["lag_s"], ours["lag_s"])))
    print(row("no crash kernel: unload -> load returned", ms(ours["unload_window_s"]), ms(rule["unload_window_s"])))
    print(row("no crash kernel: sampled every 1 ms", ms(ours["sampled_unloaded_s"]),
              ms(rule["sampled_unloaded_s"]), ratio(rule["sampled_unloaded_s"], ours["sampled_unloaded_s"])))
    print(row("  longest single stretch, sampled", ms(ours["sampled_unloaded_max_s"]),
              ms(rule["sampled_unloaded_max_s"])))
    print(row("median kexec -p load", ms(median(ours["load_s"])), ms(median(rule["load_s"]))))


def done(args: argparse.Namespace, work: Path) -> int:
    """The guest's logs kept (--keep) and named, or removed."""
    if args.keep:
        print(f"\nguest logs: {work / 'guest'}")
    else:
        shutil.rmtree(work)
    return 0


def arguments(doc: str, default_gib: int, guests: tuple[str, ...] = ()) -> tuple[argparse.Namespace, Path, float]:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--gib", type=int, default=default_gib, help=f"size of each hot-added DIMM (default {default_gib})")
    ap.add_argument("--keep", action="store_true", help="keep the guest's logs and print where")
    if guests:
        ap.add_argument("--guest", choices=guests, default=guests[0], help=f"the systemd guest (default {guests[0]})")
    return ap.parse_args(), Path(tempfile.mkdtemp(prefix="crashhpd-bench-")), time.monotonic()


UDEVD_KEXEC = "/run/systemd/system/systemd-udevd.service.d/kexec.conf"
ALLOW_KEXEC = "kexec_load kexec_file_load"  # a second SystemCallFilter= line adds to the allow list


def main() -> int:
    args, work, started = arguments(__doc__ or "", 8, tuple(GUESTS))  # 8 GiB: 64 memory blocks
    guest = GUESTS[args.guest]
    size = args.gib * GIB
    qemu, kernel = parts.qemu(), parts.kernel(guest.kernel)
    archives = initramfs.build(parts.guest(), work / "initramfs")
    image = system.prepare(qemu, {guest.series: kernel}, archives.kdump, work / "system", release=guest.release)
    memory = f"2G,slots=4,maxmem={2 + 3 * args.gib}G"  # the memmap of 3 DIMMs comes out of boot RAM
    with SystemGuest(qemu, image, guest.series, work / "guest", deadline_s=3600, memory=memory) as g:
        g.booted()
        backend = g.status()["backend"]
        takeover = g.run(f"test -e {TAKEOVER}")["exit"] == 0
        if not takeover:  # the README's manual step: no rule while crashhpd runs
            g.sh(f"install -m 0644 {SHIPPED} {OVERRIDE} && udevadm control --reload")
        ours = phase(g, "crashhpd", HOTPLUG_BASE, size, "dimm0")
        g.sh("systemctl stop crashhpd", timeout=120)
        g.sh(f"rm -f {OVERRIDE} && udevadm control --reload")
        shipped = phase(g, "rule", HOTPLUG_BASE + size, size, "dimm1")
        # what an admin would do to make the rule work: allow kexec in udevd's system call filter
        g.sh(f"mkdir -p {Path(UDEVD_KEXEC).parent} && printf '[Service]\\nSystemCallFilter={ALLOW_KEXEC}\\n' "
             f"> {UDEVD_KEXEC} && systemctl daemon-reload && systemctl restart systemd-udevd", timeout=120)
        rule = phase(g, "rule-kexec", HOTPLUG_BASE + 2 * size, size, "dimm2")
        accel = g.guest.accel
    for result in (ours, shipped, rule):
        if result["failed"]:
            print(f"{result['phase']}: {len(result['failed'])} failed kexec runs, e.g. {result['failed'][0]}",
                  file=sys.stderr)
    print(f"Debian {guest.debian}, Linux {kernel.version} under QEMU ({accel}), systemd guest; crashhpd's backend "
          f"{backend}; {args.gib} GiB hot-added per phase ({size // (128 << 20)} memory blocks); "
          f"{time.monotonic() - started:.0f} s in all")
    print(f"rule kept out while crashhpd ran by: {'crashhpd (/run/udev/rules.d)' if takeover else OVERRIDE}")
    print(f"the rule as Debian {guest.debian} ships it: {shipped['rule_runs']} runs, {shipped['unloads']} kexec -p -u "
          f"({len(shipped['failed'])} failed: udevd's SystemCallFilter has no kexec_load), {shipped['loads']} loads, "
          f"{shipped['sampled_unloaded_s'] * 1000:.0f} ms without a crash kernel (sampled); below, the rule with "
          f"kexec_load allowed in udevd ({UDEVD_KEXEC})\n")
    table(ours, rule)
    print(row("hot-add to all handled (host's clock)", ms(ours["handled_s"]), ms(rule["handled_s"]),
              ratio(rule["handled_s"], ours["handled_s"])))
    return done(args, work)


if __name__ == "__main__":
    sys.exit(main())
