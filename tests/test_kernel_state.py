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
