# SPDX-License-Identifier: GPL-2.0-only
"""What crashhpctl prints for each reply: pure functions from a result, as the contract shapes it, to text.

Client side: this reads the reply's JSON and never the daemon's code, so
crashhpctl needs nothing beyond the standard library (a header's program
headers come in the reply; its bytes are not parsed here).
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .contract import (
    EXIT_FAILED,
    EXIT_OK,
    KERNEL_IMAGE_VADDR,
    HeaderResult,
    MetricsResult,
    ReconcileResult,
    Segment,
    StatusResult,
    VerifyResult,
)


def age(seconds: float) -> str:
    return f"{duration(seconds)} ago"


def duration(seconds: float) -> str:
    """The way an admin says it: '3 s', '5 min', '2 h', '4 d'."""
    seconds = max(seconds, 0.0)
    for unit, size, limit in (("s", 1, 120), ("min", 60, 120), ("h", 3600, 48)):
        if seconds < size * limit:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds // 86400)} d"


def gib(nbytes: int) -> str:
    return f"{nbytes / (1 << 30):.2f} GiB"


def size(nbytes: int) -> str:
    """As the daemon's own lines say sizes (sysview.ranges.size_text): whole units where exact, else one decimal."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            return f"{nbytes / (1 << shift):.{0 if nbytes % (1 << shift) == 0 else 1}f} {unit}"
    return f"{nbytes} B"


def aligned(rows: Sequence[tuple[str, str]]) -> str:
    """Label and value columns; a value's further lines line up under its first."""
    width = max(len(label) for label, _ in rows) + 2
    lines = []
    for label, value in rows:
        first, *rest = value.split("\n")
        lines.append(f"{label:<{width}}{first}".rstrip())
        lines += [" " * width + line for line in rest]
    return "\n".join(lines)


def show_status(s: StatusResult, now: float) -> tuple[str, int]:
    errors = ", ".join(f"{kind} {count}" for kind, count in sorted(s["errors"].items())) or "none"
    pending = "none"
    if s["next_update_in_s"] is not None:
        pending = f"{s['pending_events']} events, update in {s['next_update_in_s']:.1f} s"
    cpu, memory = s["crash_hotplug_cpu"], s["crash_hotplug_memory"]
    hotplug = ("not published (kernel before 6.6, or no CONFIG_CRASH_HOTPLUG)" if cpu is None and memory is None
               else f"cpu {_unknown(cpu)}, memory {_unknown(memory)}")
    protected = s.get("protected")
    rows = [
        ("protected", _verdict(s)),
        ("checks", _checks(s)),
        ("crash kernel", _crash_kernel(s.get("crash_kernel_loaded"), s.get("kexec_sysfs"))),
        ("crash cmdline", _crash_cmdline(s)),
        ("kdump initrd", _kdump_initrd(s)),
        ("crash memory", _crash_memory(s)),
        ("kernel header", _kernel_header(s)),
        ("crashhpd", f"{s['version']}, pid {s['pid']}, up {duration(s['uptime_s'])}"),
        ("backend", f"{s['backend']}{' (chosen by auto)' if s.get('backend_setting') == 'auto' else ''} "
                    f"({'healthy' if s['backend_ok'] else 'UNHEALTHY'}: {s['backend_detail']})"),
        ("layout", s["layout"]),
        ("generation", f"{s['generation']}, {'in sync' if s['in_sync'] else 'NOT in sync: the last update failed'}"),
        ("last apply", _last_apply(s, now)),
        ("CPUs", _cpus(s)),
        ("RAM", f"{s['ram_ranges']} ranges, {gib(s['ram_bytes'])}"),
        ("segment", _segment(s)),
        ("events", f"{s['events_received']} received, {s['events_coalesced']} coalesced, "
                   f"{s['rescans']} rescans after lost events"),
        ("updates", f"{s['updates']} run: {s['applies']} applied, {s['skipped_noop']} no-op"),
        ("pending", pending),
        ("apply", f"running for {s.get('apply_running_s') or 0:.1f} s; the next update waits for it"
         if s.get("applying") else "none running"),
        ("crash_hotplug", hotplug),
        ("udev rule", f"{'inert' if s.get('udev_rule_inert') else 'ACTIVE'}: {s.get('udev_rule_detail', '')}"),
        ("errors", errors),
        ("last error", "none" if s["last_error"] is None
         else f"{age(now - s['last_error_at']) if s['last_error_at'] else 'at some time'}: {s['last_error']}"),
    ]
    return aligned(rows), EXIT_FAILED if protected is False else EXIT_OK


