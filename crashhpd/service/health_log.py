# SPDX-License-Identifier: GPL-2.0-only
"""The journal's view of backend health: one line per change of verdict, never one per poll.

Backends judge themselves purely (status asks on every request), so the
daemon feeds each verdict after an update through here, and only a change
reaches the journal: a monitor polling `status` cannot flood it, and an
admin sees when the kernel stopped (or resumed) keeping the header.
"""

import logging

from .. import log
from ..backends.base import Health

logger = logging.getLogger(__name__)


class HealthLog:
    def __init__(self) -> None:
        self._last: Health | None = None

    def forget(self) -> None:
        """A new backend: its first verdict is news again."""
        self._last = None

    def observe(self, backend: str, health: Health) -> None:
        previous, self._last = self._last, health
        if previous is None and health.ok:
            return
        if previous is not None and previous.ok == health.ok and (health.ok or previous.detail == health.detail):
            return
        fields = log.fields("backend-health", backend=backend)
        if health.ok:
            logger.info("%s backend healthy again: %s", backend, health.detail, extra=fields)
        else:
            logger.warning("%s", health.detail, extra=fields)
