# SPDX-License-Identifier: GPL-2.0-only
"""The passive backend: the kernel rewrites the loaded header on hotplug, crashhpd only watches.

Where the kernel keeps the header itself, a reload from userspace would only
open a window with no crash kernel, so this backend never loads and never
writes. It keeps what the kernel is expected to hold, so status, diffs and
metrics stay meaningful, and says so loudly when the kernel stops doing the job.
"""

import hashlib
import logging
import time

from .. import log
from ..abi.elf import EHDR_SIZE, align_up
from ..elfcorehdr.layout import LayoutName
from ..errors import BackendError
from ..sysview.kernel_state import KernelState
from .base import Applied, Backend, Capabilities, Health

logger = logging.getLogger(__name__)

PAGE_SIZE = 4096  # kexec segments are page-aligned; the kernel's header buffer is too


def choose(kernel: KernelState) -> str:
    """The backend for `backend = "auto"`: leave the kernel alone whenever it keeps the header itself."""
    return "kernel" if kernel.updates_header else "kexec"


def _state_text(value: int | None) -> str:
    return "missing" if value is None else str(value)


class KernelBackend:
    """For a crash image loaded with kexec_file_load (`kexec -s`) the kernel rebuilds the elfcorehdr in
    place on every CPU or memory event, in microseconds, since Linux commit 247262756121 ("crash: add
    generic infrastructure for crash hotplug support", v6.6) and, on x86, ea53ad9cf73b ("x86/crash: add
    x86 crash hotplug support", v6.6); for one loaded with kexec_load and `kexec --hotplug`, since
    a72bbec70da2 ("crash: hotplug support for kexec_load()", v6.6).
    """

    name = "kernel"
    layout: LayoutName = "kernel"
    capabilities = Capabilities(reloads=False, keeps_kernel_header=True)

    def __init__(self, recovery: "Backend | None" = None) -> None:
        # reloads the crash kernel (kexec -p -s) when the kernel failed to update its header; None: never
        self.recovery = recovery
        self._expected: bytes | None = None
        self._state: Applied | None = None

    def loaded(self, kernel: KernelState) -> bytes | None:
        """What the kernel should hold after the last burst; None before the first reconcile."""
        return self._expected

    def state(self) -> Applied | None:
        return self._state

    def capacity(self, kernel: KernelState) -> int | None:
        """The kernel's segment (Ehdr + the phdr bytes it publishes), or None on kernels that do not say."""
        return None if kernel.elfcorehdr_size is None else EHDR_SIZE + kernel.elfcorehdr_size

    def begin(self, header: bytes, kernel: KernelState) -> Applied:
        """Done at once: nothing here outlives the call."""
        return self.apply(header, kernel)

    def apply(self, header: bytes, kernel: KernelState) -> Applied:
        """Record the header the kernel built on the event; nothing is written anywhere.

        A header larger than the segment is the one case the kernel refuses
        ("elfsz > memsz") and keeps the old header, so it is reported instead
        of recorded.
        """
        capacity = self.capacity(kernel)
        if capacity is not None and len(header) > align_up(capacity, PAGE_SIZE):
            raise BackendError(
                f"the header needs {len(header)} bytes but the kernel's elfcorehdr segment holds {capacity}: "
                "the kernel kept the old header; reload the crash kernel to get a larger segment")
        generation = self._state.generation + 1 if self._state else 1
        self._expected = header
        self._state = Applied(generation, hashlib.sha256(header).hexdigest(), len(header), capacity, time.time())
        logger.debug("the kernel updates the header itself; recorded generation %d", generation,
                     extra=log.fields("passive", generation=generation, backend=self.name))
        return self._state

    def load_changed(self, kernel: KernelState) -> str | None:
        """Never: the kernel's loader was someone else's, and its recovery reloads only a stale header."""
        return None

    def health(self, kernel: KernelState) -> Health:
        """A 0 is reported, never acted on (see `_problem`)."""
        cpu, memory = kernel.crash_hotplug_cpu, kernel.crash_hotplug_memory
        problem = _problem(cpu, memory, kernel.crash_loaded)
        extra: dict[str, object] = {
            "crash_hotplug_cpu": cpu,
            "crash_hotplug_memory": memory,
            "crash_loaded": kernel.crash_loaded,
            "capacity_bytes": self.capacity(kernel),
            "generation": self._state.generation if self._state else None,
        }
        if problem is not None:
            return Health(False, problem, extra)
        return Health(True, f"the kernel updates the header on hotplug (crash_hotplug cpu={_state_text(cpu)} "
                            f"memory={_state_text(memory)})", extra)


def _problem(cpu: int | None, memory: int | None, loaded: int | None) -> str | None:
    """Why the passive backend cannot vouch for the header, or None.

    crash_hotplug reads 0 for a moment while another loader holds the kexec
    lock, so a 0 is no reason to start reloading from here: it is reported,
    and an admin (or the next start's `auto`) decides.
    """
    if loaded == 0:
        return "NO CRASH KERNEL LOADED (kexec_crash_loaded reads 0)"
    if 1 not in (cpu, memory):
        return (f"the kernel no longer updates the header (crash_hotplug cpu={_state_text(cpu)} "
                f"memory={_state_text(memory)}); it reads 0 briefly while a load holds the kexec lock, "
                "so crashhpd does not reload: if this persists, restart crashhpd with backend \"auto\" or \"kexec\"")
    return None
