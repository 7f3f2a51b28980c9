"""One reconcile: snapshot -> header -> validate -> compare with the backend -> apply if different.

The data path of one update in one function, kept free of the event loop so
tests can run it directly.
"""

import time
from dataclasses import dataclass

from ..backends.base import Applied, Backend
from ..elfcorehdr.build import Built, build_valid, changes
from ..elfcorehdr.layout import Layout
from ..sysview.snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class Outcome:
    built: Built
    applied: Applied | None  # None: the backend already held exactly this header
    changes: list[str]  # the human diff against what the backend held
    duration_s: float


def reconcile(backend: Backend, snapshot: Snapshot, layout: Layout, clock=time.monotonic) -> Outcome:
    """Bring the backend in line with the snapshot; a no-op when it already is."""
    started = clock()
    built = build_valid(snapshot, layout)
    current = backend.loaded(snapshot.kernel)
    if current == built.data:
        return Outcome(built, None, [], clock() - started)
    lines = changes(current, built)
    applied = backend.apply(built.data, snapshot.kernel)
    return Outcome(built, applied, lines, clock() - started)
