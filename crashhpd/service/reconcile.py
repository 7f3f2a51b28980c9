"""One reconcile: snapshot -> header -> validate -> compare with the backend -> apply if different.

This is the whole data path of the daemon in one function, kept free of the
event loop so tests and `verify` can run it directly.
"""

import time
from dataclasses import dataclass

from ..backends.base import Applied, Backend
from ..elfcorehdr import pack as header_mod
from ..elfcorehdr.diff import diff
from ..elfcorehdr.layout import HeaderModel, Layout, plan
from ..elfcorehdr.validate import NotAHeader, ParsedHeader, check, parse
from ..errors import HeaderError
from ..sysview.snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class Built:
    """A header built and validated for a snapshot, not yet compared with anything."""

    snapshot: Snapshot
    model: HeaderModel
    data: bytes
    parsed: ParsedHeader


@dataclass(frozen=True, slots=True)
class Outcome:
    built: Built
    applied: Applied | None  # None: the backend already held exactly this header
    changes: list[str]  # the human diff against what the backend held
    duration_s: float


def build_valid(snapshot: Snapshot, layout: Layout) -> Built:
    """The header for this snapshot; HeaderError if it breaks any rule, so it is never applied."""
    model = plan(snapshot, layout)
    data = header_mod.build(model)
    parsed = parse(data)
    problems = check(parsed, snapshot)
    if problems:
        raise HeaderError("generated header is invalid: " + "; ".join(problems))
    return Built(snapshot, model, data, parsed)


def changes(old: bytes | None, new: Built) -> list[str]:
    """The human diff from what a backend holds to a new header (notes named by CPU)."""
    cpu_by_addr = {note.addr: cpu for cpu, note in new.snapshot.crash_notes.items()}
    vmcoreinfo_addr = new.snapshot.vmcoreinfo[0] if new.snapshot.vmcoreinfo else None
    if old is None:
        return [f"+ first header: {len(new.model.cpu_notes)} CPU notes, {len(new.model.ram)} RAM ranges"]
    try:
        old_parsed = parse(old)
    except NotAHeader as err:
        return [f"~ replacing an unreadable header ({err})"]
    return diff(old_parsed, new.parsed, cpu_by_addr, vmcoreinfo_addr)


def reconcile(backend: Backend, snapshot: Snapshot, layout: Layout, clock=time.monotonic) -> Outcome:
    """Bring the backend in line with the snapshot; a no-op when it already is."""
    started = clock()
    built = build_valid(snapshot, layout)
    current = backend.loaded()
    if current == built.data:
        return Outcome(built, None, [], clock() - started)
    lines = changes(current, built)
    applied = backend.apply(built.data)
    return Outcome(built, applied, lines, clock() - started)
