# SPDX-License-Identifier: GPL-2.0-only
"""The real /dev/kmsg, for tests that write records to it as root and read them back.

A record written from user space gets the next sequence number, a timestamp and facility LOG_USER (1)
whatever its `<N>` prefix asks: the kernel keeps facility 0 for its own printk lines
(Documentation/ABI/testing/dev-kmsg). Read back it is `PRI,SEQ,TIME,FLAGS[,...];MESSAGE`,
PRI being facility * 8 + level. Each record written here carries a marker of its own, so that
what other writers put in the same log never counts.
"""

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

DEV_KMSG = "/dev/kmsg"
_RECORD = re.compile(r"(\d+),(\d+),(\d+),([^,;]*)[^;]*;(.*)")


@dataclass(frozen=True, slots=True)
class Record:
    facility: int
    level: int
    seq: int
    message: str


def parse(line: bytes) -> Record:
    """A record as read from /dev/kmsg, taken apart by the ABI document's format (the ` KEY=value` lines a
    driver's record may carry after its first line left out)."""
    match = _RECORD.fullmatch(line.decode(errors="replace").split("\n", 1)[0])
    assert match, f"not a /dev/kmsg record: {line!r}"
    pri = int(match[1])
    return Record(pri >> 3, pri & 7, int(match[2]), match[5])


def marked(text: str) -> str:
    """`text` and a marker no other record has."""
    return f"{text} (crashhpd test {uuid.uuid4().hex[:12]})"


def write(level: int, message: str) -> None:
    """One record, written as a user-space logger writes it; a new fd each, so the per-open rate limit
    of /dev/kmsg writes never drops one."""
    fd = os.open(DEV_KMSG, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, f"<{level}>{message}\n".encode())
    finally:
        os.close(fd)


def reader() -> int:
    """A reading fd at the log's end: what is written after this call, and nothing before."""
    fd = os.open(DEV_KMSG, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    os.lseek(fd, 0, os.SEEK_END)
    return fd


def read_all(fd: int) -> list[Record]:
    """Every record there now (one per read, as /dev/kmsg gives them)."""
    records = []
    while True:
        try:
            records.append(parse(os.read(fd, 8192)))
        except BlockingIOError:
            return records


def linked_root(root: Path) -> Path:
    """`root` with dev/kmsg a link to the real one: crashhpd reads it under its configured root."""
    (root / "dev").mkdir(parents=True, exist_ok=True)
    (root / "dev/kmsg").symlink_to(DEV_KMSG)
    return root
