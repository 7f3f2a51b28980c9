# SPDX-License-Identifier: GPL-2.0-only
"""What crashhpctl prints for each reply: pure functions from a result to (text, exit status)."""

import base64
from collections.abc import Sequence

from ..elfcorehdr.table import table
from ..elfcorehdr.validate import parse
from ..service.status import Status
from ..sysview.ranges import size_text
from .protocol import HeaderResult, MetricsResult, ReconcileResult, VerifyResult

EXIT_OK, EXIT_FAILED = 0, 1


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


def aligned(rows: Sequence[tuple[str, str]]) -> str:
    """Label and value columns; a value's further lines line up under its first."""
    width = max(len(label) for label, _ in rows) + 2
    lines = []
    for label, value in rows:
        first, *rest = value.split("\n")
        lines.append(f"{label:<{width}}{first}".rstrip())
        lines += [" " * width + line for line in rest]
    return "\n".join(lines)


def show_status(s: Status, now: float) -> tuple[str, int]:
    errors = ", ".join(f"{kind} {count}" for kind, count in sorted(s.errors.items())) or "none"
    pending = "none"
    if s.next_update_in_s is not None:
        pending = f"{s.pending_events} events, update in {s.next_update_in_s:.1f} s"
    hotplug = ("not published (kernel before 6.6, or no CONFIG_CRASH_HOTPLUG)"
               if s.crash_hotplug_cpu is None and s.crash_hotplug_memory is None
               else f"cpu {_unknown(s.crash_hotplug_cpu)}, memory {_unknown(s.crash_hotplug_memory)}")
    rows = [
        ("crashhpd", f"{s.version}, pid {s.pid}, up {duration(s.uptime_s)}"),
        ("backend", f"{s.backend} ({'healthy' if s.backend_ok else 'UNHEALTHY'}: {s.backend_detail})"),
        ("layout", s.layout),
        ("generation", f"{s.generation}, {'in sync' if s.in_sync else 'NOT in sync: the last update failed'}"),
        ("last apply", _last_apply(s, now)),
        ("CPUs", str(s.cpus)),
        ("RAM", f"{s.ram_ranges} ranges, {gib(s.ram_bytes)}"),
        ("segment", _segment(s)),
        ("events", f"{s.events_received} received, {s.events_coalesced} coalesced, "
                   f"{s.rescans} rescans after lost events"),
        ("updates", f"{s.updates} run: {s.applies} applied, {s.skipped_noop} no-op"),
        ("pending", pending),
        ("apply", f"running for {s.apply_running_s or 0:.1f} s; the next update waits for it" if s.applying
         else "none running"),
        ("crash_hotplug", hotplug),
        ("udev rule", f"{'inert' if s.udev_rule_inert else 'ACTIVE'}: {s.udev_rule_detail}"),
        ("errors", errors),
        ("last error", "none" if s.last_error is None
         else f"{age(now - s.last_error_at) if s.last_error_at else 'at some time'}: {s.last_error}"),
    ]
    return aligned(rows), EXIT_OK


def _unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


def _last_apply(s: Status, now: float) -> str:
    if s.last_apply_at is None:
        return "never"
    when = f"{age(now - s.last_apply_at)} ({s.last_apply_reason or 'before this daemon started'})"
    return "\n".join([when, *s.last_changes])


def _segment(s: Status) -> str:
    if s.capacity_bytes is None:
        return f"{size_text(s.header_bytes)} used, no fixed capacity"
    return f"{size_text(s.header_bytes)} of {size_text(s.capacity_bytes)} ({100 * (s.fill_ratio or 0):.1f}%)"


def show_header(h: HeaderResult, _now: float) -> tuple[str, int]:
    parsed = parse(base64.b64decode(h.data_base64))
    capacity = f" of a {size_text(h.capacity_bytes)} segment" if h.capacity_bytes is not None else ""
    ram = parsed.ram
    summary = (f"generation {h.generation}: {h.header_bytes} bytes{capacity}, sha256 {h.sha256}\n"
               f"{len(parsed.segments)} program headers: {len(parsed.notes)} notes, {len(ram)} RAM ranges "
               f"({gib(sum(end - start + 1 for start, end in ram))})")
    return f"{summary}\n{table(parsed)}", EXIT_OK


def show_verify(v: VerifyResult, _now: float) -> tuple[str, int]:
    against = ("; checked against the header the kernel holds" if v.source == "kernel"
               else "; checked against crashhpd's record (the kernel's own header cannot be read)")
    if v.in_sync:
        return (f"in sync: generation {v.generation} is the header a fresh snapshot gives "
                f"({v.cpus} CPUs, {v.ram_ranges} RAM ranges){against}"), EXIT_OK
    lines = [f"DIFFERS: generation {v.generation} is not the header a fresh snapshot gives; applying it would change:",
             *(f"  {line}" for line in v.changes or ["(no visible change: the bytes differ)"]),
             f"crashhpctl reconcile applies it now{against}"]
    return "\n".join(lines), EXIT_FAILED


def show_reconcile(r: ReconcileResult, _now: float) -> tuple[str, int]:
    took = f"{r.duration_s * 1000:.0f} ms"
    taken = f", {r.events} pending events taken over" if r.events else ""
    if not r.applied:
        return f"nothing to apply: generation {r.generation} already matches the system ({took}{taken})", EXIT_OK
    return "\n".join([f"applied generation {r.generation} in {took}{taken}:", *(f"  {c}" for c in r.changes)]), EXIT_OK


def show_metrics(m: MetricsResult, _now: float) -> tuple[str, int]:
    return m.text.rstrip("\n"), EXIT_OK
