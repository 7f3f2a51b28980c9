# SPDX-License-Identifier: GPL-2.0-only
"""The daemon reads back the header the kernel holds, verifies against it, and says what a dump would miss.

The kernel is a fake one (tests/support/fakekcore.py: a kallsyms, a BTF blob and a
/proc/kcore in which a crash image is loaded) because this machine's kernel
has no kexec; the reader, the daemon, its socket and crashhpctl are real.
The backend is the sandbox, which never touches the kernel: so a hot-add
leaves the kernel's header stale, which is exactly what must be reported.
"""

import base64
import json
import subprocess
from pathlib import Path

import devkmsg
import pytest
from daemonproc import CRASHHPD, DaemonProcess, daemon_status, kexec_setup, wait_for, write_config
from fakekcore import CrashKernel
from faketree import BLOCK, QEMU_GUEST, QEMU_HOT_ADD_BASE, hot_added, make_tree, replace_iomem

from crashhpd.abi.elf import align_up
from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.layout import preset
from crashhpd.elfcorehdr.pack import capacity
from crashhpd.sysview.snapshot import read_snapshot

CRASHHPCTL = str(Path(CRASHHPD).with_name("crashhpctl"))
MEMSZ = align_up(capacity(64), 4096)


def ctl(sock: Path, *args: str) -> tuple[int, dict]:
    proc = subprocess.run([CRASHHPCTL, "--socket", str(sock), *args, "--json"], capture_output=True, text=True,
                          timeout=30)
    return proc.returncode, json.loads(proc.stdout)


def sandbox_daemon(tmp_path: Path, root: Path, **tables: object) -> tuple[Path, DaemonProcess]:
    """The control socket and a started daemon with the sandbox backend on `root`."""
    sock = tmp_path / "control.sock"
    config = write_config(tmp_path / "crashhpd.toml", {
        "root": str(root), "backend": "sandbox", "state_dir": str(tmp_path / "state"), "monitor": {"source": "kernel"},
        "control": {"socket": str(sock)}, **tables,
    })
    d = DaemonProcess(tmp_path, config)
    d.wait_ready()
    return sock, d


@pytest.fixture
def loaded(tmp_path: Path):
    """A fake root whose kernel holds the header a fresh snapshot gives, and a daemon watching it."""
    root = make_tree(tmp_path / "root", QEMU_GUEST)
    crash = CrashKernel(root).install(b"\x7fELF", MEMSZ)  # kallsyms and kcore first: the header depends on them
    header = build_valid(read_snapshot(str(root)), preset("kernel")).data
    crash.fill(header, MEMSZ)
    sock, d = sandbox_daemon(tmp_path, root, log={"level": "debug"})
    yield root, sock, d, header
    d.stop()


def test_status_says_the_kernels_header_was_read_and_covers_everything(loaded):
    _root, sock, _d, header = loaded
    status = daemon_status(sock)
    assert status["kernel_header_readable"] is True and status["kernel_header_unreadable_reason"] is None
    assert status["kernel_segment_bytes"] == MEMSZ and status["kernel_header_in_sync"] is True
    assert (status["uncovered_ram_bytes"], status["missing_cpu_notes"], status["stale_ram_bytes"]) == (0, 0, 0)
    code, verdict = ctl(sock, "verify")
    assert code == 0 and verdict["in_sync"] is True and verdict["source"] == "kernel"
    code, held = ctl(sock, "header", "--kernel")
    assert code == 0 and held["header_bytes"] == 64 + 56 * len(held["segments"])
    assert base64.b64decode(held["data_base64"]) == header[:held["header_bytes"]]


def test_a_hot_add_the_kernel_did_not_follow_is_what_a_dump_would_miss(loaded):
    root, sock, d, _header = loaded
    replace_iomem(root, hot_added(QEMU_GUEST, 2, QEMU_HOT_ADD_BASE))
    code, verdict = ctl(sock, "verify")
    assert code == 1 and verdict["source"] == "kernel" and verdict["in_sync"] is False
    assert "+ RAM 0x440000000-0x44fffffff (256 MiB)" in verdict["changes"]
    code, reply = ctl(sock, "reconcile")  # the sandbox applies; the kernel's own header stays as it was
    assert code == 0 and reply["applied"] is True
    status = daemon_status(sock)
    assert status["kernel_header_in_sync"] is False and status["uncovered_ram_bytes"] == 2 * BLOCK
    assert status["missing_cpu_notes"] == 0 and status["stale_ram_bytes"] == 0
    wait_for(lambda: "the kernel's header is stale: a dump taken now would miss 268435456 bytes" in d.stderr(), 5,
             "the stale header in the journal")
    code, metrics = ctl(sock, "metrics")
    assert "crashhpd_uncovered_ram_bytes 2.68435456e+08" in metrics["text"]
    assert "crashhpd_kernel_header_in_sync 0.0" in metrics["text"]


