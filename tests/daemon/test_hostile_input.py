# SPDX-License-Identifier: GPL-2.0-only
"""Input that must be refused, never applied, and never allowed to kill the daemon.

Each case was a real failure: a RAM-less /proc/iomem built a "valid" header
with no RAM that replaced a good one; a 5000-digit sysfs number, a sysfs
directory replaced by a file and a kallsyms that is a directory escaped the
update path and the daemon exited; a 10 MB line became every status reply.
The unit cases read fake trees directly; the daemon cases run the real
`crashhpd run` and trigger updates with `crashhpctl reconcile` over its
socket, so no uevent is needed.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from daemonproc import DaemonProcess, generation, state, write_config
from faketree import make_tree, write
from repo_paths import IOMEM_FIXTURES

from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.layout import plan, preset
from crashhpd.elfcorehdr.pack import build
from crashhpd.elfcorehdr.validate import check, parse
from crashhpd.errors import QUOTE_LIMIT, InvalidHeader, ParseError, SnapshotError
from crashhpd.sysview.snapshot import read_boot_constants, read_snapshot

FIXTURE = (IOMEM_FIXTURES / "qemu-kvm-crashkernel.txt").read_text()
CPU = "sys/devices/system/cpu"
CRASHHPCTL = str(Path(sys.executable).with_name("crashhpctl"))


# --- a header with no RAM is never built --------------------------------------------------------


@pytest.mark.parametrize("iomem", ["", "   \n\n\t\n", "00000000-00000fff : Reserved\n00100000-3fffffff : PCI Bus\n"])
def test_an_iomem_without_system_ram_is_refused(tmp_path, iomem):
    root = make_tree(tmp_path, iomem)
    with pytest.raises(SnapshotError, match="no System RAM listed"):
        read_snapshot(str(root))


def test_an_empty_online_cpu_list_is_refused(tmp_path):
    root = make_tree(tmp_path, FIXTURE, online="")
    with pytest.raises(SnapshotError, match="online: no CPU online"):
        read_snapshot(str(root))


def test_the_validator_requires_ram_and_the_kernel_image_the_system_names(tmp_path):
    snapshot = read_snapshot(str(make_tree(tmp_path, FIXTURE)))
    model = plan(snapshot, preset("kernel"))
    no_ram = build(type(model)(model.cpu_notes, model.vmcoreinfo, model.image, (), model.page_offset, model.align))
    assert "no RAM PT_LOAD: a dump would save no memory" in check(parse(no_ram), snapshot)
    no_image = build(type(model)(model.cpu_notes, model.vmcoreinfo, None, model.ram, model.page_offset, model.align))
    assert any("no kernel-image PT_LOAD" in p for p in check(parse(no_image), snapshot))
    assert check(parse(build(model)), snapshot) == []


def test_ram_that_is_all_crash_kernel_builds_nothing_applicable(tmp_path):
    root = make_tree(tmp_path, "01000000-1fffffff : System RAM\n  01000000-1fffffff : Crash kernel\n")
    with pytest.raises(InvalidHeader, match="no RAM PT_LOAD"):
        build_valid(read_snapshot(str(root)), preset("kernel"))


# --- no input escapes as a traceback --------------------------------------------------------------


@pytest.mark.parametrize("rel", [f"{CPU}/kernel_max", f"{CPU}/cpu1/crash_notes_size", "sys/kernel/kexec_crash_loaded"])
def test_a_5000_digit_number_is_a_parse_error(tmp_path, rel):
    root = make_tree(tmp_path, FIXTURE, extra={rel: "9" * 5000 + "\n"})
    with pytest.raises(ParseError, match="expected a number"):
        read_snapshot(str(root))


def test_a_5000_digit_cpu_number_is_a_parse_error(tmp_path):
    root = make_tree(tmp_path, FIXTURE, extra={f"{CPU}/online": "0-" + "9" * 5000 + "\n"})
    with pytest.raises(ParseError, match="bad CPU range"):
        read_snapshot(str(root))


def test_a_sysfs_directory_replaced_by_a_file_reads_as_absent(tmp_path):
    root = make_tree(tmp_path, FIXTURE)
    shutil.rmtree(root / CPU)
    write(root, CPU, "not a directory\n")
    snapshot = read_snapshot(str(root))
    assert snapshot.crash_notes == {} and snapshot.cpus_online is None


def test_a_kallsyms_that_is_a_directory_is_a_snapshot_error(tmp_path):
    root = make_tree(tmp_path, FIXTURE, kallsyms=None)
    (root / "proc/kallsyms").mkdir()
    with pytest.raises(SnapshotError, match="kallsyms: Is a directory"):
        read_boot_constants(str(root))


def test_a_kcore_that_is_not_elf_means_an_unknown_base_not_a_crash(tmp_path):
    root = make_tree(tmp_path, FIXTURE, extra={"proc/kcore": "\x7fELF\x02\x01\x01" + "\xff" * 40})
    assert read_boot_constants(str(root)).direct_map_base is None


# --- errors stay readable -------------------------------------------------------------------------


def test_a_10_mb_line_is_quoted_in_two_hundred_characters(tmp_path):
    root = make_tree(tmp_path, FIXTURE + "x" * 10_000_000 + "\n")
    with pytest.raises(ParseError) as err:
        read_snapshot(str(root))
    message = str(err.value)
    assert len(message) < QUOTE_LIMIT + 200 and "(10000000 characters)" in message


# --- the daemon refuses, keeps what it applied, and stays up -------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path):
    root = make_tree(tmp_path / "root", FIXTURE)
    state_dir = tmp_path / "state"
    sock = tmp_path / "control.sock"
    config = write_config(tmp_path / "crashhpd.toml", {
        "root": str(root), "monitor": {"source": "kernel"},
        "backend": "sandbox", "sandbox": {"state_dir": str(state_dir)}, "control": {"socket": str(sock)},
    })
    d = DaemonProcess(tmp_path, config)
    d.wait_ready()
    yield root, state_dir, sock, d
    d.stop()


def ctl(sock: Path, op: str) -> tuple[int, dict]:
    proc = subprocess.run([CRASHHPCTL, "--socket", str(sock), op, "--json"], capture_output=True, text=True,
                          timeout=30)
    return proc.returncode, json.loads(proc.stdout)


def test_an_emptied_iomem_never_replaces_the_applied_header(daemon):
    root, state_dir, sock, d = daemon
    applied = state(state_dir)
    for text in ("", "  \n", "00000000-00000fff : Reserved\n"):
        (root / "proc/iomem").write_text(text)
        code, reply = ctl(sock, "reconcile")
        assert code == 1 and "no System RAM listed" in reply["message"]
        assert state(state_dir) == applied and generation(state_dir) == 1
    code, status = ctl(sock, "status")  # 1: NOT protected, as the sandbox never is, and now for a failed update too
    assert code == 1 and status["in_sync"] is False and status["errors"]["snapshot-failed"] == 3
    assert any(r.startswith("the last update failed: ") for r in status["unprotected_reasons"])
    assert d.proc.poll() is None


@pytest.mark.parametrize("damage", ["huge number", "cpu dir is a file", "huge line"])
def test_the_daemon_survives_hostile_sysfs_and_says_why(daemon, damage):
    root, state_dir, sock, d = daemon
    if damage == "huge number":
        write(root, f"{CPU}/kernel_max", "9" * 5000 + "\n")
    elif damage == "cpu dir is a file":
        shutil.rmtree(root / CPU)
        write(root, CPU, "x\n")
    else:
        write(root, "proc/iomem", FIXTURE + "y" * 10_000_000 + "\n")
    code, reply = ctl(sock, "reconcile")
    assert d.proc.poll() is None
    assert code == 1 and len(reply["message"]) < QUOTE_LIMIT + 300
    if damage == "cpu dir is a file":  # absent CPU files would drop every note: refused, the applied header kept
        assert "no CPU note: a dump would save no CPU's registers" in reply["message"]
    assert generation(state_dir) == 1
    code, status = ctl(sock, "status")
    assert code == 1 and len(status["last_error"]) < QUOTE_LIMIT + 300 and status["protected"] is False
    assert generation(state_dir) == 1


# --- a bug costs one update, not the daemon ----------------------------------------------------------


class ExplodingBackend:
    """Stands for a bug in a backend: a stand-in, since no real backend is known to raise like this."""

    name = "sandbox"
    layout = "kernel"

    def __init__(self, inner):
        self.inner, self.explode = inner, True

    def __getattr__(self, attr):
        return getattr(self.inner, attr)

    def begin(self, header, kernel):
        if self.explode:
            raise RuntimeError("a bug")
        return self.inner.begin(header, kernel)


def test_an_unexpected_exception_in_an_update_is_counted_and_the_next_update_works(tmp_path, caplog):
    import dataclasses
    import logging
    import selectors

    from crashhpd import config as config_mod
    from crashhpd.service.daemon import Daemon
    from crashhpd.service.metrics import Metrics
    from crashhpd.service.notify import Notifier
    from crashhpd.wiring import build_parts

    root = make_tree(tmp_path / "root", FIXTURE)
    cfg = config_mod.validate([("test", {"root": str(root), "backend": "sandbox",
                                         "sandbox": {"state_dir": str(tmp_path / "state")}})])
    parts = build_parts(cfg, None)
    backend = ExplodingBackend(parts.backend)
    daemon = Daemon(dataclasses.replace(parts, backend=backend), build_parts, selectors.DefaultSelector(), Metrics(),
                    Notifier(), None, None, config_mod.load)
    with caplog.at_level(logging.ERROR, logger="crashhpd"):
        daemon.update("events")
        daemon.update("events")
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "internal error during update" in tracebacks[0].getMessage()
    status = daemon.status()
    assert status.errors == {"internal": 2} and not status.in_sync
    assert status.last_error == "internal error during update: RuntimeError: a bug"
    backend.explode = False
    daemon.update("events")
    status = daemon.status()
    assert status.applies == 1 and status.generation == 1 and status.in_sync


# --- SIGHUP: the whole new state, or none of it -------------------------------------------------------


@pytest.mark.parametrize("bad_root", ["missing", "kallsyms is a directory"])
def test_sighup_to_an_unusable_root_keeps_everything_that_runs(daemon, tmp_path, bad_root):
    import signal

    root, state_dir, sock, d = daemon
    other = tmp_path / "other"
    if bad_root == "kallsyms is a directory":
        make_tree(other, FIXTURE, kallsyms=None)
        (other / "proc/kallsyms").mkdir()
    config = d.proc.args[-1]
    Path(config).write_text(Path(config).read_text().replace(f'root = "{root}"', f'root = "{other}"'))
    d.signal(signal.SIGHUP)
    from daemonproc import wait_for
    wait_for(lambda: "config not reloaded, keeping the running one" in d.stderr(), 10, "the reload refused")
    assert d.proc.poll() is None
    write(root, "proc/iomem", FIXTURE + "440000000-447ffffff : System RAM\n")  # the old root is still the one read
    code, reply = ctl(sock, "reconcile")
    assert code == 0 and reply["applied"] is True and "+ RAM 0x440000000-0x447ffffff (128 MiB)" in reply["changes"]


def test_sighup_whose_socket_cannot_be_made_changes_nothing_else_either(daemon):
    import signal

    from daemonproc import wait_for

    root, state_dir, sock, d = daemon
    config = Path(d.proc.args[-1])
    text = config.read_text().replace(f'root = "{root}"', f'root = "{root}"\nlayout = "kexec-tools"')
    config.write_text(text.replace(f'socket = "{sock}"', f'socket = "{sock}"\ngroup = "crashhpd-no-such-group"'))
    d.signal(signal.SIGHUP)
    wait_for(lambda: "config not reloaded, keeping the running one" in d.stderr(), 10, "the refused reload")
    code, status = ctl(sock, "status")
    # the new layout came with the socket: neither applies; 1 is the sandbox's NOT protected
    assert code == 1 and status["layout"] == "kernel"
