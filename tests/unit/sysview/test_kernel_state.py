# SPDX-License-Identifier: GPL-2.0-only
"""The kernel's kexec attributes, read in one place: sysview/kernel_state.py."""

import pytest
from faketree import write

from crashhpd.errors import ParseError
from crashhpd.sysview.kernel_state import (
    CRASH_HOTPLUG_CPU,
    CRASH_HOTPLUG_MEMORY,
    lockdown_forbids_kexec_load,
    read_kernel_state,
)


@pytest.mark.parametrize(("text", "forbids"), [
    ("none [integrity] confidentiality\n", True),
    ("none integrity [confidentiality]\n", True),
    ("[none] integrity confidentiality\n", False),
    (None, False),
])
def test_lockdown(text, forbids):
    assert lockdown_forbids_kexec_load(text) is forbids


@pytest.mark.parametrize(("cpu", "memory", "updates"), [("1", "1", True), ("0", "1", True), ("0", "0", False),
                                                         (None, None, False), ("1", None, True)])
def test_kernel_updates_header(tmp_path, cpu, memory, updates):
    for rel, value in zip((CRASH_HOTPLUG_CPU, CRASH_HOTPLUG_MEMORY), (cpu, memory)):
        if value is not None:
            write(tmp_path, rel, value + "\n")
    assert read_kernel_state(str(tmp_path)).updates_header is updates


def test_a_garbled_attribute_is_a_parse_error_naming_the_file(tmp_path):
    write(tmp_path, "sys/kernel/kexec_crash_loaded", "yes\n")
    with pytest.raises(ParseError, match="kexec_crash_loaded:1: expected a number"):
        read_kernel_state(str(tmp_path))


def test_the_kexec_attributes_are_read_under_their_new_names_too(tmp_path):
    """Newer kernels publish them under /sys/kernel/kexec/; the old names may be gone."""
    from crashhpd.sysview.snapshot import read_snapshot

    write(tmp_path, "proc/iomem", "00100000-3fffffff : System RAM\n  01000000-1fffffff : Crash kernel\n"
                                  "40000000-7fffffff : System RAM\n")
    write(tmp_path, "sys/kernel/kexec/crash_loaded", "1\n")
    write(tmp_path, "sys/kernel/kexec/crash_size", "268435456\n")
    write(tmp_path, "sys/kernel/kexec/crash_elfcorehdr_size", "917616\n")
    write(tmp_path, "sys/kernel/kexec/crash_cma_ranges", "50000000-5fffffff\n")
    state = read_kernel_state(str(tmp_path))
    assert (state.crash_loaded, state.crash_size, state.elfcorehdr_size) == (1, 268435456, 917616)
    assert read_snapshot(str(tmp_path)).crash_cma == ((0x50000000, 0x5FFFFFFF),)
    # where both are there the new name is read now (issue 21): test_where_both_are_published_the_new_names_are_read


OLD = {"sys/kernel/kexec_crash_loaded": "1\n", "sys/kernel/kexec_crash_size": "268435456\n",
       "sys/kernel/crash_elfcorehdr_size": "8192\n", "sys/kernel/kexec_crash_cma_ranges": "40000000-47ffffff\n"}
NEW = {"sys/kernel/kexec/crash_loaded": "1\n", "sys/kernel/kexec/crash_size": "268435456\n",
       "sys/kernel/kexec/crash_elfcorehdr_size": "8192\n", "sys/kernel/kexec/crash_cma_ranges": "40000000-47ffffff\n"}


@pytest.mark.parametrize(("files", "sysfs"), [(OLD, "kernel"), (NEW, "kernel/kexec")])
def test_either_spelling_alone_gives_every_attribute_and_says_which_it_was(tmp_path, files, sysfs):
    """Linux after 6.18 publishes /sys/kernel/kexec/; the old names go ("removed after 2028")."""
    from faketree import QEMU_GUEST, make_tree

    from crashhpd.sysview.snapshot import read_snapshot

    root = make_tree(tmp_path, QEMU_GUEST, extra=files)
    state = read_kernel_state(str(root))
    assert (state.crash_loaded, state.crash_size, state.elfcorehdr_size, state.sysfs) == (1, 1 << 28, 8192, sysfs)
    assert read_snapshot(str(root)).crash_cma == ((0x40000000, 0x47FFFFFF),)


def test_where_both_are_published_the_new_names_are_read(tmp_path):
    for rel, text in OLD.items():
        write(tmp_path, rel, "0\n" if rel.endswith("crash_loaded") else text)  # the old says 0: never read
    for rel, text in NEW.items():
        write(tmp_path, rel, text)
    state = read_kernel_state(str(tmp_path))
    assert (state.crash_loaded, state.sysfs) == (1, "kernel/kexec")
