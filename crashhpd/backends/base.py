# SPDX-License-Identifier: GPL-2.0-only
"""The one small interface every backend implements: what is loaded, how much fits, apply.

The daemon never knows how a header reaches the kernel. It builds the header
in the backend's layout, compares it with `loaded()`, and calls `begin()`
only when they differ. A backend that cannot apply raises BackendError and
must leave what was applied before exactly as it was.

An apply that takes time (a `kexec -p` may take seconds) must not stop the
event loop: `begin()` then returns a `Pending`, whose fds the loop watches
in its own selector next to the uevent socket and the control clients, and
whose deadline is one of the loop's timers. Everything else (sandbox,
kernel) returns its `Applied` at once. `drive()` takes a Pending to its end
with a selector of its own, for callers without a loop: `apply()` is
`begin()` then `settle()`, the same code path the daemon takes.
"""

import selectors
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from ..elfcorehdr.layout import LayoutName
from ..sysview.kernel_state import KernelState

KEEP_KERNEL_HEADER = frozenset({"kexec", "kernel"})  # the backends whose job is the header the kernel holds


@dataclass(frozen=True, slots=True)
class Applied:
    """What a backend holds after a successful apply (or found at start-up)."""

    generation: int
    sha256: str
    header_size: int
    capacity: int | None
    applied_at: float  # time.time() of the apply


@dataclass(slots=True)
class Health:
    """What status and metrics report about a backend, beyond the header itself."""

    ok: bool = True
    detail: str = "ok"
    extra: dict[str, object] = field(default_factory=dict)


class Running(Protocol):
    """Work that ends by itself, driven from a selector: the loop watches `fds()` for reading, calls
    `ready(fd)` for each that is, and `expire(now)` once `deadline()` has passed, until `done`.

    While not done, it has an fd to watch or a deadline (usually both), so that it always ends.
    """

    @property
    def done(self) -> bool: ...

    def fds(self) -> Sequence[int]:
        """The fds to watch now; one it no longer lists stays open until finish(), so it is never reused early."""
        ...

    def ready(self, fd: int) -> None: ...

    def deadline(self) -> float | None:
        """time.monotonic() at which expire() is due, or None."""
        ...

    def expire(self, now: float) -> None: ...


class Pending(Running, Protocol):
    """An apply still running; `finish()` once it is done."""

    def stop(self, by: float) -> None:
        """The daemon is stopping: end by `by` at the latest, as the backend ends a timeout."""
        ...

    def finish(self) -> Applied:
        """Once done: what is applied now, or BackendError (the old header kept). Releases every fd."""
        ...


class Backend(Protocol):
    """`kernel` is the kexec state of the snapshot the daemon decides on: backends never read it themselves."""

    name: str
    layout: LayoutName  # the layout this backend's loader produces; the daemon builds in it
    # An apply reloads the crash kernel: what the kernel holds is this backend's doing, so where it can be
    # read back, whether to apply is decided by it, not by the backend's own record.
    reloads: bool

    def loaded(self, kernel: KernelState) -> bytes | None:
        """The header bytes in force now (without segment padding), or None if nothing is loaded."""
        ...

    def state(self) -> Applied | None:
        """Generation, hash and time of what is applied, or None before the first apply."""
        ...

    def capacity(self, kernel: KernelState) -> int | None:
        """Bytes the loaded segment can hold, or None where the backend has no fixed segment."""
        ...

    def begin(self, header: bytes, kernel: KernelState) -> Applied | Pending:
        """Start putting this header in force: Applied when done at once, Pending while it runs on.

        BackendError, here or from Pending.finish(), means the old header is kept.
        """
        ...

    def apply(self, header: bytes, kernel: KernelState) -> Applied:
        """begin() and wait for it: put this header in force; raise BackendError and keep the old one on failure."""
        ...

    def health(self, kernel: KernelState) -> Health:
        """A pure verdict on the backend and that state: status may ask as often as it likes."""
        ...


# --- driving a Pending ---------------------------------------------------------------------------


class Watch:
    """The fds of something Running registered in a selector, kept in step with what it asks to be watched.

    Each selector key's data is a callback taking the event mask, as the
    daemon's loop dispatches them; `after` runs after every step it took.
    """

    def __init__(self, selector: selectors.BaseSelector, pending: Running,
                 after: Callable[[], None] = lambda: None) -> None:
        self.pending = pending
        self._selector = selector
        self._after = after
        self._watched: set[int] = set()
        self._closed = False
        self.sync()

    def sync(self) -> None:
        wanted = set() if self._closed else set(self.pending.fds())
        for fd in self._watched - wanted:
            self._selector.unregister(fd)
        for fd in wanted - self._watched:
            self._selector.register(fd, selectors.EVENT_READ, partial(self._on_ready, fd))
        self._watched = wanted

    def expire_if_due(self, now: float) -> None:
        deadline = self.pending.deadline()
        if not self._closed and not self.pending.done and deadline is not None and now >= deadline:
            self.pending.expire(now)
            self._stepped()

    def close(self) -> None:
        """Unregister everything (before its fds are closed); later events for them are ignored."""
        self._closed = True
        self.sync()

    def _on_ready(self, fd: int, _mask: int) -> None:
        if self._closed or fd not in self._watched:
            return  # reported in the same select() as the event that ended it
        self.pending.ready(fd)
        self._stepped()

    def _stepped(self) -> None:
        self.sync()
        self._after()


def drive(running: Running, clock: Callable[[], float] = time.monotonic) -> None:
    """Drive it to its end in a selector of its own: for callers without an event loop."""
    with selectors.DefaultSelector() as selector:
        watch = Watch(selector, running)
        try:
            while not running.done:
                deadline = running.deadline()
                for key, mask in selector.select(None if deadline is None else max(deadline - clock(), 0)):
                    key.data(mask)
                watch.expire_if_due(clock())
        finally:
            watch.close()


def settle(result: Applied | Pending) -> Applied:
    """What begin() returned, waited for if it is still running."""
    if isinstance(result, Applied):
        return result
    drive(result)
    return result.finish()