def test_where_the_kernels_memory_cannot_be_read_status_says_why_and_verify_uses_the_record(tmp_path):
    root = make_tree(tmp_path / "root", QEMU_GUEST)  # no kcore, no BTF: nothing can be read back
    sock, d = sandbox_daemon(tmp_path, root)
    try:
        status = daemon_status(sock)
        assert status["kernel_header_readable"] is False and status["kernel_header_unreadable_reason"]
        assert status["uncovered_ram_bytes"] is None
        code, verdict = ctl(sock, "verify")
        assert code == 0 and verdict["source"] == "model"
        code, error = ctl(sock, "header", "--kernel")
        assert code == 1 and error["code"] == "no-header" and "cannot be read" in error["message"]
    finally:
        d.stop()


# --- the kexec backend decides on what the kernel holds ---------------------------------------------


def test_a_crash_kernel_already_right_at_start_costs_no_reload_and_a_hot_add_costs_one(tmp_path):
    # stand-in kexec (this kernel has no kexec_load) on a fake kernel whose loaded header is read back
    setup = kexec_setup(tmp_path, QEMU_GUEST)
    root, sock, loads = setup.root, setup.socket, setup.loads
    crash = CrashKernel(root).install(b"\x7fELF", MEMSZ)
    crash.fill(build_valid(read_snapshot(str(root)), preset("kexec-tools")).data, MEMSZ)  # kdump-tools' load
    d = DaemonProcess(tmp_path, setup.config, setup.env())
    try:
        d.wait_ready()
        assert loads() == 0, "the kernel already holds the right header: a start-up reload would gain nothing"
        assert daemon_status(sock)["kernel_header_in_sync"] is True
        replace_iomem(root, hot_added(QEMU_GUEST, 1, QEMU_HOT_ADD_BASE))
        code, reply = ctl(sock, "reconcile")
        assert code == 0 and reply["applied"] is True and loads() == 1
        # the stand-in cannot write the fake kernel's memory: the header read back after the load is the old
        # one, which is what a reload that silently failed looks like
        wait_for(lambda: "the kernel's header is stale" in d.stderr(), 5, "the stale header after the load")
        assert "model drift" in d.stderr()
        status = daemon_status(sock)
        assert status["errors"]["kernel-header-stale"] == 1 and status["uncovered_ram_bytes"] == BLOCK
    finally:
        d.stop()


def test_status_says_protected_only_while_the_kernels_header_covers_everything(tmp_path):
    """The verdict both ways on one host: the kernel holds the right header (exit 0), then a hot-add its reload
    did not reach (the stand-in kexec cannot write the fake kernel's memory), which a dump would really miss."""
    setup = kexec_setup(tmp_path, QEMU_GUEST)
    root, sock = setup.root, setup.socket
    crash = CrashKernel(root).install(b"\x7fELF", MEMSZ)
    crash.fill(build_valid(read_snapshot(str(root)), preset("kexec-tools")).data, MEMSZ)
    d = DaemonProcess(tmp_path, setup.config, setup.env())
    try:
        d.wait_ready()
        proc = subprocess.run([CRASHHPCTL, "--socket", str(sock), "status"], capture_output=True, text=True,
                              timeout=30)
        assert proc.returncode == 0, proc.stdout
        assert proc.stdout.splitlines()[0].split(None, 1) == \
            ["protected", "yes: a dump taken now would save every byte of RAM and every CPU"]
        replace_iomem(root, hot_added(QEMU_GUEST, 1, QEMU_HOT_ADD_BASE))
        assert ctl(sock, "reconcile")[0] == 0
        code, status = ctl(sock, "status")
        assert code == 1 and status["protected"] is False and status["protection_source"] == "kernel"
        assert status["unprotected_reasons"] == ["the kernel's header is stale: a dump taken now would miss "
                                                 "128 MiB of RAM and 0 CPU notes, and cover 0 B that is gone"]
    finally:
        d.stop()


# --- the passive backend guards the kernel's own rewrite ---------------------------------------------


