# SPDX-License-Identifier: GPL-2.0-only
"""The sandbox backend, the default: a file that stands for the loaded elfcorehdr segment.

It keeps the kernel segment's semantics (a fixed capacity, the header at
offset 0, zero padding, an oversize header refused with the old one kept)
without kexec, so the whole daemon can run anywhere. A reader of
`<state_dir>/elfcorehdr` never sees a torn header, whatever happens to the
writer, and the segment, not state.json, is the truth.
"""

import hashlib
import json
import logging
import os
import stat
import time

from ..abi import elf
from ..elfcorehdr import pack
from ..elfcorehdr.layout import LayoutName, preset
from ..errors import BackendError
from ..safefile import SafeDir, Staged, UnsafeFileError
from ..sysview.kernel_state import KernelState
from .base import Applied, Backoff, Capabilities, Health

SEGMENT = "elfcorehdr"
STATE = "state.json"
DIR_MODE = 0o700  # root's (the daemon's euid) and writable by nobody else: SafeDir refuses any other
# The header holds the KASLR'd kernel address, the direct-map base and the RAM map, which the kernel hides
# from other users (/proc/kallsyms, /proc/iomem); `crashhpctl header` serves it to the control socket's group.
FILE_MODE = 0o600
STATE_LIMIT = 64 * 1024  # a few hundred bytes in practice

logger = logging.getLogger(__name__)