def _verdict(s: StatusResult) -> str:
    """The one line that matters first: would a dump taken now save everything, and if not, every reason."""
    if "protected" not in s:
        return "unknown (the daemon is older than this crashhpctl)"
    if s["protected"]:
        return "yes: a dump taken now would save every byte of RAM and every CPU"
    reasons = s.get("unprotected_reasons") or ["no reason given"]
    return "\n".join([f"NO: {reasons[0]}", *reasons[1:]])


def _checks(s: StatusResult) -> str:
    """Every readiness check, one line each: passed, FAILED with the fix, or unknown and why."""
    checks = s.get("readiness")
    if not checks:
        return "unknown (the daemon is older than this crashhpctl, or has not judged yet)"
    marks = {True: "ok     ", False: "FAILED ", None: "unknown"}
    return "\n".join(f"{marks[c['ok']]} {c['check']}: {c['reason']}" for c in checks)


def _crash_kernel(loaded: int | None, sysfs: str | None) -> str:
    if loaded is None:
        return "unknown (no kexec in this kernel, or an older daemon)"
    where = f" (/sys/{sysfs}/)" if sysfs else ""
    return ("loaded" if loaded else "NOT LOADED: a panic now saves no dump") + where


def _crash_cmdline(s: StatusResult) -> str:
    text = s.get("crash_kernel_cmdline")
    if text is None:
        return "not read (see kernel header)"
    missing = s.get("crash_kernel_cmdline_missing") or []
    return text + (f"\nLACKS {' '.join(missing)}: a dump would lose hot-added memory" if missing else "")


def _kdump_initrd(s: StatusResult) -> str:
    source = s.get("kdump_initrd_source")
    if source is None:
        return "not read: no device of this host needs a module in the kdump kernel"
    missing = s.get("kdump_initrd_missing_modules") or []
    return (f"LACKS {' '.join(missing)}: " if missing else "has what this host needs: ") + f"read from {source}"


def _crash_memory(s: StatusResult) -> str:
    """The reservation against what a dump was measured to need of it (sysview/headroom.py)."""
    reserved, needed = s.get("crashkernel_reserved_bytes"), s.get("crashkernel_needed_bytes")
    if reserved is None:
        return "unknown: no Crash kernel range in /proc/iomem"
    if needed is None:
        return f"{size(reserved)} reserved; the need was not measured for this host (crashhpctl status: checks)"
    short = "" if reserved >= needed else f", SHORT by {size(needed - reserved)}"
    return f"{size(reserved)} reserved, {size(needed)} needed{short}"


def _kernel_header(s: StatusResult) -> str:
    if not s.get("kernel_header_readable"):
        return f"not read back: {s.get('kernel_header_unreadable_reason') or 'unknown'}"
    if s.get("kernel_header_in_sync"):
        return "read back, in sync: it covers every RAM range and CPU of a fresh snapshot"
    return (f"read back, STALE: a dump would miss {size(s.get('uncovered_ram_bytes') or 0)} of RAM and "
            f"{s.get('missing_cpu_notes') or 0} CPU notes, and cover {size(s.get('stale_ram_bytes') or 0)} "
            "that is gone")


def _cpus(s: StatusResult) -> str:
    """A count, and why it is 0 where it is: no update has succeeded yet (the last error says why)."""
    text = str(s["cpus"])
    if s["cpus"] == 0 and s["ram_ranges"] == 0:
        text += " (no header built yet" + (f": {s['last_error']})" if s["last_error"] else ")")
    elif s["cpus"] == 0:  # a header, but not one CPU with crash_notes: no kdump here
        text += " (no CPU has crash_notes in sysfs: a kernel without CONFIG_CRASH_DUMP?)"
    missing = s.get("cpus_without_notes") or []
    if missing:
        text += f"; CPUs {', '.join(map(str, missing))} have no crash_notes in sysfs (possible, not present)"
    return text


def _unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


