# SPDX-License-Identifier: GPL-2.0-only
"""acpi_no_memhotplug: what the host needs in the crash kernel's command line, and the kexec backend's loads.

The loads run against tests/support/kexec_standin.py (this VM's kernel has no kexec_load); the command
line "read from the kernel" is what a snapshot would carry (the reader itself: tests/unit/sysview).
"""

from dataclasses import replace
from pathlib import Path

import pytest
from faketree import kernel
from standin import Standin, model, root, standin  # noqa: F401  (fixtures)

from crashhpd.backends.kexec import KexecBackend
from crashhpd.backends.kexec_cmdline import completed, for_reload, missing, needed
from crashhpd.config import KexecConfig
from crashhpd.sysview.kernel_state import KernelState

DEBIAN = "root=UUID=0b4e ro reset_devices systemd.unit=kdump-tools-dump.service nr_cpus=1 irqpoll usbcore.nousb"


def test_the_host_needs_it_only_where_acpi_lists_memory_devices():
    assert needed(0) == () and needed(3) == ("acpi_no_memhotplug",)


@pytest.mark.parametrize("cmdline,lacks", [
    (DEBIAN, ["acpi_no_memhotplug"]),
    (DEBIAN + " acpi_no_memhotplug", []),
    ('foo="acpi_no_memhotplug" bar', ["acpi_no_memhotplug"]),  # a value is no parameter
    (None, []),  # not read: status says null, nothing is claimed
])
def test_missing_looks_at_parameter_names(cmdline, lacks):
    assert missing(cmdline, needed(1)) == lacks


def test_a_reload_gets_the_command_line_read_without_what_its_loader_added():
    # kexec_file_load prefixes elfcorehdr=0x...; kexec-tools appends acpi_rsdp=0x... elfcorehdr=...K (6.1 guest)
    assert for_reload(f"elfcorehdr=0x3f000000 {DEBIAN}", needed(1)) == f"{DEBIAN} acpi_no_memhotplug"
    assert for_reload(f"{DEBIAN} acpi_rsdp=0xf5250 elfcorehdr=982388K", needed(1)) == f"{DEBIAN} acpi_no_memhotplug"
    assert completed(DEBIAN + " acpi_no_memhotplug", needed(1)) == DEBIAN + " acpi_no_memhotplug"


def backend(standin: Standin, state_dir: Path, **cfg: object) -> KexecBackend:
    return KexecBackend(KexecConfig(binary=str(standin.path), **cfg), str(standin.root), str(state_dir),
                        kernel(standin.root))


def loaded_by_the_distribution(root: Path, cmdline: str | None, devices: int = 2) -> KernelState:
    """The kexec state a snapshot hands the backend: a crash kernel someone loaded, its command line as read."""
    (root / "sys/kernel/kexec_crash_loaded").write_text("1\n")
    return replace(kernel(root), crash_cmdline=cmdline, acpi_memory_devices=devices)


def cmdline_of(standin: Standin) -> str:
    *_, last = standin.loads()
    return next(a for a in last["argv"] if a.startswith("--command-line="))[len("--command-line="):]


def test_its_own_loads_append_what_the_host_needs(standin, root, tmp_path):
    # stand-in: a real load needs a kernel with kexec_load
    b = backend(standin, tmp_path / "state")
    b.apply(model(root), replace(kernel(root), acpi_memory_devices=1))
    assert cmdline_of(standin) == "root=UUID=0b4e ro quiet nr_cpus=1 irqpoll acpi_no_memhotplug"
    b.apply(model(root), kernel(root))  # negative control: no ACPI memory device, nothing appended
    assert cmdline_of(standin) == "root=UUID=0b4e ro quiet nr_cpus=1 irqpoll"


def test_a_distribution_load_without_it_is_reloaded_once_with_the_command_line_read(standin, root, tmp_path):
    b = backend(standin, tmp_path / "state")
    state = loaded_by_the_distribution(root, f"{DEBIAN} elfcorehdr=1019424K")
    reason = b.load_changed(state)
    assert reason is not None and "lacks acpi_no_memhotplug" in reason
    b.apply(model(root), state)
    assert cmdline_of(standin) == f"{DEBIAN} acpi_no_memhotplug"
    # once: the same command line read again (the reload did not take) is not reloaded for again
    assert b.load_changed(state) is None
    # the completed one in force: nothing lacks, and the argv of the next load is the same
    done = replace(state, crash_cmdline=f"{DEBIAN} acpi_no_memhotplug elfcorehdr=1019424K")
    assert b.load_changed(done) is None
    b.apply(model(root), done)
    assert cmdline_of(standin) == f"{DEBIAN} acpi_no_memhotplug"


@pytest.mark.parametrize("state", [
    {"crash_cmdline": DEBIAN, "acpi_memory_devices": 0},  # no ACPI memory hotplug: nothing needed
    {"crash_cmdline": DEBIAN + " acpi_no_memhotplug"},  # it has it
    {"crash_cmdline": None},  # not read: no reload on a guess
])
def test_no_reload_where_nothing_lacks_or_nothing_is_known(standin, root, tmp_path, state):
    b = backend(standin, tmp_path / "state")
    assert b.load_changed(replace(loaded_by_the_distribution(root, DEBIAN), **state)) is None


def test_complete_cmdline_off_only_reports(standin, root, tmp_path):
    b = backend(standin, tmp_path / "state", complete_cmdline=False)
    assert b.load_changed(loaded_by_the_distribution(root, DEBIAN)) is None


def test_the_passive_backends_recovery_reloads_for_it_and_for_nothing_else(standin, root, tmp_path):
    recovery = KexecBackend(KexecConfig(binary=str(standin.path), file_load=True), str(root), str(tmp_path / "s"),
                            kernel(root), defer_to_the_kernel=False)
    state = replace(loaded_by_the_distribution(root, f"elfcorehdr=0x3f000000 {DEBIAN}"), crash_hotplug_memory=1)
    assert recovery.load_changed(state) is not None
    recovery.apply(model(root), state)
    assert cmdline_of(standin) == f"{DEBIAN} acpi_no_memhotplug"
    *_, last = standin.loads()
    assert "-s" in last["argv"]
    # a configuration that discovers another command line is no reason for the recovery to reload
    assert recovery.load_changed(replace(state, crash_cmdline=f"{DEBIAN} acpi_no_memhotplug")) is None
