# SPDX-License-Identifier: GPL-2.0-only
"""`crashhpctl` as a subprocess against a real daemon: both output forms and every exit status."""

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import nobody
import pytest
from control_env import HOT_ADDED, NOGROUP, STATUS_KEYS, env, iomem, run_as_nobody  # noqa: F401
from daemonproc import generated, generation, inject, segment_header, wait_for
from faketree import replace_iomem
from prometheus_client.parser import text_string_to_metric_families

from crashhpd.control import contract
from crashhpd.control.render import age, aligned, duration

CRASHHPCTL = str(Path(sys.executable).with_name("crashhpctl"))
HINT = "is crashhpd running? systemctl status crashhpd"


def ctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CRASHHPCTL, *args], capture_output=True, text=True, timeout=30)


def ctl_json(*args: str) -> tuple[int, dict]:
    proc = ctl(*args, "--json")
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture
def running(env):
    """A daemon and the arguments that reach it."""
    env.start()
    return env, ("--socket", str(env.socket))


# --- each command, readable and --json --------------------------------------------------------------


def test_crashhpctl_offers_exactly_the_ops_of_the_table():
    from crashhpd.control.client import _parser

    subcommands = next(a for a in _parser()._actions if a.dest == "op").choices
    assert set(subcommands) == set(contract.OPS) == {"status", "header", "verify", "reconcile", "metrics",
                                                     "kernel-header"}


@pytest.mark.root
def test_status_readable_is_an_aligned_table(running):
    env, sock = running
    proc = ctl(*sock, "status")
    assert proc.returncode == 1 and proc.stderr == ""  # the sandbox protects nothing: exit 1, NOT protected
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("protected ")
    column = next(line for line in lines if line.startswith("crashhpd ")).index("0.1.0")
    assert all(line[column - 2:column] == "  " and line[column] != " " for line in lines if line[0] != " "), \
        "every value starts in one column"
    rows = {line[:column].strip(): line[column:] for line in lines if line[0] != " "}
    assert rows["protected"] == "NO: the sandbox backend keeps no crash kernel current: it only writes a file " \
                                '(set backend = "auto" in /etc/crashhpd/crashhpd.toml)'
    assert rows["generation"] == "1, in sync"
    assert rows["backend"].startswith("sandbox (healthy: ")
    assert rows["RAM"] == "7 ranges, 4.34 GiB"  # the virtio-mem fixture minus the crash kernel and low 1 MiB
    assert rows["CPUs"] == "4"
    assert rows["last error"] == "none"
    assert rows["last apply"].endswith(" s ago (startup)")
    assert "  + first header: 4 CPU notes, 7 RAM ranges" in proc.stdout


@pytest.mark.root
def test_status_json_is_the_result_object(running):
    env, sock = running
    code, status = ctl_json(*sock, "status")
    assert code == 1 and set(status) >= STATUS_KEYS
    assert status["protected"] is False and "sandbox" in status["unprotected_reasons"][0]
    assert status["generation"] == generation(env.state_dir) == 1


@pytest.mark.root
def test_header_readable_and_json(running):
    env, sock = running
    proc = ctl(*sock, "header")
    assert proc.returncode == 0
    assert proc.stdout.startswith("generation 1: 4096 bytes of a ")
    assert "13 program headers: 5 notes, 7 RAM ranges (4.34 GiB)" in proc.stdout
    assert "kernel image" in proc.stdout and proc.stdout.count("RAM ") >= 7
    code, header = ctl_json(*sock, "header")
    assert code == 0 and base64.b64decode(header["data_base64"]) == segment_header(env.state_dir)


