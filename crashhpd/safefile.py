# SPDX-License-Identifier: GPL-2.0-only
"""Files replaced whole, in one directory, without following anything planted there.

Every file crashhpd writes (the sandbox segment and its state.json, the kexec
backend's model header and record, the metrics textfile) goes through `SafeDir`:
a reader sees the old file or the new one, never a torn one, and a symlink, FIFO
or device planted at a name is refused, never followed. A refusal is an
`UnsafeFileError`, one line that names the path.
"""

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

TMP_PREFIX = ".tmp-"  # temporaries are .tmp-<name>-<random>
DIR_MODE = 0o700
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # a FIFO opens, and is then refused
READ_CHUNK = 1 << 20


class UnsafeFileError(OSError):
    """A file or directory crashhpd refuses to use; its text is one line that starts with the path.

    Every other error from here is the system's own OSError, its `filename` the absolute path of the
    file concerned, never a temporary's random name, so the same failure reads the same each time.
    """

    def __init__(self, path: str, problem: str, code: int = errno.EPERM) -> None:
        super().__init__(code, f"{path} {problem}", path)

    def __str__(self) -> str:
        return self.strerror or ""


def describe(err: OSError, path: str) -> str:
    """One line for an error from here: a refusal's own, else `FILE: strerror` (`path` if it names none)."""
    if isinstance(err, UnsafeFileError):
        return str(err)
    return f"{err.filename if isinstance(err.filename, str) else path}: {err.strerror or err}"


@dataclass(frozen=True, slots=True)
class Staged:
    """A complete, fsynced temporary that `SafeDir.commit` renames over `name`."""

    name: str
    temp: str


