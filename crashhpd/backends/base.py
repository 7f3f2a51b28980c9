"""The one small interface every backend implements: what is loaded, how much fits, apply.

The daemon never knows how a header reaches the kernel. It builds the header
in the backend's layout, compares it with `loaded()`, and calls `apply()`
only when they differ. A backend that cannot apply raises BackendError and
must leave what was applied before exactly as it was.
"""

from dataclasses import dataclass, field
from typing import Protocol

from ..elfcorehdr.layout import LayoutName
from ..sysview.kernel_state import KernelState


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


class Backend(Protocol):
    """`kernel` is the kexec state of the snapshot the daemon decides on: backends never read it themselves."""

    name: str
    layout: LayoutName  # the layout this backend's loader produces; the daemon builds in it

    def loaded(self, kernel: KernelState) -> bytes | None:
        """The header bytes in force now (without segment padding), or None if nothing is loaded."""
        ...

    def state(self) -> Applied | None:
        """Generation, hash and time of what is applied, or None before the first apply."""
        ...

    def capacity(self, kernel: KernelState) -> int | None:
        """Bytes the loaded segment can hold, or None where the backend has no fixed segment."""
        ...

    def apply(self, header: bytes, kernel: KernelState) -> Applied:
        """Put this header in force; raise BackendError and keep the old one on any failure."""
        ...

    def health(self, kernel: KernelState) -> Health:
        """A pure verdict on the backend and that state: status may ask as often as it likes."""
        ...
