# SPDX-License-Identifier: GPL-2.0-only
"""Reading kernel files under a configurable root: the one reader every stage uses.

The root defaults to `/` and points at a fake tree in tests, in the sandbox
and inside a test guest, so nothing in crashhpd hard-codes /proc or /sys. A
missing file is None (older kernels lack half of what crashhpd reads); any
other failure is a SnapshotError naming the file, never a traceback.
"""

import errno
import os
import re
import stat

from ..errors import ParseError, SnapshotError

_DIGITS = {10: re.compile(r"[0-9]+"), 16: re.compile(r"(?:0[xX])?[0-9a-fA-F]+")}
U64_MAX = (1 << 64) - 1
# digits of the largest 64-bit value: longer (leading zeros aside) is refused before int() sees it,
# which raises ValueError past 4300 decimal digits and is quadratic below that
_MAX_DIGITS = {10: len(str(U64_MAX)), 16: 16 + 2}


def parse_int(text: str, path: str, base: int = 10, signed: bool = False) -> int:
    """A kernel number: plain digits only (int() would also take '+' and '_'), at most 64 bits.

    Only a few attributes are signed (kexec_load_limit_panic reads -1 for unlimited).
    """
    word = text.strip()
    digits = word[1:] if signed and word.startswith("-") else word
    if (not _DIGITS[base].fullmatch(digits) or len(digits.lstrip("0")) > _MAX_DIGITS[base]
            or int(digits, base) > U64_MAX):
        kind = "64-bit" if signed else "unsigned, 64-bit"
        raise ParseError(path, 1, word, f"expected a number ({kind}{', in hex' if base == 16 else ''})")
    return int(word, base)


def under(root: str, rel: str) -> str:
    """A path inside the root; absolute paths (from a distribution's config) are taken inside it too."""
    return os.path.join(root, rel.lstrip("/"))


class NotRegularFile(OSError):
    """A directory, FIFO or device where a kernel file should be."""


def snapshot_error(path: str, err: OSError) -> SnapshotError:
    """The one-line error for a kernel file that is there but cannot be read."""
    if isinstance(err, PermissionError):
        return SnapshotError(f"{path}: permission denied; crashhpd must run as root")
    return SnapshotError(f"{path}: {err.strerror}")


def open_regular(path: str) -> int:
    """A read-only fd of the regular file `path`: OSError as os.open raises it, else NotRegularFile.

    Opened without blocking, then checked: a FIFO in a kernel file's place would block open() forever.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
    except BaseException:
        os.close(fd)
        raise
    if stat.S_ISREG(mode):
        return fd
    os.close(fd)
    code = errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL
    raise NotRegularFile(code, os.strerror(code) if code == errno.EISDIR else "not a regular file")


def read_text(root: str, rel: str) -> str | None:
    """A kernel file's text, or None when the kernel does not have it."""
    return _read(under(root, rel))


def read_int_in(directory: int, shown: str, name: str, base: int = 10) -> int | None:
    """read_int() of `name` inside a directory already open (its fd), whose path `shown` errors name: a snapshot
    reads two files of each of up to thousands of CPUs, and a path walk from the root per file costs more."""
    path = f"{shown}/{name}"
    text = _read(name, directory, path)
    return None if text is None else parse_int(text, path, base)


def _read(path: str, directory: int | None = None, shown: str | None = None) -> str | None:
    try:  # os.read, not open(): a snapshot reads some 130 sysfs files, and a text stream costs more than the read
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=directory)
        try:
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(fd)
        return b"".join(chunks).decode("utf-8", "replace")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise snapshot_error(shown or path, err) from None


def read_int(root: str, rel: str, base: int = 10, signed: bool = False) -> int | None:
    path = under(root, rel)
    text = _read(path)
    return None if text is None else parse_int(text, path, base, signed)
