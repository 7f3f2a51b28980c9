# SPDX-License-Identifier: GPL-2.0-only
"""The unit's hardening leaves the daemon and kexec working: proven by running them under it, not by reading it.

tests/support/unit_sandbox.py reproduces the unit's seccomp filter (SystemCallFilter=,
RestrictAddressFamilies=) and capability bounding set with the kernel's own
mechanisms, from the unit file's own lines; these tests run the real daemon
and the real kexec-tools under it.
"""

import json
import signal
import subprocess
from pathlib import Path

import pytest
import unit_sandbox
from daemonproc import CRASHHPD, DaemonProcess, kexec_setup, wait_for
from repo_paths import IOMEM_FIXTURES

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(unit_sandbox.available() is not None, reason=unit_sandbox.available() or "")]

FIXTURE = (IOMEM_FIXTURES / "qemu-kvm-crashkernel.txt").read_text()


def spec(tmp_path: Path, drop: tuple[str, ...] = ()) -> Path:
    path = tmp_path / "filter.json"
    path.write_text(json.dumps(unit_sandbox.filter_spec(drop=drop)))
    return path


def test_the_unit_filters_system_calls_and_keeps_the_kexec_ones():
    allowed = unit_sandbox.allowed_syscalls()
    assert {"kexec_load", "kexec_file_load"} <= allowed
    assert not {"reboot", "init_module", "mount", "ptrace", "settimeofday"} & allowed
    assert unit_sandbox.directive("RestrictAddressFamilies") == ["AF_UNIX", "AF_NETLINK"]


@pytest.fixture(scope="module")
def bzimage() -> Path:
    """A real crash kernel image: Debian's, as the e2e tests fetch it (from the host's own apt mirrors)."""
    from e2e import parts

    try:
        return parts.kernel("6.1").vmlinuz
    except parts.PartsUnavailable as err:
        pytest.skip(str(err))


def run_kexec(tmp_path: Path, bzimage: Path, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    # -l, not -p: this machine reserves no crash kernel memory, so only a plain load reaches kexec_load;
    # its kernel has no kexec, so the syscall itself answers ENOSYS and nothing is ever loaded
    argv = unit_sandbox.sandboxed(["kexec", "-l", str(bzimage), "--command-line=quiet"], spec(tmp_path, drop))
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_real_kexec_reaches_kexec_load_under_the_units_filter(tmp_path, bzimage):
    if Path("/sys/kernel/kexec_loaded").exists():
        pytest.skip("this kernel has kexec: a plain load would replace what the next reboot runs")
    result = run_kexec(tmp_path, bzimage)
    assert result.returncode != -signal.SIGSYS, "the unit's filter killed kexec"
    assert "kexec_load failed: Function not implemented" in result.stderr  # the kernel's answer, not the filter's


def test_the_reproduced_filter_bites(tmp_path, bzimage):
    """The control: the same filter without kexec_load kills kexec when it makes that call."""
    if Path("/sys/kernel/kexec_loaded").exists():
        pytest.skip("this kernel has kexec: a plain load would replace what the next reboot runs")
    assert run_kexec(tmp_path, bzimage, drop=("kexec_load",)).returncode == -signal.SIGSYS


def test_the_daemon_serves_under_the_units_restrictions(tmp_path):
    # stand-in kexec: this kernel has no kexec_load, and the real one is proven above
    setup = kexec_setup(tmp_path, FIXTURE, metrics={"textfile_dir": str(tmp_path)})
    sock, config = setup.socket, setup.config
    d = DaemonProcess(tmp_path, config, setup.env(),
                      command=unit_sandbox.sandboxed([CRASHHPD, "run", "--config", str(config)], spec(tmp_path)))
    try:
        d.wait_ready()
        proc_status = Path(f"/proc/{d.proc.pid}/status").read_text()
        assert "Seccomp:\t2\n" in proc_status and "NoNewPrivs:\t1\n" in proc_status  # the filter is on it
        assert "CapBnd:\t0000000400621001\n" in proc_status  # CHOWN NET_ADMIN SYS_RAWIO SYS_ADMIN SYS_BOOT SYSLOG
        crashhpctl = str(Path(CRASHHPD).with_name("crashhpctl"))
        for op in ("status", "header", "verify", "metrics"):
            ran = subprocess.run([crashhpctl, "--socket", str(sock), op, "--json"], capture_output=True, text=True,
                                 timeout=30)
            assert ran.returncode == 0, (op, ran.stderr, d.stderr())
        status = json.loads(subprocess.run([crashhpctl, "--socket", str(sock), "status", "--json"],
                                           capture_output=True, text=True, timeout=30).stdout)
        assert status["backend"] == "kexec" and status["generation"] == 1 and status["backend_ok"], status
        loads = [json.loads(line) for line in (tmp_path / "standin.jsonl").read_text().splitlines()]
        assert [call["exit"] for call in loads if "-p" in call["argv"]] == [0]
        assert (tmp_path / "crashhpd.prom").exists()
        d.signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in d.stderr(), 10, "the reload")
    finally:
        code = d.stop()
    assert code == 0, d.stderr_path.read_text()
