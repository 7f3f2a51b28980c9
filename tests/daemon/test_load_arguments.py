# SPDX-License-Identifier: GPL-2.0-only
"""The load the admin configured is the load the kernel holds: a changed load is one reload, at SIGHUP or at
start; a kernel header the reload did not reach is never "nothing to do".

The kexec backend with the stand-in kexec on a fake root; the argv it was run with is the oracle.
"""

import json
import signal
import subprocess
from pathlib import Path

from daemonproc import CRASHHPD, DaemonProcess, daemon_status, kexec_setup, wait_for
from fakekcore import CrashKernel
from faketree import QEMU_GUEST, QEMU_HOT_ADD_BASE, hot_added, replace_iomem

from crashhpd.abi.elf import align_up
from crashhpd.elfcorehdr.pack import capacity

CRASHHPCTL = str(Path(CRASHHPD).with_name("crashhpctl"))


def loads(setup) -> list[list[str]]:
    """The argv of every `kexec -p` load the stand-in ran, in order."""
    if not setup.standin_log.exists():
        return []
    calls = [json.loads(line) for line in setup.standin_log.read_text().splitlines()]
    return [c["argv"] for c in calls if "-p" in c["argv"] and "-u" not in c["argv"]]


def command_line(argv: list[str]) -> str:
    return next(a for a in argv if a.startswith("--command-line=")).removeprefix("--command-line=")


def append_by_drop_in(config: Path, append: str) -> None:
    """As an admin adds it: a drop-in beside the configuration."""
    dropins = config.with_name(config.name + ".d")
    dropins.mkdir(exist_ok=True)
    (dropins / "50-append.toml").write_text(f'[kexec]\nappend = "{append}"\n')


def reconcile(sock: Path) -> dict:
    proc = subprocess.run([CRASHHPCTL, "--socket", str(sock), "reconcile", "--json"], capture_output=True, text=True,
                          timeout=60)
    return json.loads(proc.stdout)


def test_an_append_added_on_sighup_is_one_reload_with_it_and_a_sighup_that_changes_nothing_is_none(tmp_path):
    setup = kexec_setup(tmp_path, QEMU_GUEST)
    d = DaemonProcess(tmp_path, setup.config, setup.env())
    try:
        d.wait_ready()
        (first,) = loads(setup)  # the start-up load
        assert "acpi_no_memhotplug" not in command_line(first)
        d.signal(signal.SIGHUP)  # the negative control: the same configuration again
        wait_for(lambda: d.stderr().count("configuration reloaded") == 1, 10, "the first reload")
        wait_for(lambda: daemon_status(setup.socket)["pending_events"] == 0, 5, "the reload's update")
        assert len(loads(setup)) == 1
        append_by_drop_in(setup.config, "acpi_no_memhotplug")
        d.signal(signal.SIGHUP)
        wait_for(lambda: len(loads(setup)) == 2, 10, "the reload with the new command line")
        assert command_line(loads(setup)[1]) == command_line(first) + " acpi_no_memhotplug"
        assert reconcile(setup.socket)["applied"] is False and len(loads(setup)) == 2  # in force now: nothing more
    finally:
        d.stop()


def test_a_restart_with_another_load_configured_reloads_once(tmp_path):
    setup = kexec_setup(tmp_path, QEMU_GUEST)
    d = DaemonProcess(tmp_path, setup.config, setup.env())
    d.wait_ready()
    assert d.stop() == 0 and len(loads(setup)) == 1
    (tmp_path / "again").mkdir()
    again = DaemonProcess(tmp_path / "again", setup.config, setup.env())
    try:
        again.wait_ready()
        assert len(loads(setup)) == 1  # the same load, recorded this boot: a restart costs nothing
    finally:
        again.stop()
    append_by_drop_in(setup.config, "acpi_no_memhotplug")
    (tmp_path / "third").mkdir()
    third = DaemonProcess(tmp_path / "third", setup.config, setup.env())
    try:
        third.wait_ready()
        assert len(loads(setup)) == 2 and command_line(loads(setup)[1]).endswith(" acpi_no_memhotplug")
    finally:
        third.stop()


def test_a_kernel_header_the_reload_did_not_reach_is_reloaded_again_not_skipped(tmp_path):
    """The stand-in cannot write the fake kernel's memory: after the hot-add's reload the kernel's header still
    lacks the block, though crashhpd's record has it; reconcile must decide on the kernel's header."""
    setup = kexec_setup(tmp_path, QEMU_GUEST)
    memsz = align_up(capacity(64), 4096)
    crash = CrashKernel(setup.root).install(b"\x7fELF", memsz)
    from crashhpd.elfcorehdr.build import build_valid
    from crashhpd.elfcorehdr.layout import preset
    from crashhpd.sysview.snapshot import read_snapshot

    crash.fill(build_valid(read_snapshot(str(setup.root)), preset("kexec-tools")).data, memsz)
    d = DaemonProcess(tmp_path, setup.config, setup.env())
    try:
        d.wait_ready()
        assert loads(setup) == []  # the kernel already holds the right header
        replace_iomem(setup.root, hot_added(QEMU_GUEST, 1, QEMU_HOT_ADD_BASE))
        assert reconcile(setup.socket)["applied"] is True and len(loads(setup)) == 1
        second = reconcile(setup.socket)  # the record says done; the kernel says the block is missing
        assert second["applied"] is True and len(loads(setup)) == 2
        assert any(line.startswith("+ RAM 0x") for line in second["changes"])
    finally:
        d.stop()
