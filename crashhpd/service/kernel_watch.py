# SPDX-License-Identifier: GPL-2.0-only
"""What the loop knows of the header the kernel holds, and the kernel's own word on it.

A dump is only as good as the header the kernel holds, so a change for the
worse is said once (MESSAGE_ID kernel-header-stale), and after a reload the
header read back is checked against the model (MESSAGE_ID model-drift).
/dev/kmsg's `crash hp:` lines (kmsg.py) say the same where nothing can be read back.
"""

import logging
import selectors
import time
from collections.abc import Callable

from .. import log
from ..elfcorehdr.build import Built
from ..elfcorehdr.coverage import KernelView
from ..errors import quoted
from ..sysview.loaded_header import LoadedHeader
from .kmsg import KernelLog

logger = logging.getLogger(__name__)

Report = Callable[[str, str], None]  # (error kind, message): counted in the daemon's stats
LOG_INTERVAL_S = 60.0  # the kernel's complaints reach the journal at most once a minute; the rest are counted


class KernelWatch:
    """`backend` names the backend now in use (a SIGHUP may change it); `report` counts an error;
    `check_soon` asks for an update after the quiet window, to read the header back."""

    def __init__(self, root: str, selector: selectors.BaseSelector, backend: Callable[[], str], report: Report,
                 check_soon: Callable[[], None], clock: Callable[[], float] = time.monotonic) -> None:
        self._selector = selector
        self._backend = backend
        self._report = report
        self._check_soon = check_soon
        self._clock = clock
        self._log = KernelLog(root)
        self._said_at: float | None = None  # when a complaint last reached the journal
        self._held_back = 0  # complaints counted since, not logged
        self.view = KernelView()  # the header the kernel holds, as the last update read it
        self.log_watched = False  # /dev/kmsg is in the selector
        self.log_unwatched_reason: str | None = "not opened yet"
        self.complaint: str | None = None  # the kernel's last word on a failed header rewrite
        self.recover_wanted = False  # the passive backend should reload once: the kernel left its header stale

    # --- /dev/kmsg ------------------------------------------------------------------------------

    def open(self) -> None:
        """Watch /dev/kmsg where it can be; where not (absent, refused, a /dev/null that cannot be polled), say
        why in status: the header read back after each update still tells the truth, only later."""
        self.log_unwatched_reason = self._log.open()
        if self.log_unwatched_reason is None:
            try:
                self._selector.register(self._log.fileno(), selectors.EVENT_READ, self._on_log)
            except (OSError, ValueError) as err:
                self._log.close()
                self.log_unwatched_reason = f"{self._log.path}: cannot be watched ({err})"
        if self.log_unwatched_reason is not None:
            logger.info("not watching the kernel's log for failed header rewrites: %s", self.log_unwatched_reason,
                        extra=log.fields("kernel-log", backend=self._backend()))
            return
        self.log_watched = True

    def close(self) -> None:
        if self.log_watched:
            self._selector.unregister(self._log.fileno())
            self.log_watched = False
        self._log.close()

    def _on_log(self, _mask: int) -> None:
        """The kernel says it could not update the loaded header: an error now, and a check soon."""
        drained = self._log.drain()
        for line in drained.lines:
            self.complaint = f"the kernel could not update the loaded header: {quoted(line.strip())}"
            self._report("kernel-header-stale", self.complaint)
            self._say(self.complaint)
        if drained.lines:
            self._check_soon()
        if drained.ended:
            self.close()
            self.log_unwatched_reason = f"{self._log.path}: ended (not a kernel log)"

    def _say(self, complaint: str) -> None:
        """At most one journal line per LOG_INTERVAL_S; those held back are counted in the next."""
        now = self._clock()
        if self._said_at is not None and now - self._said_at < LOG_INTERVAL_S:
            self._held_back += 1
            return
        held, self._held_back, self._said_at = self._held_back, 0, now
        more = f" ({held} more such lines in the last {LOG_INTERVAL_S:g} s)" if held else ""
        logger.warning("%s%s", complaint, more, extra=log.fields("kernel-header-stale", backend=self._backend()))

    # --- after an update --------------------------------------------------------------------------

    def updated(self, loaded: LoadedHeader | None, kernel: KernelView, built: Built, layout: str,
                reloaded: bool, keeps_header: bool, can_recover: bool) -> None:
        """`loaded` is the header read back once the update ended and `kernel` its view against `built`;
        `reloaded`: this update reloaded it; `keeps_header`: keeping it current is the backend's job;
        `can_recover`: a reload may be asked for where the kernel left its header stale."""
        if reloaded and loaded is not None:
            self._confirm_load(loaded, kernel, built, layout)
        self._watch(kernel, keeps_header, can_recover)

    def _confirm_load(self, loaded: LoadedHeader, kernel: KernelView, built: Built, layout: str) -> None:
        """Where kexec-tools built other bytes than the model, say so (model drift): whether to reload is
        decided on coverage, so a drift costs no dump, but the model should be fixed."""
        if not loaded.readable:
            return
        held = loaded.header
        if built.data[:len(held)] == held and not any(built.data[len(held):]):
            return
        lines = kernel.coverage.changes if kernel.coverage is not None else []
        what = (": " + "; ".join(lines)) if lines else " (same RAM and CPUs, other bytes)"
        logger.warning("model drift: the reload loaded another header than crashhpd's %s model%s", layout, what,
                       extra=log.fields("model-drift", backend=self._backend()))

    def _watch(self, kernel: KernelView, keeps_header: bool, can_recover: bool) -> None:
        """Keep what the kernel holds for status; say so once when it starts (or stops) missing something.

        `kernel` was read back and compared with the fresh header once, in reconcile. A stale header is an
        error where keeping it is the backend's job, with one recovery asked for where the backend has one.
        """
        backend = self._backend()
        was = self.view.coverage
        self.view = kernel
        now = kernel.coverage
        if now is None or (was is not None and was.in_sync == now.in_sync):
            return
        if now.in_sync:
            self.complaint = None  # the header read back covers everything: whatever the kernel said is past
            if was is not None:
                logger.info("the kernel's header is current again",
                            extra=log.fields("kernel-header-stale", backend=backend))
            return
        message = (f"the kernel's header is stale: a dump taken now would miss {now.uncovered_ram_bytes} bytes "
                   f"of RAM and {now.missing_cpu_notes} CPU notes, and cover {now.stale_ram_bytes} bytes that "
                   f"are gone: {'; '.join(now.changes) or 'no visible change'}")
        if keeps_header:  # its job, not done: an error, not only a report
            self._report("kernel-header-stale", message)
        if can_recover:  # said once per stale spell; the updater retries a recovery that did not fix it
            self.recover_wanted = True
            message += "; reloading the crash kernel ([kernel] recover), again with backoff while it stays stale"
        logger.warning("%s", message, extra=log.fields("kernel-header-stale", backend=backend))