class SandboxBackend:
    """The segment as a file in `state_dir`, read and written through crashhpd.safefile.

    Both files are opened relative to a descriptor of the state directory,
    under fixed names, with O_NOFOLLOW: a symlink in place of the directory,
    the segment or state.json is refused rather than followed.
    """

    name = "sandbox"
    capabilities = Capabilities(reloads=False, keeps_kernel_header=False)
    recovery = None  # it stands in for no kernel: there is nothing to recover
    layout: LayoutName = "kernel"

    def __init__(self, state_dir: str, max_cpus: int,
                 max_memory_ranges: int = pack.DEFAULT_MAX_MEMORY_RANGES) -> None:
        self._backoff = Backoff()
        self._dir = os.path.abspath(state_dir)
        self._capacity = pack.capacity(max_cpus, max_memory_ranges)
        with self._open_dir() as d:
            try:
                d.remove_temporaries((SEGMENT, STATE))  # an apply that was killed: never seen by a reader
            except OSError as err:
                raise _failure(err, self._dir, "cannot remove old temporaries") from None
            self._applied, self._header, self._generation = self._recover(d)

    # --- the Backend protocol -------------------------------------------------------

    def loaded(self, kernel: KernelState) -> bytes | None:
        """Kept in memory: this process is the only writer, and the daemon asks on every burst."""
        return self._header

    def state(self) -> Applied | None:
        return self._applied

    def capacity(self, kernel: KernelState) -> int:
        """The configured capacity, which the next apply enforces; after a capacity change it
        differs from state().capacity, the size of the segment loaded now, until that apply.

        A different capacity (another max_cpus or max_memory_ranges) is a full
        reload, as it is with kexec: the next apply writes a segment of the new size.
        """
        return self._capacity

    def begin(self, header: bytes, kernel: KernelState) -> Applied:
        """Done at once: nothing here outlives the call."""
        return self.apply(header, kernel)

    def apply(self, header: bytes, kernel: KernelState) -> Applied:
        if len(header) > self._capacity:
            raise BackendError(
                f"header of {len(header)} bytes does not fit the {self._capacity}-byte segment "
                f"(elfsz > memsz); raise max_cpus or max_memory_ranges to reload with a larger one"
            )
        applied = _describe(header, self._generation + 1, self._capacity, time.time())
        try:
            with self._open_dir() as d:
                self._install(d, header, applied)
        except BackendError as err:  # a full disk, say: tried again on the daemon's timer until space returns
            raise BackendError(str(err), retry_after=self._backoff.take()) from None
        self._backoff.reset()
        return applied

    def load_changed(self, kernel: KernelState) -> str | None:
        """Never: a file has no load to change."""
        return None

    def health(self, kernel: KernelState) -> Health:
        extra: dict[str, object] = {
            "generation": self._generation,
            "sha256": self._applied.sha256 if self._applied else None,
            "capacity_bytes": self._applied.capacity if self._applied else self._capacity,
            "header_bytes": self._applied.header_size if self._applied else 0,
            "path": self._path(SEGMENT),
        }
        if self._applied is None:
            return Health(True, f"nothing loaded yet; the first apply loads a {self._capacity}-byte segment", extra)
        problem = self._segment_problem(self._applied)
        if problem:
            return Health(False, problem, extra)
        return Health(True, _usage(self._applied, self._capacity), extra)

    # --- I/O ------------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        return os.path.join(self._dir, name)

    def _open_dir(self) -> SafeDir:
        try:
            return SafeDir(self._dir, DIR_MODE)
        except OSError as err:
            raise _failure(err, self._dir, "cannot open the state directory") from None

    def _read(self, d: SafeDir, name: str, limit: int) -> bytes | None:
        try:
            return d.read(name, limit)
        except OSError as err:
            raise _failure(err, self._path(name), "cannot read") from None

    def _recover(self, d: SafeDir) -> tuple[Applied | None, bytes | None, int]:
        """What is loaded, from the files a previous run left; repairs state.json from the segment.

        The segment is the truth: a crash between the two renames leaves
        state.json one generation behind, its sha256 no longer describing the
        segment, and it is rebuilt from the segment itself.
        """
        state_data = self._read(d, STATE, STATE_LIMIT)
        recorded = None if state_data is None else _parse_state(state_data, self._path(STATE))
        last = recorded.generation if recorded else 0
        segment = self._read(d, SEGMENT, elf.MAX_HEADER_SIZE)
        if segment is None:
            return None, None, last
        if recorded is not None and _describes(recorded, segment):
            return recorded, segment[:recorded.header_size], last
        applied, header = self._repair(d, segment, last + 1)
        return applied, header, applied.generation

    def _repair(self, d: SafeDir, segment: bytes, generation: int) -> tuple[Applied, bytes]:
        """Rewrite state.json from the segment, which a crash between the two renames left newer."""
        size = _header_length(segment, preset(self.layout).align)
        if size is None:
            raise BackendError(f"{self._path(SEGMENT)}: not one complete ELF core header with zero padding; "
                               f"remove it to load a new one")
        header = segment[:size]
        mtime = os.stat(SEGMENT, dir_fd=d.fd, follow_symlinks=False).st_mtime
        applied = _describe(header, generation, len(segment), mtime)
        try:
            d.write(STATE, _state_bytes(applied), FILE_MODE)
        except OSError as err:
            raise _failure(err, self._path(STATE), "cannot repair") from None
        logger.warning("%s did not describe %s (a crash between two renames); rebuilt it: generation %d",
                       self._path(STATE), self._path(SEGMENT), applied.generation)
        return applied, header

    def _install(self, d: SafeDir, header: bytes, applied: Applied) -> None:
        """Stage both files first, so a full disk fails before anything is replaced.

        Nothing is written in place: a complete new segment and a new
        state.json are written to temporaries and fsynced, then the segment is
        renamed over the old one and state.json after it, so a reader holds
        either the old inode or the new one, whatever happens (SIGKILL, a full disk).
        """
        staged: list[Staged] = []
        try:
            for name in (SEGMENT, STATE):
                d.check_target(name)
            staged.append(d.stage(SEGMENT, header.ljust(self._capacity, b"\0"), FILE_MODE))
            staged.append(d.stage(STATE, _state_bytes(applied), FILE_MODE))
            d.commit(staged[0], sync=False)
        except OSError as err:
            d.discard(*staged)
            raise _failure(err, self._path(SEGMENT), f"cannot apply generation {applied.generation}",
                           f"; generation {self._generation} stays loaded") from None
        # From here every reader sees the new header: it is applied, whatever happens to state.json.
        self._applied, self._header, self._generation = applied, header, applied.generation
        try:
            d.sync()
            d.commit(staged[1])
        except OSError as err:
            d.discard(staged[1])
            logger.warning("%s: generation %d applied but not recorded (%s); the next start rebuilds it",
                           self._path(STATE), applied.generation, err.strerror)

    def _segment_problem(self, applied: Applied) -> str | None:
        """Whether the segment file is still the one applied (someone may have removed or replaced it)."""
        path = self._path(SEGMENT)
        try:
            st = os.lstat(path)
        except OSError as err:
            return f"{path}: {err.strerror}; the next change reloads it"
        if not stat.S_ISREG(st.st_mode) or st.st_size != applied.capacity:
            return f"{path}: no longer the {applied.capacity}-byte segment applied; the next change reloads it"
        return None