def _last_apply(s: StatusResult, now: float) -> str:
    if s["last_apply_at"] is None:
        return "never"
    when = f"{age(now - s['last_apply_at'])} ({s['last_apply_reason'] or 'before this daemon started'})"
    return "\n".join([when, *s["last_changes"]])


def _segment(s: StatusResult) -> str:
    if s["capacity_bytes"] is None:
        return f"{size(s['header_bytes'])} used, no fixed capacity"
    return f"{size(s['header_bytes'])} of {size(s['capacity_bytes'])} ({100 * (s['fill_ratio'] or 0):.1f}%)"


def show_header(h: HeaderResult, _now: float) -> tuple[str, int]:
    segments = h["segments"]
    ram = [s["memsz"] for s in segments if _is_ram(s) and s["memsz"]]
    capacity = f" of a {size(h['capacity_bytes'])} segment" if h["capacity_bytes"] is not None else ""
    summary = (f"generation {h['generation']}: {h['header_bytes']} bytes{capacity}, sha256 {h['sha256']}\n"
               f"{len(segments)} program headers: {sum(s['type'] == 'PT_NOTE' for s in segments)} notes, "
               f"{len(ram)} RAM ranges ({gib(sum(ram))})")
    return f"{summary}\n{program_headers(segments)}", EXIT_OK


def program_headers(segments: Sequence[Segment]) -> str:
    """The program headers the way `readelf -lW` shows them, plus what each one is."""
    rows = ["Type Offset             VirtAddr           PhysAddr           FileSiz    MemSiz     Flg What"]
    for s in segments:
        kind = {"PT_NOTE": "NOTE", "PT_LOAD": "LOAD"}.get(s["type"], s["type"])
        what = f"RAM {size(s['memsz'])}" if _is_ram(s) else "note" if s["type"] != "PT_LOAD" else "kernel image"
        flags = "".join(c if s["flags"] & bit else " " for c, bit in (("R", 4), ("W", 2), ("E", 1)))
        rows.append(f"{kind:<4} 0x{s['offset']:016x} 0x{s['vaddr']:016x} 0x{s['paddr']:016x} "
                    f"0x{s['filesz']:08x} 0x{s['memsz']:08x} {flags} {what}")
    return "\n".join(rows)


def _is_ram(s: Segment) -> bool:
    return s["type"] == "PT_LOAD" and s["vaddr"] < KERNEL_IMAGE_VADDR


def show_verify(v: VerifyResult, _now: float) -> tuple[str, int]:
    against = ("; checked against the header the kernel holds" if v.get("source") == "kernel"
               else "; checked against crashhpd's record (the kernel's own header cannot be read)")
    if v["in_sync"]:
        return (f"in sync: generation {v['generation']} is the header a fresh snapshot gives "
                f"({v['cpus']} CPUs, {v['ram_ranges']} RAM ranges){against}"), EXIT_OK
    lines = [f"DIFFERS: generation {v['generation']} is not the header a fresh snapshot gives; "
             "applying it would change:",
             *(f"  {line}" for line in v["changes"] or ["(no visible change: the bytes differ)"]),
             f"crashhpctl reconcile applies it now{against}"]
    return "\n".join(lines), EXIT_FAILED


def show_reconcile(r: ReconcileResult, _now: float) -> tuple[str, int]:
    took = f"{r['duration_s'] * 1000:.0f} ms"
    taken = f", {r['events']} pending events taken over" if r["events"] else ""
    if not r["applied"]:
        return f"nothing to apply: generation {r['generation']} already matches the system ({took}{taken})", EXIT_OK
    return "\n".join([f"applied generation {r['generation']} in {took}{taken}:",
                      *(f"  {c}" for c in r["changes"])]), EXIT_OK


def show_metrics(m: MetricsResult, _now: float) -> tuple[str, int]:
    return m["text"].rstrip("\n"), EXIT_OK


# crashhpctl's half of the op table: how each op of contract.OPS is shown (a test holds the two to the same ops)
SHOW: Mapping[str, Callable[[Any, float], tuple[str, int]]] = {
    "status": show_status,
    "header": show_header,
    "verify": show_verify,
    "reconcile": show_reconcile,
    "metrics": show_metrics,
    "kernel-header": show_header,
}
