# SPDX-License-Identifier: GPL-2.0-only
"""KernelLog on the real /dev/kmsg: records the test writes there as root, read back as the kernel gives them.

The fields each record has are taken apart independently (tests/support/devkmsg.py, by the ABI
document's format) and compared with what the test wrote and with what KernelLog makes of it.
A record written from user space has facility LOG_USER, so no test can put a kernel record (facility 0)
in the real log: those are the bytes of real kernel records handed to the pure parser, and the real log
proves the other half, that a user-space `crash hp:` line never counts.
"""

import logging
import os
import selectors
from pathlib import Path

import pytest
from devkmsg import linked_root, marked, read_all, reader, write

from crashhpd.service import kernel_watch
from crashhpd.service.kmsg import Drained, KernelLog, Record, complaint, parse_record

COMPLAINT = "crash hp: update elfcorehdr elfsz 8192 > memsz 4096"


@pytest.fixture
def kernel_log(tmp_path: Path):
    log = KernelLog(str(linked_root(tmp_path)))
    assert log.open() is None
    yield log
    log.close()


@pytest.mark.root
def test_a_record_written_to_the_real_kmsg_has_the_fields_the_kernel_gives_user_space_records():
    """The oracle the other tests lean on: facility LOG_USER whatever the prefix, the level asked, rising seqs."""
    fd = reader()
    try:
        first, second = marked("memory: something unrelated"), marked(COMPLAINT)
        write(6, first)
        write(3, second)
        mine = [r for r in read_all(fd) if r.message in (first, second)]
    finally:
        os.close(fd)
    assert [(r.facility, r.level, r.message) for r in mine] == [(1, 6, first), (1, 3, second)]
    assert mine[0].seq < mine[1].seq


@pytest.mark.root
def test_a_crash_hp_line_written_from_user_space_never_counts(kernel_log):
    """Anyone who may write /dev/kmsg (or any process named `crash hp: x` that segfaults) writes LOG_USER."""
    fd = reader()
    try:
        unrelated, complaint = marked("memory: something unrelated"), marked(COMPLAINT)
        write(6, unrelated)
        write(3, complaint)
        written = {r.message for r in read_all(fd)}
    finally:
        os.close(fd)
    drained = kernel_log.drain()
    assert {unrelated, complaint} <= written  # both are in the real log, as LOG_USER records
    assert drained.lines == [] and not drained.ended


@pytest.mark.root
def test_what_the_log_held_before_the_open_is_never_read(tmp_path, monkeypatch):
    """Counted here by facility-blind matching (the kernel's records cannot be written from user space)."""
    monkeypatch.setattr("crashhpd.service.kmsg.KERNEL_FACILITY", 1)
    old, new = marked(COMPLAINT), marked(COMPLAINT)
    write(3, old)
    log = KernelLog(str(linked_root(tmp_path)))
    assert log.open() is None
    try:
        write(3, new)
        lines = log.drain().lines
    finally:
        log.close()
    assert new in lines  # the negative control: the reader does read what follows its open
    assert old not in lines


# the first lines of records as the kernel gives them (Documentation/ABI/testing/dev-kmsg): PRI 3 is LOG_KERN|ERR
KERNEL_RECORD = b"3,1452,83172364,-;crash hp: update elfcorehdr elfsz 8192 > memsz 4096\n"
USER_RECORD = b"11,1453,83172400,-;crash hp: update elfcorehdr elfsz 8192 > memsz 4096\n"  # LOG_USER|ERR


@pytest.mark.parametrize(("record", "expected"), [
    (KERNEL_RECORD, "crash hp: update elfcorehdr elfsz 8192 > memsz 4096"),
    (b"6,90,1000,-,caller=T1;crash hp: kexec_trylock() failed, kdump image may be inaccurate\n SUBSYSTEM=cpu\n",
     "crash hp: kexec_trylock() failed, kdump image may be inaccurate"),
    (b"6,91,1000,-;kexec_trylock() failed, elfcorehdr may be inaccurate\n",
     "kexec_trylock() failed, elfcorehdr may be inaccurate"),
    (USER_RECORD, None),  # LOG_USER: written from user space
    (b"3,1454,83172401,-;a.out[4242]: segfault at 0 ip 0 sp 0 error 4 in crash hp: x\n", None),  # not at the start
    # the kernel's own segfault line for a process named `crash hp: updat` (15 bytes, the longest name)
    (b"6,1456,83172403,-;crash hp: updat[4242]: segfault at 0 ip 0000 sp 0000 error 4\n", None),
    (b"3,1455,83172402,-;memory: something unrelated\n", None),
    (b"crash hp: update elfcorehdr elfsz 8192 > memsz 4096\n", None),  # no record header: not from /dev/kmsg
    (b"99999,1,1,-;crash hp: x\n", None),  # no such priority
])
def test_only_the_kernels_own_records_with_its_prefix_are_complaints(record, expected):
    assert complaint(parse_record(record)) == expected