@pytest.mark.parametrize("recover", [True, False])
def test_a_kernel_that_did_not_update_its_header_is_reloaded_with_kexec_file_load_backed_off(tmp_path, recover):
    # stand-in kexec and a fake kernel: the kernel "fails" its own rewrite because the fake one never rewrites
    setup = kexec_setup(tmp_path, QEMU_GUEST, backend="kernel", kernel={"recover": recover})
    root, sock = setup.root, setup.socket
    for attr in ("sys/devices/system/cpu/crash_hotplug", "sys/devices/system/memory/crash_hotplug"):
        (root / attr).write_text("1\n")  # a 6.6+ kernel that says it updates the header itself
    crash = CrashKernel(root).install(b"\x7fELF", MEMSZ)
    crash.fill(build_valid(read_snapshot(str(root)), preset("kernel")).data, MEMSZ)
    d = DaemonProcess(tmp_path, setup.config, setup.env())
    try:
        d.wait_ready()
        assert daemon_status(sock)["backend"] == "kernel" and setup.loads() == 0
        replace_iomem(root, hot_added(QEMU_GUEST, 1, QEMU_HOT_ADD_BASE))
        ctl(sock, "reconcile")  # as a burst would: the kernel should have rewritten its header by now
        wait_for(lambda: "the kernel's header is stale" in d.stderr(), 5, "the kernel's failure noticed")
        if recover:
            # the stand-in cannot write the fake kernel's memory: every recovery leaves it stale, and the next
            # comes after 1 s, then 2 s, ...: the second is there, and status says when the third is due
            wait_for(lambda: setup.loads() == 2, 10, "the recovery tried again")
            calls = [json.loads(line) for line in setup.standin_log.read_text().splitlines() if "-p" in line]
            assert all(call["argv"][:2] == ["-p", "-s"] for call in calls)  # kexec_file_load sizes a new segment
            wait_for(lambda: (daemon_status(sock)["next_update_in_s"] or 0) > 1, 5, "the third one backed off")
            assert d.stderr().count("the kernel's header is stale") == 1  # one journal line for the spell
        status = daemon_status(sock)
        assert status["errors"]["kernel-header-stale"] >= 1 and status["uncovered_ram_bytes"] == BLOCK
        if not recover:
            ctl(sock, "status")
            assert setup.loads() == 0  # nothing reloads without [kernel] recover
    finally:
        d.stop()


@pytest.mark.root
def test_a_crash_hp_line_written_from_user_space_is_not_the_kernels_word(tmp_path):
    """The real /dev/kmsg, linked under the fake root. What the test writes there has facility LOG_USER, as
    anything a process writes does: the daemon reads it and must not count it (the kernel's own records are
    facility 0: tests/unit/service/test_kmsg.py takes their bytes apart)."""
    root = devkmsg.linked_root(make_tree(tmp_path / "root", QEMU_GUEST))
    sock, d = sandbox_daemon(tmp_path, root, log={"level": "debug"})
    try:
        status = daemon_status(sock)
        assert status["kernel_log_watched"] is True and status["kernel_log_unwatched_reason"] is None
        complaint = devkmsg.marked("crash hp: update elfcorehdr elfsz 8192 > memsz 4096")
        devkmsg.write(3, complaint)
        code, _reply = ctl(sock, "reconcile")  # a turn of the loop after the record was there to read
        status = daemon_status(sock)
        assert code == 0 and status["kernel_log_complaint"] is None and status["errors"] == {}
        assert complaint not in d.stderr()
    finally:
        d.stop()


def test_a_kmsg_that_cannot_be_polled_is_not_watched_and_the_daemon_runs(tmp_path):
    """Some containers link /dev/kmsg to /dev/null, which epoll refuses."""
    root = make_tree(tmp_path / "root", QEMU_GUEST)
    (root / "dev").mkdir()
    (root / "dev/kmsg").symlink_to("/dev/null")
    sock, d = sandbox_daemon(tmp_path, root)
    try:
        status = daemon_status(sock)
        assert status["kernel_log_watched"] is False and status["in_sync"] is True
        assert status["kernel_log_unwatched_reason"].startswith(f"{root / 'dev/kmsg'}: cannot be watched")
    finally:
        d.stop()


def test_notes_of_possible_cpus_sysfs_cannot_give_are_taken_from_the_kernels_header(tmp_path):
    """6.6+ writes a note per possible CPU; sysfs has crash_notes only for present ones (0-3 of 0-5 here)."""
    from dataclasses import replace

    from crashhpd.elfcorehdr.pack import build
    from crashhpd.sysview.loaded_header import LoadedHeaderReader

    root = make_tree(tmp_path / "root", QEMU_GUEST, possible="0-5", present="0-3")
    crash = CrashKernel(root).install(b"\x7fELF", MEMSZ)
    model = build_valid(read_snapshot(str(root)), preset("kernel", "present")).model
    absent = ((4, 0x13FC1B000, 368), (5, 0x13FC1C000, 368))  # where the kernel put the two absent CPUs' notes
    crash.fill(build(replace(model, cpu_notes=model.cpu_notes + absent)), MEMSZ)
    snapshot = read_snapshot(str(root), header_reader=LoadedHeaderReader(str(root)))
    assert {cpu: note.addr for cpu, note in snapshot.crash_notes.items() if cpu >= 4} == {4: 0x13FC1B000,
                                                                                           5: 0x13FC1C000}
    built = build_valid(snapshot, preset("kernel", "possible"))
    assert built.model.cpus_without_notes == () and len(built.model.cpu_notes) == 6
    without = build_valid(read_snapshot(str(root)), preset("kernel", "possible"))  # nobody read the kernel's
    assert without.model.cpus_without_notes == (4, 5)