@pytest.mark.root
def test_verify_exits_1_on_drift_and_reconcile_repairs_it(running):
    env, sock = running
    proc = ctl(*sock, "verify")
    assert proc.returncode == 0 and proc.stdout.startswith("in sync: generation 1")
    replace_iomem(env.root, iomem(hot_added=1))  # no event: only verify can tell
    proc = ctl(*sock, "verify")
    assert proc.returncode == 1
    assert proc.stdout.startswith("DIFFERS: generation 1") and f"  {HOT_ADDED}" in proc.stdout
    code, verdict = ctl_json(*sock, "verify")
    assert code == 1 and verdict["in_sync"] is False and HOT_ADDED in verdict["changes"]

    proc = ctl(*sock, "reconcile")
    assert proc.returncode == 0
    assert proc.stdout.startswith("applied generation 2 in ") and f"  {HOT_ADDED}" in proc.stdout
    assert segment_header(env.state_dir) == generated(env.root)
    assert ctl(*sock, "verify").returncode == 0
    proc = ctl(*sock, "reconcile")
    assert proc.returncode == 0 and proc.stdout.startswith("nothing to apply: generation 2 already matches")


@pytest.mark.root
def test_reconcile_json_takes_over_pending_events(running):
    env, sock = running
    replace_iomem(env.root, iomem(hot_added=1))
    inject("online")
    wait_for(lambda: ctl_json(*sock, "status")[1]["pending_events"] >= 1, 5, "a pending event")
    code, done = ctl_json(*sock, "reconcile")
    assert code == 0 and done["applied"] is True and done["generation"] == 2 and done["events"] >= 1


@pytest.mark.root
def test_metrics_readable_and_json_parse(running):
    env, sock = running
    proc = ctl(*sock, "metrics")
    assert proc.returncode == 0
    names = {f.name for f in text_string_to_metric_families(proc.stdout)}
    assert {"crashhpd_generation", "crashhpd_applies", "crashhpd_event_to_apply_seconds"} <= names
    code, metrics = ctl_json(*sock, "metrics")
    assert code == 0 and {f.name for f in text_string_to_metric_families(metrics["text"])} == names


# --- errors and exit statuses ----------------------------------------------------------------------


def test_no_daemon_exits_3_with_the_hint(tmp_path):
    proc = ctl("--socket", str(tmp_path / "none.sock"), "status")
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and HINT in proc.stderr and "none.sock" in proc.stderr


def test_a_stale_socket_exits_3_and_json_gets_an_error_object(tmp_path):
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()
    proc = ctl("--socket", str(tmp_path / "stale.sock"), "status", "--json")
    assert proc.returncode == 3 and "Connection refused" in proc.stderr and HINT in proc.stderr
    assert json.loads(proc.stdout) == {"code": "unreachable", "hint": HINT,
                                       "message": f"cannot reach crashhpd at {tmp_path / 'stale.sock'}: "
                                                  "Connection refused"}


@pytest.mark.root
def test_a_user_outside_the_sockets_group_is_told_so_not_asked_whether_crashhpd_runs():
    import tempfile

    with tempfile.TemporaryDirectory() as where:
        os.chmod(where, 0o755)
        path = os.path.join(where, "control.sock")
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(path)
        os.chmod(path, 0o660)  # root's, group root: nobody may not connect, though a daemon listens
        listening.listen()
        try:
            proc = run_as_nobody(nobody.staged().crashhpctl, "--socket", path, "status")  # staged: see below
        finally:
            listening.close()
    assert proc.returncode == 3 and "Permission denied" in proc.stderr and HINT not in proc.stderr
    assert "only root and members of the socket's group may connect" in proc.stderr


def test_version_is_the_packages():
    proc = ctl("--version")
    assert (proc.returncode, proc.stdout) == (0, "crashhpctl 0.1.0\n")


def test_a_daemon_that_does_not_answer_exits_3(tmp_path):
    mute = socket.socket(socket.AF_UNIX)
    mute.bind(str(tmp_path / "mute.sock"))
    mute.listen()
    try:
        proc = ctl("--socket", str(tmp_path / "mute.sock"), "--timeout", "0.3", "status")
    finally:
        mute.close()
    assert proc.returncode == 3 and "no reply within 0.3 s" in proc.stderr


