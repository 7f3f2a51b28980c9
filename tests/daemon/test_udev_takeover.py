# SPDX-License-Identifier: GPL-2.0-only
"""crashhpd silences the distribution's per-event reload rule only while it does that rule's job.

The overrides land under the configured root's /run/udev/rules.d (a fake
tree here, so the host's udev is never touched, nor told to reload), from
the project's own udev/ files, as the package ships them.
"""

import json
import logging
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from daemonproc import CRASHHPD, DaemonProcess, daemon_status, kexec_setup, wait_for
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
    assert not verdict.inert and verdict.detail.startswith("no distribution reload rule is installed (none of ")
    assert placed(tmp_path) == {}
    write(tmp_path, f"usr/lib/udev/rules.d/{RULES[0]}", "# the distribution's\n")  # the negative control
    verdict = t.sync(backend("sandbox"))
    assert not verdict.inert and "does not keep the kernel's header current" in verdict.detail


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


def killed_with_overrides(tmp_path: Path, **tables: object):
    """A daemon that placed the overrides, then SIGKILLed (as the watchdog or the OOM killer do)."""
    setup = kexec_setup(tmp_path, FIXTURE, udev={"rules": str(UDEV)}, **tables)
    d = DaemonProcess(tmp_path, setup.config, setup.env())
    d.wait_ready()
    assert set(placed(setup.root)) == set(RULES)
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.stop()
    return setup


@pytest.mark.root
def test_release_needs_no_configuration_that_parses_and_removes_exactly_what_was_placed(tmp_path):
    """A drop-in the daemon refused on SIGHUP, or settings edited since placement, must not leave overrides:
    with neither the daemon nor the distribution's rule, nothing would keep the crash kernel current."""
    setup = killed_with_overrides(tmp_path)
    other = setup.root / "run/udev/other"  # the runtime directory edited since: the record still says where
    setup.config.write_text(setup.config.read_text() + f'[udev]\nruntime_dir = "/{other.relative_to(setup.root)}"\n'
                            "[control\n")
    released = subprocess.run([CRASHHPD, "release-udev", "--config", str(setup.config)], capture_output=True,
                              text=True, timeout=30)
    assert released.returncode == 0 and released.stderr.startswith("crashhpd: warning: ")
    assert "releasing under /" in released.stderr
    assert set(placed(setup.root)) == set(RULES)  # the negative control: under / there is nothing of this root's
    released = subprocess.run([CRASHHPD, "release-udev", "--root", str(setup.root)], capture_output=True,
                              text=True, timeout=30)
    assert released.returncode == 0 and placed(setup.root) == {}
    assert not (setup.root / "run/crashhpd/udev-overrides.json").exists()


@pytest.mark.root
def test_the_next_start_removes_what_a_killed_daemon_left_before_it_decides(tmp_path):
    setup = killed_with_overrides(tmp_path)
    config = setup.config
    config.write_text(config.read_text().replace('backend = "kexec"', 'backend = "sandbox"'))  # takes nothing over
    (tmp_path / "again").mkdir()
    d = DaemonProcess(tmp_path / "again", config, setup.env())
    try:
        d.wait_ready()
        assert placed(setup.root) == {} and daemon_status(setup.socket)["udev_rule_inert"] is False
    finally:
        d.stop()


@pytest.mark.root
def test_a_first_load_that_failed_and_left_no_crash_kernel_gives_the_rule_back_until_a_load_succeeds(tmp_path):
    setup = kexec_setup(tmp_path, FIXTURE, udev={"rules": str(UDEV)})
    control = json.loads(setup.standin_control.read_text())
    failing = {"exit": 1, "kernel": "freed", "stderr": "kexec_load failed: Cannot allocate memory\n"}
    control["outcomes"] = [failing, failing]  # the start-up load and its one immediate retry
    setup.standin_control.write_text(json.dumps(control))
    d = DaemonProcess(tmp_path, setup.config, setup.env())
    try:
        d.wait_ready()
        status = daemon_status(setup.socket)
        assert status["crash_kernel_loaded"] == 0 and status["generation"] == 0
        assert placed(setup.root) == {} and status["udev_rule_inert"] is False
        assert status["udev_rule_detail"].startswith("given back to the distribution: no crash kernel is loaded")
        wait_for(lambda: daemon_status(setup.socket)["crash_kernel_loaded"] == 1, 30, "the retried load")
        wait_for(lambda: set(placed(setup.root)) == set(RULES), 10, "the takeover once a load succeeded")
        assert daemon_status(setup.socket)["udev_rule_inert"] is True
    finally:
        d.stop()


@pytest.mark.root
@pytest.mark.parametrize("recover", [False, True])
def test_a_kernel_backend_that_cannot_recover_gives_the_rule_back_and_one_that_can_keeps_it(tmp_path, recover):
    """crash_hotplug reads 0: the kernel does not keep its header; without [kernel] recover nothing does."""
    setup = kexec_setup(tmp_path, FIXTURE, udev={"rules": str(UDEV)}, backend="kernel", kernel={"recover": recover})
    for attr in ("sys/devices/system/cpu/crash_hotplug", "sys/devices/system/memory/crash_hotplug"):
        write(setup.root, attr, "0\n")
    d = DaemonProcess(tmp_path, setup.config, setup.env())
    try:
        d.wait_ready()
        status = daemon_status(setup.socket)
        assert status["backend"] == "kernel" and status["backend_ok"] is False
        if recover:  # unhealthy, within its grace: the takeover stands
            assert status["udev_rule_inert"] is True and set(placed(setup.root)) == set(RULES)
        else:
            assert status["udev_rule_inert"] is False and placed(setup.root) == {}
            assert status["udev_rule_detail"].startswith(
                "given back to the distribution: the kernel backend cannot recover ([kernel] recover = false)")
    finally:
        d.stop()
