"""The sandbox backend: a file that stands for the loaded elfcorehdr segment.

It keeps the kernel segment's semantics (a fixed capacity, the header at
offset 0, zero padding, an oversize header refused with the old one kept)
without kexec, so the whole daemon can run anywhere; it is the default.

A reader of `<state_dir>/elfcorehdr` must never see a torn header, whatever
happens to the writer (SIGKILL, a full disk). So nothing is ever written in
place: every apply writes a complete new segment and a new state.json to
temporary files, fsyncs them, then renames the segment over the old one and
state.json after it. A reader holds either the old inode or the new one.

The segment is the truth. A crash between the two renames leaves state.json
one generation behind; start-up notices (its sha256 no longer describes the
segment) and rebuilds it from the segment itself.

Every file is opened relative to a descriptor of the state directory, under
fixed names, with O_NOFOLLOW: nothing read or written can lie outside that
directory, and a symlink in place of the directory, the segment or
state.json is refused rather than followed. Only the directory's ancestors
may be symlinks (Debian's /var/run -> /run).

A different capacity (another max_cpus or max_memory_ranges) is a full
reload, as it is with kexec: the next apply writes a segment of the new size.
"""

import hashlib
import json
import logging
import os
import secrets
import stat
import time

from ..elfcorehdr import pack
from ..elfcorehdr.layout import LayoutName, preset
from ..errors import BackendError
from ..sysview.kernel_state import KernelState
from .base import Applied, Health

SEGMENT = "elfcorehdr"
STATE = "state.json"
TMP_PREFIX = ".tmp-"  # temporaries are .tmp-<name>-<random>; start-up removes leftovers
DIR_MODE = 0o755
FILE_MODE = 0o644

logger = logging.getLogger(__name__)


