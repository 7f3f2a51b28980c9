# SPDX-License-Identifier: GPL-2.0-only
"""One reconcile: snapshot -> header -> validate -> compare with the backend -> apply if different.

The data path of one update in one function, kept free of the event loop so
tests can run it directly. An apply that runs on (a kexec load) comes back
as an InFlight: the loop drives its Pending and calls finish() for the Outcome.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..backends.base import Applied, Backend, Pending
from ..elfcorehdr.build import Built, build_valid, changes
from ..elfcorehdr.coverage import compare
from ..elfcorehdr.layout import Layout
from ..elfcorehdr.validate import NotAHeader
from ..sysview.snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class Outcome:
    built: Built
    applied: Applied | None  # None: the backend already held exactly this header
    changes: list[str]  # the human diff against what the backend held
    duration_s: float


@dataclass(frozen=True, slots=True)
class InFlight:
    """A reconcile whose apply is still running."""

    built: Built
    changes: list[str]
    pending: Pending
    started: float
    clock: Callable[[], float]

    def finish(self) -> Outcome:
        """Once pending is done: the Outcome, or the backend's BackendError."""
        return Outcome(self.built, self.pending.finish(), self.changes, self.clock() - self.started)


def _kernel_has_it(backend: Backend, snapshot: Snapshot, built: Built) -> bool:
    """Whether the header the kernel holds, read back, already covers what `built` does (RAM and CPU notes).

    Only for a backend that reloads: then that header is what a reload would replace, and comparing with
    it, not with the backend's model of it, means a model error can never skip a needed reload, and a
    start-up whose crash kernel is already right costs none.
    """
    loaded = snapshot.loaded_header
    if not backend.reloads or loaded is None or not loaded.readable:
        return False
    try:
        return compare(loaded.header, built).in_sync
    except NotAHeader:
        return False


def reconcile(backend: Backend, snapshot: Snapshot, layout: Layout,
              clock: Callable[[], float] = time.monotonic) -> Outcome | InFlight:
    """Bring the backend in line with the snapshot; a no-op when it already is."""
    started = clock()
    built = build_valid(snapshot, layout)
    current = backend.loaded(snapshot.kernel)
    if current == built.data or _kernel_has_it(backend, snapshot, built):
        return Outcome(built, None, [], clock() - started)
    loaded = snapshot.loaded_header
    if backend.reloads and loaded is not None and loaded.readable:
        current = loaded.header  # what the reload replaces: the diff says what it brings to the kernel
    lines = changes(current, built)
    applied = backend.begin(built.data, snapshot.kernel)
    if isinstance(applied, Applied):
        return Outcome(built, applied, lines, clock() - started)
    return InFlight(built, lines, applied, started, clock)
