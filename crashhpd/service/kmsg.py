# SPDX-License-Identifier: GPL-2.0-only
"""The kernel's own word on its header rewrites: its `crash hp:` records in /dev/kmsg, watched from the loop.

A kernel that rewrites the loaded header itself says so only in printk lines when it
cannot (the header outgrew its segment, or the kexec lock was taken). Only the kernel's
own records count: facility 0, which user space cannot write (Documentation/ABI/
testing/dev-kmsg), whose message starts with one of those failures' own words.
"""

import errno
import os
from dataclasses import dataclass, field

from ..sysview.files import under

KMSG = "dev/kmsg"
MAX_RECORDS = 64  # per turn of the loop
RECORD_BYTES = 8192  # one read is one record, shorter than this
KERNEL_FACILITY = 0  # LOG_KERN; a record written to /dev/kmsg from user space is LOG_USER whatever it asks
# The crash hotplug handlers' words when they leave the header as it was: x86's `update elfcorehdr elfsz %lu
# > memsz %lu` (the header outgrew its segment; the stale one stays), since Linux commit ea53ad9cf73b
# ("x86/crash: add x86 crash hotplug support", v6.6), and the generic handler's `kexec_trylock() failed,
# elfcorehdr may be inaccurate` (the update was skipped; later kernels say "kdump image"), since
# 247262756121 ("crash: add generic infrastructure for crash hotplug support", v6.6).
# The starts of the kernel's messages (pr_fmt "crash hp: ", and the lock message of kernels that printed it
# without one). Each is longer than a task name (TASK_COMM_LEN 16), so a process named `crash hp: x` whose
# segfault the kernel logs as "crash hp: x[pid]: segfault at ..." (facility 0 too) can never spell one.
PREFIXES = ("crash hp: update elfcorehdr", "crash hp: kexec_trylock() failed", "kexec_trylock() failed")


@dataclass(frozen=True, slots=True)
class Record:
    facility: int
    level: int
    message: str


def parse_record(record: bytes) -> Record | None:
    """`PRI,SEQ,TIME,FLAGS[,...];MESSAGE` and its ` KEY=value` lines; None for what is not such a record."""
    first = record.split(b"\n", 1)[0].decode(errors="replace")
    head, sep, message = first.partition(";")
    fields = head.split(",")
    if not sep or len(fields) < 4 or not fields[0].isdigit() or len(fields[0]) > 4:
        return None
    pri = int(fields[0])
    return Record(pri >> 3, pri & 7, message)


def complaint(record: Record | None) -> str | None:
    """The message of a kernel record about a failed header rewrite, else None."""
    if record is None or record.facility != KERNEL_FACILITY or not record.message.startswith(PREFIXES):
        return None
    return record.message


@dataclass(slots=True)
class Drained:
    lines: list[str] = field(default_factory=list)  # the kernel's complaints about its header, this turn
    more: bool = False  # stopped at MAX_RECORDS
    ended: bool = False  # end of file: not a kmsg after all (a /dev/null in its place), stop watching it


class KernelLog:
    def __init__(self, root: str) -> None:
        self.path = under(root, KMSG)
        self._fd: int | None = None

    def open(self) -> str | None:
        """Open at the end (old records say nothing about now); the reason when it cannot be watched."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            return f"{self.path}: {err.strerror}"
        try:
            os.lseek(fd, 0, os.SEEK_END)
        except OSError as err:
            os.close(fd)
            return f"{self.path}: not a kernel log ({err.strerror})"
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
                if err.errno == errno.EPIPE:  # overwritten before it was read: the next one is there
                    continue
                raise
            if not data:
                out.ended = True
                return out
            line = complaint(parse_record(data))
            if line is not None:
                out.lines.append(line)
        out.more = True
        return out