class SafeDir:
    """One directory, held open by a descriptor, in which files are read and replaced whole.

    Everything is opened relative to that descriptor, itself opened with
    O_NOFOLLOW: a symlink in place of the directory is refused, and nothing
    read or written can lie outside it, even if the directory is renamed
    meanwhile. Only its ancestors may be symlinks (Debian's /var/run -> /run).
    Open it for each piece of work (`with SafeDir(path) as d:`), so a
    directory replaced while the daemon runs is checked again.

    Two kinds of directory (see `_check_dir` for why each is refused):
    - crashhpd's own (`SafeDir(path, mode)`), e.g. the state directory:
      created with `mode` when missing (0700 by default; the umask does not
      narrow or widen it);
    - another program's (`SafeDir(path, shared=True)`), e.g. node_exporter's
      textfile directory: it must exist, crashhpd never creates it, and it
      may belong to anyone (often the prometheus user) and be group-writable.
    """

    def __init__(self, path: str, mode: int = DIR_MODE, *, shared: bool = False) -> None:
        self.path = os.path.abspath(path)
        self._fd = _open_dir(self.path, None if shared else mode)
        try:
            _check_dir(self.path, os.fstat(self._fd), shared)
        except BaseException:
            os.close(self._fd)
            raise

    @property
    def fd(self) -> int:
        """The directory's descriptor, for a look (os.stat with dir_fd) this class does not offer."""
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "SafeDir":
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def path_of(self, name: str) -> str:
        return os.path.join(self.path, name)

    # --- reading -------------------------------------------------------------------------------

    def read(self, name: str, limit: int) -> bytes | None:
        """The whole of regular file `name`, None when it is absent; never more than `limit` bytes.

        A symlink, FIFO, device or directory is refused without reading it,
        and so is a file larger than `limit`: at most limit + 1 bytes are
        read, even from a file that grows meanwhile.
        """
        path = self.path_of(name)
        with _naming(path):
            if not self._check_target(name, "read"):
                return None
            try:
                fd = os.open(name, READ_FLAGS, dir_fd=self._fd)
            except FileNotFoundError:
                return None
            except OSError as err:
                if err.errno == errno.ELOOP:  # a symlink swapped in after the check
                    raise _symlink(path) from None
                raise
            try:
                return _read_regular(fd, path, limit)
            finally:
                os.close(fd)

    # --- writing -------------------------------------------------------------------------------

    def write(self, name: str, data: bytes, mode: int) -> None:
        """Replace `name` with `data`, permissions `mode`: whole or not at all.

        A temporary is written and fsynced (`stage`), renamed over `name` and
        the directory fsynced (`commit`), so a reader sees the old file or the
        new one; on any failure before the rename (a full disk, SIGKILL) the old
        file is untouched, and all that is left is a temporary no reader looks
        at. An error after the rename (the directory's fsync) leaves the new
        file in place, possibly not yet durable.
        """
        self.check_target(name)
        self.commit(self.stage(name, data, mode))

    def check_target(self, name: str) -> None:
        """Refuse a `name` that is a symlink or not a regular file; an absent one is fine."""
        with _naming(self.path_of(name)):
            self._check_target(name, "replace")

    def stage(self, name: str, data: bytes, mode: int) -> Staged:
        """Write `data` to a new temporary for `name` and fsync it; on failure nothing is left.

        The temporary, `.tmp-<name>-<random>`, is created with O_EXCL|O_NOFOLLOW:
        a symlink or FIFO planted at any name is never followed or opened.
        Stage every file of an update first, so a full disk fails before
        anything is replaced; then commit them in the order readers need.
        """
        temp = _temp_prefix(name) + secrets.token_hex(6)
        with _naming(self.path_of(name)):
            fd = os.open(temp, CREATE_FLAGS, mode, dir_fd=self._fd)
            try:
                os.fchmod(fd, mode)  # the umask must not change it
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except BaseException:
                self._unlink(temp)
                raise
            finally:
                os.close(fd)
        return Staged(name, temp)

    def commit(self, staged: Staged, sync: bool = True) -> None:
        """Rename a staged temporary over its name (removing it if that fails), then fsync the directory.

        sync=False leaves the fsync to the caller (`sync()`), who can then
        tell a failed rename (nothing replaced) from a failed fsync (replaced).
        """
        try:
            with _naming(self.path_of(staged.name)):
                os.rename(staged.temp, staged.name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        except BaseException:
            self._unlink(staged.temp)
            raise
        if sync:
            self.sync()

    def sync(self) -> None:
        """fsync the directory: the renames done so far survive a power cut."""
        with _naming(self.path):
            os.fsync(self._fd)

    def discard(self, *staged: Staged) -> None:
        """Remove temporaries that will not be committed (after one of an update's steps failed)."""
        for s in staged:
            self._unlink(s.temp)

    def remove(self, name: str) -> None:
        """Remove `name` (a link itself, never what it points to); an absent one is fine."""
        with _naming(self.path_of(name)):
            try:
                os.unlink(name, dir_fd=self._fd)
            except FileNotFoundError:
                pass

    def remove_temporaries(self, names: tuple[str, ...]) -> None:
        """Remove what writes of `names` left when they were killed: never renamed, never seen by a reader.

        Only those of `names`: another writer may share the directory.
        """
        ours = tuple(_temp_prefix(name) for name in names)
        with _naming(self.path):
            for entry in os.listdir(self._fd):
                if entry.startswith(ours):
                    self._unlink(entry)

    # --- helpers -------------------------------------------------------------------------------

    def _check_target(self, name: str, doing: str) -> bool:
        """Whether `name` exists; raises if it is something crashhpd must not follow or `doing`."""
        try:
            mode = os.stat(name, dir_fd=self._fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(mode):
            raise _symlink(self.path_of(name))
        if not stat.S_ISREG(mode):
            raise _irregular(self.path_of(name), doing)
        return True

    def _unlink(self, entry: str) -> None:
        try:
            os.unlink(entry, dir_fd=self._fd)
        except FileNotFoundError:
            pass


def _temp_prefix(name: str) -> str:
    return f"{TMP_PREFIX}{name}-"


@contextlib.contextmanager
def _naming(path: str) -> Iterator[None]:
    """System errors name `path`, the file a reader knows, not a name relative to the descriptor."""
    try:
        yield
    except UnsafeFileError:
        raise
    except OSError as err:
        raise OSError(err.errno, err.strerror, path) from None  # the same subclass: FileNotFoundError, ...


def read_file(path: str, limit: int) -> bytes:
    """A regular file by path (symlinks followed: an admin's file may be one), capped at `limit` bytes.

    For a file that is not in a directory of crashhpd's own, such as its
    configuration: a FIFO or device there is refused instead of blocking the
    daemon or filling its memory.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        return _read_regular(fd, path, limit)
    finally:
        os.close(fd)


def _read_regular(fd: int, path: str, limit: int) -> bytes:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # swapped in after the check by name
        raise _irregular(path, "read")
    if st.st_size > limit:
        raise _too_large(path, limit)
    chunks: list[bytes] = []
    left = limit + 1  # one byte more tells a file that grew past the limit
    while left:
        chunk = os.read(fd, min(left, READ_CHUNK))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        left -= len(chunk)
    raise _too_large(path, limit)


def _symlink(path: str) -> UnsafeFileError:
    return UnsafeFileError(path, "is a symlink; crashhpd refuses to follow it", errno.ELOOP)


def _irregular(path: str, doing: str) -> UnsafeFileError:
    return UnsafeFileError(path, f"is not a regular file; crashhpd refuses to {doing} it", errno.EINVAL)


def _too_large(path: str, limit: int) -> UnsafeFileError:
    return UnsafeFileError(path, f"is larger than {limit} bytes; crashhpd refuses to read it", errno.EFBIG)


def _open_dir(path: str, create_mode: int | None) -> int:
    """The directory's descriptor; created with `create_mode` when it is missing and that is not None."""
    try:
        return os.open(path, DIR_FLAGS)
    except FileNotFoundError:
        if create_mode is None:
            raise
    except OSError:
        if os.path.islink(path):
            raise _symlink(path) from None
        raise
    try:
        os.makedirs(path, create_mode)
    except FileExistsError:  # made meanwhile by someone else: the checks decide
        return _open_dir(path, None)
    fd = _open_dir(path, None)
    os.fchmod(fd, create_mode)  # the umask must not change it; fchmod, on the directory just opened
    return fd


def _check_dir(path: str, st: os.stat_result, shared: bool) -> None:
    """Refuse a directory someone else could change under crashhpd.

    Its own must be the effective uid's and writable by nobody else: whoever
    can write it could remove or swap what crashhpd reads back at start. A
    shared one is refused only when anyone may replace files in it
    (world-writable without the sticky bit): crashhpd's own writes would still
    be safe there, but what it wrote could not be trusted by the time it is read.
    """
    mode = stat.S_IMODE(st.st_mode)
    if shared:
        if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
            raise UnsafeFileError(path, f"is writable by everyone without the sticky bit (mode {mode:04o}); "
                                        f"crashhpd refuses to write there")
        return
    if st.st_uid != os.geteuid():
        raise UnsafeFileError(path, f"is owned by uid {st.st_uid}, not {os.geteuid()}; crashhpd refuses a "
                                    f"directory another user controls")
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeFileError(path, f"is writable by group or others (mode {mode:04o}); crashhpd refuses it")