class SandboxBackend:
    """The segment as a file in `state_dir`; see the module docstring for the guarantees."""

    name = "sandbox"
    layout: LayoutName = "kernel"

    def __init__(self, state_dir: str, max_cpus: int,
                 max_memory_ranges: int = pack.DEFAULT_MAX_MEMORY_RANGES) -> None:
        self._dir = os.path.abspath(state_dir)
        self._capacity = pack.capacity(max_cpus, max_memory_ranges)
        _make_dir(self._dir)
        dir_fd = self._open_dir()
        try:
            _remove_temporaries(dir_fd)
            self._applied, self._header, self._generation = self._recover(dir_fd)
        finally:
            os.close(dir_fd)

    # --- the Backend protocol -------------------------------------------------------

    def loaded(self, kernel: KernelState) -> bytes | None:
        """Kept in memory: this process is the only writer, and the daemon asks on every burst."""
        return self._header

    def state(self) -> Applied | None:
        return self._applied

    def capacity(self, kernel: KernelState) -> int:
        """The configured capacity, which the next apply enforces; after a capacity change it
        differs from state().capacity, the size of the segment loaded now, until that apply."""
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
        dir_fd = self._open_dir()
        try:
            self._install(dir_fd, header, applied)
        finally:
            os.close(dir_fd)
        return applied

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

    def _open_dir(self) -> int:
        try:
            return os.open(self._dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as err:
            raise _refusal(self._dir, err, "cannot open the state directory") from None

    def _recover(self, dir_fd: int) -> tuple[Applied | None, bytes | None, int]:
        """What is loaded, from the files a previous run left; repairs state.json from the segment."""
        state_data = _read(dir_fd, STATE, self._path(STATE))
        recorded = None if state_data is None else _parse_state(state_data, self._path(STATE))
        last = recorded.generation if recorded else 0
        segment = _read(dir_fd, SEGMENT, self._path(SEGMENT))
        if segment is None:
            return None, None, last
        if recorded is not None and _describes(recorded, segment):
            return recorded, segment[:recorded.header_size], last
        applied, header = self._repair(dir_fd, segment, last + 1)
        return applied, header, applied.generation

    def _repair(self, dir_fd: int, segment: bytes, generation: int) -> tuple[Applied, bytes]:
        """Rewrite state.json from the segment, which a crash between the two renames left newer."""
        size = _header_length(segment, preset(self.layout).align)
        if size is None:
            raise BackendError(f"{self._path(SEGMENT)}: not one complete ELF core header with zero padding; "
                               f"remove it to load a new one")
        header = segment[:size]
        mtime = os.stat(SEGMENT, dir_fd=dir_fd, follow_symlinks=False).st_mtime
        applied = _describe(header, generation, len(segment), mtime)
        try:
            _replace(dir_fd, _stage(dir_fd, STATE, _state_bytes(applied)), STATE)
        except OSError as err:
            raise BackendError(f"{self._path(STATE)}: cannot repair: {err.strerror}") from None
        logger.warning("%s did not describe %s (a crash between two renames); rebuilt it: generation %d",
                       self._path(STATE), self._path(SEGMENT), applied.generation)
        return applied, header

    def _install(self, dir_fd: int, header: bytes, applied: Applied) -> None:
        """Stage both files first, so a full disk fails before anything is replaced."""
        staged: list[str] = []
        try:
            for name in (SEGMENT, STATE):
                _check_target(dir_fd, name, self._path(name))
            staged.append(_stage(dir_fd, SEGMENT, header.ljust(self._capacity, b"\0")))
            staged.append(_stage(dir_fd, STATE, _state_bytes(applied)))
            os.rename(staged[0], SEGMENT, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as err:
            _discard(dir_fd, staged)
            raise BackendError(f"{self._path(SEGMENT)}: cannot apply generation {applied.generation}: "
                               f"{err.strerror}; generation {self._generation} stays loaded") from None
        # From here every reader sees the new header: it is applied, whatever happens to state.json.
        self._applied, self._header, self._generation = applied, header, applied.generation
        try:
            os.fsync(dir_fd)
            _replace(dir_fd, staged[1], STATE)
        except OSError as err:
            _discard(dir_fd, staged[1:])
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
    if len(segment) < pack.EHDR_SIZE or segment[:4] != pack.E_IDENT[:4]:
        return None
    fields = pack.EHDR.unpack_from(segment)
    phoff, phentsize, phnum = fields[5], fields[9], fields[10]
    if phoff != pack.EHDR_SIZE or phentsize != pack.PHDR_SIZE:
        return None
    used = pack.EHDR_SIZE + pack.PHDR_SIZE * phnum
    if used > len(segment) or len(segment.rstrip(b"\0")) > used:
        return None
    return min(pack.align_up(used, align), len(segment))


def _usage(applied: Applied, configured: int) -> str:
    capacity = applied.capacity or configured
    detail = (f"segment {capacity} bytes, {applied.header_size} used "
              f"({100 * applied.header_size / capacity:.1f}%)")
    if capacity != configured:
        detail += f"; the next apply reloads it with {configured} bytes"
    return detail


# --- file operations, all relative to the state directory's descriptor -------------------


def _make_dir(path: str) -> None:
    try:
        os.makedirs(path, mode=DIR_MODE)
    except FileExistsError:
        return
    except OSError as err:
        raise BackendError(f"{path}: cannot create the state directory: {err.strerror}") from None
    os.chmod(path, DIR_MODE)  # the umask must not narrow it: readers of the segment are not root


def _refusal(path: str, err: OSError, doing: str) -> BackendError:
    if os.path.islink(path):
        return BackendError(f"{path} is a symlink; the sandbox backend refuses to follow it")
    return BackendError(f"{path}: {doing}: {err.strerror}")


def _check_target(dir_fd: int, name: str, path: str) -> None:
    """Refuse to replace a symlink or anything that is not a plain file."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise BackendError(f"{path} is a symlink; the sandbox backend refuses to follow it")
    if not stat.S_ISREG(mode):
        raise BackendError(f"{path} is not a regular file; the sandbox backend refuses to replace it")


def _read(dir_fd: int, name: str, path: str) -> bytes | None:
    _check_target(dir_fd, name, path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _refusal(path, err, "cannot read") from None
    with open(fd, "rb") as f:
        return f.read()


def _temp_prefix(name: str) -> str:
    return f"{TMP_PREFIX}{name}-"


def _stage(dir_fd: int, name: str, data: bytes) -> str:
    """Write `data` to a new temporary next to `name` and fsync it; on failure nothing is left."""
    temp = _temp_prefix(name) + secrets.token_hex(6)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE,
                 dir_fd=dir_fd)
    try:
        os.fchmod(fd, FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        _discard(dir_fd, [temp])
        raise
    finally:
        os.close(fd)
    return temp


def _replace(dir_fd: int, temp: str, name: str) -> None:
    try:
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError:
        _discard(dir_fd, [temp])
        raise
    os.fsync(dir_fd)


def _discard(dir_fd: int, temps: list[str]) -> None:
    for temp in temps:
        try:
            os.unlink(temp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass


def _remove_temporaries(dir_fd: int) -> None:
    """Temporaries of an apply that was killed: never renamed, so never seen by a reader.

    Only this backend's own: the kexec backend keeps its files in the same directory.
    """
    ours = (_temp_prefix(SEGMENT), _temp_prefix(STATE))
    _discard(dir_fd, [entry for entry in os.listdir(dir_fd) if entry.startswith(ours)])
