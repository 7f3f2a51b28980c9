# SPDX-License-Identifier: GPL-2.0-only
"""Whether the crash kernel's reservation can still save a dump: what is reserved against what was measured.

crashkernel= is reserved once, at boot, and a hot-add never grows it (the
kernel's kexec_crash_size can only be shrunk: crash_shrink_memory() refuses a
larger size). What the kdump kernel needs is not computed from a formula: it is
the smallest crashkernel= with which Debian's kdump-tools saved a complete dump
in tests/bench/crashkernel_headroom.py (docs/benchmarks.md, "Crash kernel
headroom"), for the RAM measured at or above this host's. That run's crash image
had its own kernel and initrd; where the image loaded here is larger, the need is
at least the difference more (its segments sit in the reservation), and more than
that was measured (an initrd 32 MiB larger failed with 32 MiB more reserved: its
unpacked copy needs room too), so the need is then only a lower bound: short below
it, unknown above it. Above the largest RAM measured the need is unknown (None),
never extrapolated.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from .boot_params import Span
from .ranges import Range, size_text, total_bytes

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class Measured:
    """One row of the benchmark's table."""

    ram_bytes: int  # the guest's RAM after the hot-add
    reservation_bytes: int  # the smallest crashkernel= step that saved a complete dump
    loaded_bytes: int  # the crash image's segments in that run (memsz summed)


# docs/benchmarks.md: Debian 12, Linux 6.1.0-57-cloud-amd64, kdump-tools 1.8.1 and makedumpfile 1.7.2 (systemd in
# the kdump kernel), the same 7-segment crash image each time. 96 MiB failed at every size (the kdump kernel ran
# out of memory in its own boot); the need did not grow with RAM.
_LOADED = 56_967_168
MEASURED: tuple[Measured, ...] = tuple(Measured(gib * GIB, 128 * MIB, _LOADED) for gib in (2, 4, 16, 32, 64))


@dataclass(frozen=True, slots=True)
class Headroom:
    """The reservation, what a dump needs of it (None: not measurable here, `reason` says why)."""

    reserved_bytes: int | None
    needed_bytes: int | None
    reason: str  # how the need was found, or why it was not
    at_least: bool = False  # needed_bytes is a lower bound: the loaded image is larger than the one measured

    @property
    def headroom_bytes(self) -> int | None:
        if self.reserved_bytes is None or self.needed_bytes is None:
            return None
        return self.reserved_bytes - self.needed_bytes

    @property
    def short(self) -> bool:
        """Less reserved than measured to be needed. The need is already rounded up to the next step that
        saved a dump (64 to 128 MiB steps): that rounding is the margin, no other is added."""
        return self.headroom_bytes is not None and self.headroom_bytes < 0


def newly_short(before: Headroom, after: Headroom) -> bool:
    """Whether `after` starts a spell of being short: said once, not at every update while it lasts."""
    return after.short and not before.short


def reserved(crash_kernel: Sequence[Range], crash_cma: Sequence[Range], crash_size: int | None) -> int | None:
    """What the kdump kernel may use: every `Crash kernel` range of /proc/iomem (crashkernel= and its ,low part)
    and the crash CMA ranges; kexec_crash_size (the main range only) where /proc/iomem lists none."""
    if crash_kernel:
        return total_bytes(crash_kernel) + total_bytes(crash_cma)
    if crash_size:
        return crash_size + total_bytes(crash_cma)
    return total_bytes(crash_cma) or None


def needed(ram_bytes: int, segments: Sequence[Span] | None,
           measured: Sequence[Measured] = MEASURED) -> tuple[int | None, str, bool]:
    """The measured need for this much RAM, how it was found, and whether it is only a lower bound (the loaded
    image is larger than the measured one: its excess is added, and more may be needed); or why there is none."""
    if segments is None:
        return None, "the loaded crash image's segments could not be read", False
    if not segments:
        return None, "no crash image is loaded", False
    row = min((m for m in measured if m.ram_bytes >= ram_bytes), key=lambda m: m.ram_bytes, default=None)
    if row is None:
        largest = max((m.ram_bytes for m in measured), default=0)
        return None, (f"{size_text(ram_bytes)} of RAM is more than was measured ({size_text(largest)})"
                      if largest else "nothing was measured"), False
    loaded = sum(size for _, size in segments)
    extra = max(0, loaded - row.loaded_bytes)
    how = f"measured: {size_text(row.reservation_bytes)} saved a dump of {size_text(row.ram_bytes)} of RAM"
    if extra:
        how += (f" with a crash image {size_text(extra)} smaller than the one loaded, which needs at least that "
                "much more")
    return row.reservation_bytes + extra, how, extra > 0


def headroom(ram_bytes: int, segments: Sequence[Span] | None, crash_kernel: Sequence[Range],
             crash_cma: Sequence[Range], crash_size: int | None,
             measured: Sequence[Measured] = MEASURED) -> Headroom:
    need, reason, at_least = needed(ram_bytes, segments, measured)
    return Headroom(reserved(crash_kernel, crash_cma, crash_size), need, reason, at_least)