# --- pure helpers ---------------------------------------------------------------------------


def _describe(header: bytes, generation: int, capacity: int, at: float) -> Applied:
    return Applied(generation, hashlib.sha256(header).hexdigest(), len(header), capacity, at)


def _state_bytes(applied: Applied) -> bytes:
    fields = {
        "generation": applied.generation,
        "sha256": applied.sha256,
        "header_size": applied.header_size,
        "capacity": applied.capacity,
        "applied_at": applied.applied_at,
    }
    return (json.dumps(fields, indent=2) + "\n").encode()


def _parse_state(data: bytes, path: str) -> Applied:
    try:
        fields = json.loads(data)
        return Applied(int(fields["generation"]), str(fields["sha256"]), int(fields["header_size"]),
                       int(fields["capacity"]), float(fields["applied_at"]))
    except (ValueError, KeyError, TypeError) as err:
        raise BackendError(f"{path}: unreadable ({type(err).__name__}: {err}); "
                           f"remove it and the segment to load anew") from None


def _describes(state: Applied, segment: bytes) -> bool:
    """Whether state.json is about this segment: same size, same header, nothing but zeros after it."""
    size = state.header_size
    return (state.capacity == len(segment)
            and hashlib.sha256(segment[:size]).hexdigest() == state.sha256
            and len(segment.rstrip(b"\0")) <= size)


def _header_length(segment: bytes, align: int) -> int | None:
    """The header's length at the start of a segment, or None if it is not one complete header.

    e_phnum gives the bytes in use; the header itself was padded to the
    layout's alignment, and the daemon compares loaded() with what it builds,
    so the same padding is put back (never past the segment's end).
    """
    if len(segment) < elf.EHDR_SIZE or segment[:4] != elf.E_IDENT[:4]:
        return None
    fields = elf.EHDR.unpack_from(segment)
    phoff, phentsize, phnum = fields[5], fields[9], fields[10]
    if phoff != elf.EHDR_SIZE or phentsize != elf.PHDR_SIZE:
        return None
    used = elf.EHDR_SIZE + elf.PHDR_SIZE * phnum
    if used > len(segment) or len(segment.rstrip(b"\0")) > used:
        return None
    return min(elf.align_up(used, align), len(segment))


def _usage(applied: Applied, configured: int) -> str:
    capacity = applied.capacity or configured
    detail = (f"segment {capacity} bytes, {applied.header_size} used "
              f"({100 * applied.header_size / capacity:.1f}%)")
    if capacity != configured:
        detail += f"; the next apply reloads it with {configured} bytes"
    return detail


def _failure(err: OSError, path: str, doing: str, then: str = "") -> BackendError:
    """A refusal is its own line (it names the path); any other error says what was being done."""
    if isinstance(err, UnsafeFileError):
        return BackendError(str(err))
    return BackendError(f"{path}: {doing}: {err.strerror}{then}")
