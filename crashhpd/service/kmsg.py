# SPDX-License-Identifier: GPL-2.0-only
"""The kernel's own word on its header rewrites: `crash hp:` lines in /dev/kmsg, watched from the loop.

A kernel that updates the loaded header itself (Linux 6.6+) says so only in
printk lines when it cannot: `crash hp: update elfcorehdr elfsz %lu > memsz
%lu` (the header outgrew its segment; the stale one stays) or `kexec_trylock()
failed, kdump image may be inaccurate` (the update was skipped). Where the
header cannot be read back, these lines are the only signal; where it can,
they are a reason to check at once rather than after the next burst.

/dev/kmsg is read from its end at open (old lines say nothing about now),
non-blocking, one record per read, at most MAX_RECORDS per turn of the loop.
A record overwritten before it was read (EPIPE) is skipped. The path is under
the configured root, like /proc and /sys.
"""

import errno
import logging
import os
from dataclasses import dataclass, field

from ..sysview.files import under

logger = logging.getLogger(__name__)

KMSG = "dev/kmsg"
MAX_RECORDS = 64
RECORD_BYTES = 8192  # the kernel's records are shorter; a read is one record
TELLING = ("crash hp: ", "kexec_trylock() failed")


@dataclass(slots=True)
class Drained:
    lines: list[str] = field(default_factory=list)  # the kernel's complaints about its header, this turn
    more: bool = False  # stopped at MAX_RECORDS
    ended: bool = False  # not a kmsg after all (end of file): stop watching it


class KernelLog:
    def __init__(self, root: str) -> None:
        self.path = under(root, KMSG)
        self._fd: int | None = None
        self._partial = b""  # a line split across reads (a FIFO in tests; /dev/kmsg gives whole records)

    def open(self) -> str | None:
        """Open at the end; the reason when it cannot be watched (no /dev/kmsg, no permission)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            return f"{self.path}: {err.strerror}"
        try:
            os.lseek(fd, 0, os.SEEK_END)
        except OSError:
            pass  # a FIFO has no end to seek to: everything it carries is new
        self._fd = fd
        return None

    def fileno(self) -> int:
        assert self._fd is not None
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def drain(self) -> Drained:
        out = Drained()
        assert self._fd is not None
        for _ in range(MAX_RECORDS):
            try:
                data = os.read(self._fd, RECORD_BYTES)
            except BlockingIOError:
                return out
            except OSError as err:
                if err.errno == errno.EPIPE:  # overwritten before we read it: the next one is there
                    continue
                raise
            if not data:
                out.ended = True
                return out
            *lines, self._partial = (self._partial + data).split(b"\n")
            out.lines += [text for text in map(_message, lines) if any(mark in text for mark in TELLING)]
        out.more = True
        return out


def _message(record: bytes) -> str:
    """The text of a /dev/kmsg record, `PRI,SEQ,TIME,FLAGS;TEXT` (a plain line passes through)."""
    text = record.decode(errors="replace")
    head, sep, message = text.partition(";")
    return message if sep and head.count(",") >= 2 else text