def test_a_record_is_taken_apart_into_facility_level_and_message():
    assert parse_record(KERNEL_RECORD) == Record(0, 3, "crash hp: update elfcorehdr elfsz 8192 > memsz 4096")
    assert parse_record(USER_RECORD) == Record(1, 3, "crash hp: update elfcorehdr elfsz 8192 > memsz 4096")


class ScriptedLog:
    """Stands in for KernelLog (a mock: the kernel's own records cannot be written from user space)."""

    path = "/dev/kmsg"

    def __init__(self, batches: list[list[str]]) -> None:
        self.batches = batches

    def drain(self) -> Drained:
        return Drained(lines=self.batches.pop(0))


def test_5000_complaints_are_one_journal_line_a_minute_and_every_one_counted(caplog):
    now = [1000.0]
    reported: list[str] = []
    watch = kernel_watch.KernelWatch("/", selectors.DefaultSelector(), lambda: "kernel",
                                     lambda kind, message: reported.append(kind), lambda: None, clock=lambda: now[0])
    lines = ["crash hp: update elfcorehdr elfsz 8192 > memsz 4096"] * 2500
    watch._log = ScriptedLog([lines, lines, ["crash hp: kexec_trylock() failed"]])  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, logger="crashhpd.service.kernel_watch"):
        watch._on_log(selectors.EVENT_READ)
        now[0] += 30
        watch._on_log(selectors.EVENT_READ)
        now[0] += kernel_watch.LOG_INTERVAL_S
        watch._on_log(selectors.EVENT_READ)
    said = [r.getMessage() for r in caplog.records]
    assert reported == ["kernel-header-stale"] * 5001
    assert len(said) == 2 and said[1].endswith("(4999 more such lines in the last 60 s)")
    assert watch.complaint == "the kernel could not update the loaded header: crash hp: kexec_trylock() failed"


@pytest.mark.parametrize("link", ["/dev/null", None])
def test_a_kmsg_that_cannot_be_watched_is_said_never_a_failure(tmp_path, link):
    """A container's /dev/kmsg may be a /dev/null (which epoll refuses) or missing."""
    (tmp_path / "dev").mkdir()
    if link is not None:
        (tmp_path / "dev/kmsg").symlink_to(link)
    selector = selectors.DefaultSelector()
    watch = kernel_watch.KernelWatch(str(tmp_path), selector, lambda: "kernel", lambda *_: None, lambda: None)
    watch.open()
    assert watch.log_watched is False and selector.get_map() == {}
    assert watch.log_unwatched_reason is not None and str(tmp_path / "dev/kmsg") in watch.log_unwatched_reason
    watch.close()


def test_a_complaint_clears_once_the_header_reads_back_in_sync_and_stays_while_stale():
    from crashhpd.elfcorehdr.coverage import Coverage, KernelView

    watch = kernel_watch.KernelWatch("/", selectors.DefaultSelector(), lambda: "kernel", lambda *_: None,
                                     lambda: None)
    watch._log = ScriptedLog([["crash hp: update elfcorehdr elfsz 8192 > memsz 4096"]])  # type: ignore[assignment]
    watch._on_log(selectors.EVENT_READ)
    stale = KernelView(True, None, 4096, Coverage("0" * 64, 1 << 27, 0, 0, ["+ RAM 0x1-0x2 (2 B)"]))
    watch._watch(stale, keeps_header=True, can_recover=False)
    assert watch.complaint is not None  # the negative control: stale, the complaint stands
    watch._watch(KernelView(True, None, 4096, Coverage("0" * 64, 0, 0, 0, [])), keeps_header=True,
                 can_recover=False)
    assert watch.complaint is None
