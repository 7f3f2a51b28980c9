# SPDX-License-Identifier: GPL-2.0-only
"""crashhpd silences the distribution's per-event reload rule only while it does that rule's job.

The overrides land under the configured root's /run/udev/rules.d (a fake
tree here, so the host's udev is never touched, nor told to reload), from
the project's own udev/ files, as the package ships them.
"""

import logging
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from daemonproc import CRASHHPD, DaemonProcess, daemon_status, kexec_setup
from faketree import write
from repo_paths import IOMEM_FIXTURES, REPO

from crashhpd.backends.base import Backend
from crashhpd.backends.kernel import KernelBackend
from crashhpd.backends.kexec import KexecBackend
from crashhpd.backends.sandbox import SandboxBackend
from crashhpd.service.udev_takeover import MARKER, UdevTakeover

UDEV = REPO / "udev"
RULES = sorted(p.name for p in UDEV.glob("*.rules"))
RUNTIME = "run/udev/rules.d"
FIXTURE = (IOMEM_FIXTURES / "qemu-kvm-crashkernel.txt").read_text()


def placed(root: Path) -> dict[str, bytes]:
    directory = root / RUNTIME
    return {p.name: p.read_bytes() for p in directory.iterdir()} if directory.exists() else {}


def backend(name: str) -> Backend:
    """What the takeover reads of a backend, its name and the capabilities its class declares."""
    cls = {"kexec": KexecBackend, "kernel": KernelBackend, "sandbox": SandboxBackend}[name]
    return SimpleNamespace(name=cls.name, capabilities=cls.capabilities)  # type: ignore[return-value]


def takeover(root: Path) -> UdevTakeover:
    return UdevTakeover(str(root), str(UDEV), "/" + RUNTIME)


def test_a_backend_that_loads_the_crash_kernel_places_every_override_and_the_sandbox_removes_them(tmp_path):
    t = takeover(tmp_path)
    for name in ("kexec", "kernel"):
        verdict = t.sync(backend(name))
        assert verdict.inert and f"the {name} backend keeps the header current" in verdict.detail
        assert placed(tmp_path) == {name: MARKER + (UDEV / name).read_bytes() for name in RULES}
    verdict = t.sync(backend("sandbox"))
    assert not verdict.inert and "does not keep the kernel's header current" in verdict.detail
    assert placed(tmp_path) == {}


def test_release_gives_the_rule_back(tmp_path):
    t = takeover(tmp_path)
    t.sync(backend("kexec"))
    t.release("crashhpd stopped")
    assert placed(tmp_path) == {} and not t.verdict.inert
    takeover(tmp_path).release("nothing placed: nothing to do")  # a second daemon's ExecStopPost
    assert placed(tmp_path) == {}


def test_an_admins_override_and_someone_elses_file_are_left_alone(tmp_path):
    admin = write(tmp_path, f"etc/udev/rules.d/{RULES[0]}", "# the admin's own\n")
    other = write(tmp_path, f"{RUNTIME}/{RULES[1]}", 'ACTION=="add", RUN+="/bin/true"\n')
    t = takeover(tmp_path)
    verdict = t.sync(backend("kexec"))
    assert verdict.inert and "by the admin" in verdict.detail
    assert placed(tmp_path) == {RULES[1]: other.read_bytes(), RULES[2]: MARKER + (UDEV / RULES[2]).read_bytes()}
    assert other.read_text() == 'ACTION=="add", RUN+="/bin/true"\n'
    t.release("crashhpd stopped")
    assert placed(tmp_path) == {RULES[1]: other.read_bytes()} and admin.read_text() == "# the admin's own\n"


def test_disabled_means_never_touching_udev(tmp_path):
    t = UdevTakeover(str(tmp_path), str(UDEV), "/" + RUNTIME, enabled=False)
    assert not t.sync(backend("kexec")).inert and placed(tmp_path) == {}


def test_missing_override_files_are_a_warning_and_the_rule_stays_active(tmp_path, caplog):
    t = UdevTakeover(str(tmp_path), str(tmp_path / "not-installed"), "/" + RUNTIME)
    with caplog.at_level(logging.INFO, logger="crashhpd.service.udev_takeover"):
        verdict = t.sync(backend("kexec"))
    assert not verdict.inert and "not-installed" in verdict.detail
    warnings = [r for r in caplog.records if r.name == "crashhpd.service.udev_takeover"]
    assert [r.levelno for r in warnings] == [logging.WARNING]
    assert "cannot take over" in warnings[0].getMessage() and "not-installed" in warnings[0].getMessage()
    assert placed(tmp_path) == {}


@pytest.mark.root
def test_the_daemon_takes_over_while_it_runs_and_gives_back_when_it_stops(tmp_path):
    # stand-in kexec: this kernel has no kexec_load
    setup = kexec_setup(tmp_path, FIXTURE, udev={"rules": str(UDEV)})
    root, sock, config = setup.root, setup.socket, setup.config
    d = DaemonProcess(tmp_path, config, setup.env())
    try:
        d.wait_ready()
        assert set(placed(root)) == set(RULES)
        status = daemon_status(sock)
        assert status["udev_rule_inert"] is True and "50-kdump-tools.rules" in status["udev_rule_detail"]
        d.proc.send_signal(signal.SIGKILL)  # no chance to clean up: the unit's ExecStopPost does it
        d.proc.wait()
        assert set(placed(root)) == set(RULES)
        released = subprocess.run([CRASHHPD, "release-udev", "--config", str(config)], capture_output=True,
                                  text=True, timeout=30)
        assert released.returncode == 0, released.stderr
        assert placed(root) == {}
    finally:
        d.stop()
    (tmp_path / "again").mkdir()
    d = DaemonProcess(tmp_path / "again", config, setup.env())
    try:
        d.wait_ready()
        assert set(placed(root)) == set(RULES)
    finally:
        assert d.stop() == 0
    assert placed(root) == {}