@pytest.mark.root
def test_the_socket_comes_from_the_config(running):
    env, _ = running
    proc = ctl("--config", str(env.config()), "status")
    assert proc.returncode == 1 and "generation" in proc.stdout  # reached: 1 is the sandbox's NOT protected


@pytest.mark.parametrize("args", [[], ["bogus"], ["status", "--yaml"], ["--timeout", "-1", "status"],
                                  ["--timeout", "soon", "status"]])
def test_usage_errors_exit_2(args):
    proc = ctl(*args)
    assert proc.returncode == 2 and "usage: crashhpctl" in proc.stderr and "Traceback" not in proc.stderr


def test_an_invalid_config_is_one_warning_and_the_default_socket_is_tried(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[control]\nsocket = 'relative'\n")
    proc = ctl("--config", str(bad), "--timeout", "1", "status")
    warning = proc.stderr.splitlines()[0]
    assert warning == (f"crashhpctl: warning: {bad}: control.socket: must be an absolute path (got 'relative'); "
                       f"using {contract.DEFAULT_SOCKET}")
    assert proc.returncode != contract.EXIT_USAGE and "Traceback" not in proc.stderr
    if proc.returncode == contract.EXIT_UNREACHABLE:  # no daemon at the default path on this machine
        assert contract.DEFAULT_SOCKET in proc.stderr.splitlines()[1]


@pytest.mark.root
def test_an_error_reply_exits_1_in_both_forms(running):
    env, sock = running
    replace_iomem(env.root, "garbage\n")
    proc = ctl(*sock, "reconcile")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("crashhpctl: reconcile: ") and proc.stderr.rstrip().endswith("(failed)")
    code, error = ctl_json(*sock, "verify")
    assert code == 1 and error["code"] == "failed" and "proc/iomem:1" in error["message"]


@pytest.mark.root
def test_as_nobody_status_works_and_reconcile_is_refused(env):
    env.start(control={"group": NOGROUP})
    sock = ("--socket", str(env.socket))
    crashhpctl = nobody.staged().crashhpctl  # the checkout may be where nobody cannot enter (/root)
    proc = run_as_nobody(crashhpctl, *sock, "status")
    assert proc.returncode == 1 and proc.stdout.startswith("protected ")  # answered: NOT protected (sandbox)
    proc = run_as_nobody(crashhpctl, *sock, "reconcile")
    assert proc.returncode == 1 and "reconcile needs root" in proc.stderr and "(permission-denied)" in proc.stderr
    proc = run_as_nobody(crashhpctl, *sock, "reconcile", "--json")
    assert proc.returncode == 1 and json.loads(proc.stdout)["code"] == "permission-denied"


# --- the readable forms' pieces ------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0 s"), (3, "3 s"), (119, "119 s"), (120, "2 min"),
                                               (7199, "119 min"), (7200, "2 h"), (47 * 3600, "47 h"),
                                               (3 * 86400, "3 d"), (-5, "0 s")])
def test_durations_read_like_an_admin_says_them(seconds, text):
    assert duration(seconds) == text
    assert age(seconds) == f"{text} ago"


def test_aligned_lines_up_values_and_continuation_lines():
    assert aligned([("a", "1"), ("long label", "x\ny")]).splitlines() == [
        "a           1", "long label  x", "            y"]


