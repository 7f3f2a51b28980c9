# SPDX-License-Identifier: GPL-2.0-only
"""The one way a header is made: plan -> pack -> parse -> check, for the CLI, the daemon, tests and benchmarks.

A header that breaks any rule never leaves this function, so nothing that
calls it can apply, write or compare an invalid one.
"""

from dataclasses import dataclass, replace

from ..errors import InvalidHeader
from ..sysview.snapshot import Snapshot
from .diff import diff
from .layout import HeaderModel, Layout, plan
from .pack import build
from .validate import NotAHeader, ParsedHeader, check, parse


@dataclass(frozen=True, slots=True)
class Built:
    """A header built and validated for a snapshot, not yet compared with anything."""

    snapshot: Snapshot
    model: HeaderModel
    data: bytes
    parsed: ParsedHeader
    layout: Layout


def build_valid(snapshot: Snapshot, layout: Layout, previous: Built | None = None) -> Built:
    """The header for this snapshot; InvalidHeader naming every rule it breaks (HeaderError if it cannot be packed).

    `previous`, built on a snapshot that had the same inputs in the same layout, is taken as it is: a header is a
    pure function of them, and an update that finds nothing changed then costs a comparison, not a build. Built
    on other inputs, each stage takes from it the rows that did not change (tests/unit/elfcorehdr/test_reuse.py
    holds every stage to what it gives without `previous`).
    """
    if previous is not None and previous.layout == layout and _same_inputs(previous.snapshot, snapshot):
        return replace(previous, snapshot=snapshot)
    if previous is not None and previous.layout == layout:  # each stage redoes only the rows that changed
        model = plan(snapshot, layout, previous.model)
        data = build(model, (previous.model, previous.data))
        parsed = parse(data, (previous.data, previous.parsed))
        problems = check(parsed, snapshot, layout, (previous.parsed, previous.snapshot))
    else:
        model = plan(snapshot, layout)
        data = build(model)
        parsed = parse(data)
        problems = check(parsed, snapshot, layout)
    if problems:
        raise InvalidHeader("generated header is invalid: " + "; ".join(problems))
    return Built(snapshot, model, data, parsed, layout)


def _same_inputs(old: Snapshot, new: Snapshot) -> bool:
    """Everything a header is made of is the same: all but the kexec state and the header the kernel holds."""
    return replace(old, kernel=new.kernel, loaded_header=new.loaded_header) == new


def changes(old: bytes | None, new: Built) -> list[str]:
    """The human diff from what a backend holds to a new header (notes named by CPU)."""
    if old is None:
        return [f"+ first header: {len(new.model.cpu_notes)} CPU notes, {len(new.model.ram)} RAM ranges"]
    try:
        old_parsed = parse(old)
    except NotAHeader as err:
        return [f"~ replacing an unreadable header ({err})"]
    return changes_from(old_parsed, new)


def changes_from(old: ParsedHeader, new: Built) -> list[str]:
    """The same diff from a header already parsed."""
    cpu_by_addr = {note.addr: cpu for cpu, note in new.snapshot.crash_notes.items()}
    vmcoreinfo_addr = new.snapshot.vmcoreinfo[0] if new.snapshot.vmcoreinfo else None
    return diff(old, new.parsed, cpu_by_addr, vmcoreinfo_addr)
