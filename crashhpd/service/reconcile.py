# SPDX-License-Identifier: GPL-2.0-only
"""One reconcile: snapshot -> header -> validate -> compare -> apply if different; free of the loop for tests.

The header the kernel holds is compared with the fresh one once here (its view
travels in the Outcome to whoever reports it). An apply that runs on (a kexec
load) comes back as an InFlight, which the loop drives and then finishes.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..backends.base import Applied, Backend, Pending
from ..elfcorehdr.build import Built, build_valid, changes, changes_from
from ..elfcorehdr.coverage import KernelView, view
from ..elfcorehdr.layout import Layout, same_program_headers
from ..sysview.kernel_state import KernelState
from ..sysview.snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class Outcome:
    built: Built
    applied: Applied | None  # None: the backend already held exactly this header
    changes: list[str]  # the human diff against what the backend held
    duration_s: float
    kernel: KernelView  # the header the kernel held when the snapshot was taken, against `built`


@dataclass(frozen=True, slots=True)
class InFlight:
    """A reconcile whose apply is still running."""

    built: Built
    changes: list[str]
    pending: Pending
    started: float
    clock: Callable[[], float]
    kernel: KernelView

    def finish(self, kernel: KernelState) -> Outcome:
        """Once pending is done, given the kexec state read after it: the Outcome, or the backend's BackendError."""
        return Outcome(self.built, self.pending.finish(kernel), self.changes, self.clock() - self.started,
                       self.kernel)


def reconcile(backend: Backend, snapshot: Snapshot, layout: Layout, clock: Callable[[], float] = time.monotonic,
              last: tuple[Built | None, KernelView | None] = (None, None)) -> Outcome | InFlight:
    """Bring the backend in line with the snapshot; a no-op when it already is. `last`: the previous update's
    build and view of the kernel's header, reused where nothing they depend on changed.

    For a backend that reloads, the header the kernel holds (where it can be read) decides, not the
    backend's model of it: a model error can never skip a needed reload, and a start-up whose crash
    kernel is already right costs none. The diff then says what the reload brings to the kernel.
    """
    started = clock()
    built = build_valid(snapshot, layout, last[0])
    kernel = view(snapshot.loaded_header, built, last[1])
    deciding = kernel.coverage if backend.capabilities.reloads else None
    current = backend.loaded(snapshot.kernel)
    # where the kernel's header is read back it alone says whether the header is in force: a stale one is
    # never "nothing to do", whatever the backend's record says; else the record, its zero padding aside
    in_force = (deciding.in_sync if deciding is not None
                else current is not None and same_program_headers(current, built.data))
    reload_for = backend.load_changed(snapshot.kernel) if in_force else None
    if in_force and reload_for is None:
        return Outcome(built, None, [], clock() - started, kernel)
    if reload_for is not None:
        lines = [f"~ {reload_for}"]
    elif deciding is not None:
        lines = deciding.changes
    elif last[0] is not None and current == last[0].data:  # the backend holds the last build: parsed already
        lines = changes_from(last[0].parsed, built)
    else:
        lines = changes(current, built)
    applied = backend.begin(built.data, snapshot.kernel)
    if isinstance(applied, Applied):
        return Outcome(built, applied, lines, clock() - started, kernel)
    return InFlight(built, lines, applied, started, clock, kernel)
