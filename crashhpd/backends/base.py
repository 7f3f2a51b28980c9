# SPDX-License-Identifier: GPL-2.0-only
"""The one small interface every backend implements: what is loaded, how much fits, apply, and what it does.

The daemon never knows how a header reaches the kernel: it builds the header in
the backend's layout, compares, and calls `begin()` only on a difference. What a
backend does with the crash kernel is declared in its `capabilities`, never
guessed from its name. An apply that takes time (a `kexec -p`) is a `Pending`.
"""

import selectors
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from ..elfcorehdr.layout import LayoutName
from ..sysview.kernel_state import KernelState


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend does with the crash kernel, as it declares it."""

    # An apply reloads the crash kernel: what the kernel holds is this backend's doing, so where it can be
    # read back, whether to apply is decided on it, not on the backend's own record.
    reloads: bool
    # Keeping the header the kernel holds current is this backend's job: a stale one is an error, and the
    # distribution's per-event reload rule is redundant (overridden) while it runs.
    keeps_kernel_header: bool


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
    """An apply still running (a `kexec -p`): its fds and deadline join the loop's selector, or `drive()`
    runs it to its end for callers without a loop; `finish()` once it is done."""

    def stop(self, by: float) -> None:
        """The daemon is stopping: end by `by` at the latest, as the backend ends a timeout."""
        ...

    def finish(self, kernel: KernelState) -> Applied:
        """Once done, given the kexec state read after it: what is applied now, or BackendError (the old
        header kept). Releases every fd."""
        ...


class Backend(Protocol):
    """`kernel` is the kexec state of the snapshot the daemon decides on: backends never read it themselves."""

    name: str
    layout: LayoutName  # the layout this backend's loader produces; the daemon builds in it
    @property
    def capabilities(self) -> Capabilities: ...

    @property
    def recovery(self) -> "Backend | None":
        """What reloads the crash kernel where the kernel failed to update its own header; None: nothing."""
        ...

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

    def load_changed(self, kernel: KernelState) -> str | None:
        """Why the crash kernel must be loaded again although its header is right (the load configured now is
        not the one in force: another kernel, initrd, command line, load path or kexec), else None."""
        ...


class Backoff:
    """Exponential retry delays: 1 s doubling to 60 s, back to the start after a success."""

    def __init__(self, start: float = 1.0, cap: float = 60.0) -> None:
        self._start = start
        self._cap = cap
        self._next = start

    def take(self) -> float:
        delay = self._next
        self._next = min(self._cap, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self._start


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


def settle(result: Applied | Pending, kernel_after: Callable[[], KernelState]) -> Applied:
    """What begin() returned, waited for if it is still running: for callers without the daemon's loop."""
    if isinstance(result, Applied):
        return result
    drive(result)
    return result.finish(kernel_after())