def test_status_text_says_what_a_dump_would_miss_and_why_a_cpu_count_is_zero():
    """render.show_status on a reply as a daemon sends it: every fact the verdict rests on, in words."""
    from crashhpd.control.render import show_status

    status = {key: None for key in contract.StatusResult.__annotations__}
    status.update(version="0.1.0", pid=1, uptime_s=5.0, backend="kexec", backend_setting="auto", backend_ok=False,
                  backend_detail="NO CRASH KERNEL LOADED", layout="kexec-tools", generation=0, in_sync=False,
                  last_changes=[], cpus=0, ram_ranges=0, ram_bytes=0, header_bytes=0, events_received=0,
                  events_coalesced=0, rescans=0, updates=1, applies=0, skipped_noop=0, pending_events=0,
                  errors={"apply-failed": 1}, last_error="apply failed: kexec_load failed: Cannot allocate memory",
                  last_error_at=None, protected=False, crash_kernel_loaded=0, kernel_header_readable=True,
                  kernel_header_in_sync=False, uncovered_ram_bytes=1 << 29, missing_cpu_notes=2, stale_ram_bytes=0,
                  unprotected_reasons=["no crash kernel is loaded: a panic now saves no dump at all",
                                       "the last update failed: apply failed: kexec_load failed"])
    text, code = show_status(status, 10.0)  # type: ignore[arg-type]
    rows = {line[:15].strip(): line[15:] for line in text.splitlines() if line[0] != " "}
    assert code == 1 and rows["protected"] == "NO: no crash kernel is loaded: a panic now saves no dump at all"
    assert "               the last update failed: apply failed: kexec_load failed" in text.splitlines()
    assert rows["crash kernel"] == "NOT LOADED: a panic now saves no dump"
    status["kexec_sysfs"] = "kernel/kexec"  # Linux after 6.18
    assert "crash kernel   NOT LOADED: a panic now saves no dump (/sys/kernel/kexec/)" in show_status(status, 10)[0]  # type: ignore[arg-type]
    assert rows["kernel header"] == ("read back, STALE: a dump would miss 512 MiB of RAM and 2 CPU notes, "
                                     "and cover 0 B that is gone")
    assert rows["CPUs"] == "0 (no header built yet: apply failed: kexec_load failed: Cannot allocate memory)"
    assert rows["backend"].startswith("kexec (chosen by auto) (UNHEALTHY: NO CRASH KERNEL LOADED)")
    status.update(ram_ranges=7)  # a header was built, with no CPU note in it
    assert "CPUs           0 (no CPU has crash_notes in sysfs: a kernel without CONFIG_CRASH_DUMP?)" in \
        show_status(status, 10.0)[0]  # type: ignore[arg-type]
    status.update(protected=True, unprotected_reasons=[], crash_kernel_loaded=1, kernel_header_in_sync=True, cpus=4)
    text, code = show_status(status, 10.0)  # type: ignore[arg-type]
    assert code == 0 and text.startswith("protected      yes: a dump taken now would save every byte of RAM")


def test_status_text_shows_the_crash_kernels_command_line_and_what_it_lacks():
    from crashhpd.control.render import show_status

    status = {key: None for key in contract.StatusResult.__annotations__}
    status.update(version="0.1.0", pid=1, uptime_s=5.0, backend="kernel", backend_ok=True, backend_detail="ok",
                  layout="kernel", generation=1, in_sync=True, last_changes=[], cpus=2, ram_ranges=3, ram_bytes=0,
                  header_bytes=0, events_received=0, events_coalesced=0, rescans=0, updates=1, applies=0,
                  skipped_noop=1, pending_events=0, errors={}, protected=True, unprotected_reasons=[],
                  crash_kernel_cmdline="elfcorehdr=0x2c000000 ro nr_cpus=1",
                  crash_kernel_cmdline_missing=["acpi_no_memhotplug"])
    lines = show_status(status, 10.0)[0].splitlines()  # type: ignore[arg-type]
    at = lines.index("crash cmdline  elfcorehdr=0x2c000000 ro nr_cpus=1")
    assert lines[at + 1] == "               LACKS acpi_no_memhotplug: a dump would lose hot-added memory"
    status.update(crash_kernel_cmdline_missing=[])
    assert "LACKS" not in show_status(status, 10.0)[0]  # type: ignore[arg-type]
    status.update(crash_kernel_cmdline=None)
    assert "crash cmdline  not read (see kernel header)" in show_status(status, 10.0)[0]  # type: ignore[arg-type]
