# SPDX-License-Identifier: GPL-2.0-only
"""What the daemon has done so far: the counters and last outcomes that status is built from."""

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class Stats:
    started_at: float = field(default_factory=time.time)
    events_received: int = 0
    events_coalesced: int = 0  # events folded into an update that another event of the burst triggered
    updates: int = 0  # reconciles run (each builds and compares a header)
    applies: int = 0
    skipped_noop: int = 0
    rescans: int = 0  # full rescans after lost events
    errors: dict[str, int] = field(default_factory=dict)  # kind -> count
    last_apply_reason: str | None = None
    last_changes: list[str] = field(default_factory=list)
    last_error: str | None = None
    last_error_at: float | None = None
    last_duration_s: float | None = None
    cpus: int = 0
    ram_ranges: int = 0
    ram_bytes: int = 0  # RAM the header covers
    page_offset_guessed: bool = False  # the last header's direct-map base was the default, not the kernel's
    cpus_without_notes: list[int] = field(default_factory=list)  # in the layout's CPU set, but no crash_notes
    in_sync: bool = False

    def error(self, kind: str, message: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.last_error = message
        self.last_error_at = time.time()
