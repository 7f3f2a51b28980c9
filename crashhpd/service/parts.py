# SPDX-License-Identifier: GPL-2.0-only
"""Everything a configuration decides, built together (crashhpd.wiring) so a reload swaps all of it or nothing."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from ..backends.base import Backend
from ..config import Config
from ..elfcorehdr.layout import Layout
from ..sysview.loaded_header import LoadedHeaderReader
from ..sysview.snapshot import BootConstants
from .udev_takeover import UdevTakeover


@dataclass(slots=True)
class Drained:
    """What one drain of an event source took."""

    events: int = 0
    lost: bool = False  # events may have been dropped: rescan
    broken: bool = False  # the source failed: reopen it
    more: bool = False  # stopped at its limit with events still queued
    error: str | None = None
    actions: dict[str, int] = field(default_factory=dict)  # "memory/online" -> count, at debug level only


class EventSource(Protocol):
    """Where hotplug events come from: a fd in the selector, drained without blocking."""

    @property
    def source(self) -> str: ...

    def open(self) -> None: ...

    def fileno(self) -> int: ...

    def close(self) -> None: ...

    def drain(self) -> Drained: ...


@dataclass(frozen=True, slots=True)
class Parts:
    cfg: Config
    boot: BootConstants
    backend: Backend
    layout: Layout
    monitor: EventSource
    udev: UdevTakeover
    header_reader: LoadedHeaderReader  # BTF and symbols parsed once per boot


# Builds the parts for a configuration, reusing what the previous parts already got right.
Builder = Callable[[Config, "Parts | None"], Parts]
