# SPDX-License-Identifier: GPL-2.0-only
"""KernelLog on the real /dev/kmsg: records the test writes there as root, read back as the kernel gives them.

The fields each record has are taken apart independently (tests/support/devkmsg.py, by the ABI
document's format) and compared with what the test wrote and with what KernelLog makes of it.
A record written from user space has facility LOG_USER: KernelLog takes a `crash hp:` line from any
facility today; issue 19 makes only the kernel's own (facility 0) count, and the assertions marked
so below then turn into the opposite.
"""

import os
from pathlib import Path

import pytest
from devkmsg import linked_root, marked, read_all, reader, write

from crashhpd.service.kmsg import KernelLog

pytestmark = pytest.mark.root

COMPLAINT = "crash hp: update elfcorehdr elfsz 8192 > memsz 4096"


@pytest.fixture
def kernel_log(tmp_path: Path):
    log = KernelLog(str(linked_root(tmp_path)))
    assert log.open() is None
    yield log
    log.close()


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


def test_the_reader_gives_the_message_of_a_crash_hp_record_and_nothing_of_others(kernel_log):
    fd = reader()
    try:
        unrelated, complaint = marked("memory: something unrelated"), marked(COMPLAINT)
        write(6, unrelated)
        write(3, complaint)
        written = {r.message for r in read_all(fd)}
    finally:
        os.close(fd)
    drained = kernel_log.drain()
    assert {unrelated, complaint} <= written  # both are in the real log
    assert complaint in drained.lines  # today's behaviour, a LOG_USER record counts: issue 19 turns it round
    assert unrelated not in drained.lines and not drained.ended


def test_what_the_log_held_before_the_open_is_never_read(tmp_path):
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
