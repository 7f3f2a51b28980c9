# SPDX-License-Identifier: GPL-2.0-only
"""The kexec backend: argv, retries, load limit, dry run and persistence, against kexec-tools and a stand-in.

This VM's kernel has no kexec_load (no /sys/kernel/kexec_crash_loaded), so
a real load cannot succeed here. The real Debian kexec-tools binary is used
for what it can do (its version, and its real failure); everything that
needs a load to succeed, fail on cue or hang runs against
tests/support/kexec_standin.py, which plays kexec and the kernel's kexec state on a
fake tree. The snapshots and headers are crashhpd's real ones, built from
those trees.
"""

import hashlib
import json
import logging
import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from daemonproc import DaemonProcess, can_inject, generated, inject, wait_for, write_config
from faketree import kernel, write
from kexec_standin import EBUSY
from repo_paths import STANDIN
from standin import Standin, alive, hot_add, kind_of, model, root, standin  # noqa: F401  (fixtures)

from crashhpd.backends.base import Backoff
from crashhpd.backends.kernel import choose
from crashhpd.backends.kexec import KexecBackend
from crashhpd.backends.kexec_state import HEADER_FILE, STATE_FILE
from crashhpd.config import KexecConfig
from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.layout import preset
from crashhpd.errors import BackendError
from crashhpd.sysview.snapshot import read_snapshot

NOBODY = 65534


def backend(standin: Standin, state_dir: Path, **cfg: object) -> KexecBackend:
    return KexecBackend(KexecConfig(binary=str(standin.path), **cfg), str(standin.root), str(state_dir),
                        kernel(standin.root))


class Models:
    """The headers a test built, by the sha256 of the /proc/iomem each was built from.

    kexec-tools builds its header from the /proc/iomem it reads while it runs, and the stand-in records
    that file's sha256 with every call: so the header kexec loaded last is found by the stand-in's
    record of the tree it read, apart from whatever the test last handed the backend.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_iomem: dict[str, bytes] = {}

    def now(self) -> bytes:
        """The tree's model header now, as the daemon would hand it to apply()."""
        header = model(self.root)
        self._by_iomem[sha256(self.root / "proc/iomem")] = header
        return header

    def loaded_by(self, standin: Standin) -> bytes:
        """The header of the stand-in's last successful load."""
        *_, last = [c for c in standin.loads() if c["exit"] == 0]
        return self._by_iomem[last["iomem_sha256"]]


def persisted(state_dir: Path) -> bytes:
    """The header the backend saved beside its record, read back from its state directory."""
    return (state_dir / HEADER_FILE).read_bytes()


def expected_argv(standin: Standin, *flags: str) -> list[str]:
    """kexec -p, forced to kexec_load (-c) unless the flags ask for kexec_file_load (-s)."""
    r = standin.root
    syscall = [] if "-s" in flags else ["-c"]
    return [str(standin.path), "-p", *syscall, *flags, f"--initrd={r}/var/lib/kdump/initrd.img",
            "--command-line=root=UUID=0b4e ro quiet nr_cpus=1 irqpoll", f"{r}/var/lib/kdump/vmlinuz"]


# --- the load itself ----------------------------------------------------------------------------


def test_one_kexec_p_replaces_the_image_without_unloading(standin, root, tmp_path):
    # stand-in: a real load needs a kernel with kexec_load
    b = backend(standin, tmp_path / "state")
    models = Models(root)
    header = models.now()
    applied = b.apply(header, kernel(root))
    assert [c["argv"] for c in standin.loads()] == [expected_argv(standin)[1:]]
    assert (applied.generation, applied.sha256 is not None, applied.header_size) == (1, True, len(header))
    assert b.loaded(kernel(root)) == models.loaded_by(standin) == persisted(tmp_path / "state")
    assert (root / "sys/kernel/kexec_crash_loaded").read_text() == "1\n"


def test_never_unload_even_across_failures(standin, root, tmp_path):
    # stand-in: failures on cue need a scripted kexec
    standin.script({"exit": 1, "stderr": EBUSY}, {"exit": 1, "stderr": "kexec_load failed: Invalid argument\n",
                                                  "kernel": "freed"}, {"exit": 0})
    b = backend(standin, tmp_path / "state")
    for _ in range(2):
        with pytest.raises(BackendError):
            b.apply(model(root), kernel(root))
    b.apply(model(root), kernel(root))
    argvs = [c["argv"] for c in standin.calls()]
    assert len(standin.loads()) == 3
    assert not any(flag in argv for argv in argvs for flag in ("-u", "--unload"))


def test_argv_is_a_list_and_no_shell_sees_the_command_line(standin, root, tmp_path):
    # stand-in: it records the exact argv it received
    marker = tmp_path / "pwned"
    append = f'dyndbg="file a.c +p" x;touch {marker} `touch {marker}` $(touch {marker}) \'q\''
    backend(standin, tmp_path / "state", append=append).apply(model(root), kernel(root))
    (call,) = standin.loads()
    assert call["argv"][-2] == f"--command-line=root=UUID=0b4e ro quiet nr_cpus=1 irqpoll {append}"
    assert not marker.exists()


def test_file_load_when_configured(standin, root, tmp_path):
    # stand-in: -s needs kexec_file_load in the kernel
    backend(standin, tmp_path / "state", file_load=True).apply(model(root), kernel(root))
    assert standin.loads()[0]["argv"] == expected_argv(standin, "-s")[1:]


@pytest.mark.parametrize(("lockdown", "flags"), [("none [integrity] confidentiality\n", ["-s"]),
                                                 ("none integrity [confidentiality]\n", ["-s"]),
                                                 ("[none] integrity confidentiality\n", [])])
def test_file_load_under_lockdown(standin, root, tmp_path, lockdown, flags):
    # stand-in: lockdown is a fake tree's file here, and kexec_load is refused under it by the kernel
    write(root, "sys/kernel/security/lockdown", lockdown)
    backend(standin, tmp_path / "state").apply(model(root), kernel(root))
    assert standin.loads()[0]["argv"] == expected_argv(standin, *flags)[1:]


def test_hotplug_hands_the_header_over_to_the_kernel(standin, root, tmp_path):
    # stand-in: kexec-tools 2.0.28 and a 6.6+ kernel with CONFIG_CRASH_HOTPLUG are not on this VM
    standin.script(version="kexec-tools 2.0.28")
    write(root, "sys/kernel/crash_elfcorehdr_size", f"{56 * (2 + 64 + 8192)}\n")
    b = backend(standin, tmp_path / "state", hotplug=True)
    b.apply(model(root), kernel(root))
    assert standin.loads()[0]["argv"] == expected_argv(standin, "--hotplug")[1:]
    health = b.health(kernel(root))
    assert health.ok and "the kernel updates the header now" in health.detail
    assert health.extra["kernel_updates_header"] is True
    assert choose(kernel(root)) == "kernel"
    hot_add(root, 2)
    newer = model(root)
    assert b.apply(newer, kernel(root)).generation == 2  # recorded; the kernel already rewrote its header
    assert len(standin.loads()) == 1
    assert b.loaded(kernel(root)) == newer == persisted(tmp_path / "state")


@pytest.mark.parametrize(("version", "size_file", "reason"), [
    ("kexec-tools 2.0.25", True, "kexec-tools 2.0.25 is older than 2.0.28"),
    ("kexec-tools 2.0.28", False, "the kernel has no /sys/kernel/crash_elfcorehdr_size"),
])
def test_hotplug_only_where_both_sides_support_it(standin, root, tmp_path, version, size_file, reason):
    # stand-in: both versions of kexec-tools, on a tree with or without the kernel's attribute
    standin.script(version=version)
    if size_file:
        write(root, "sys/kernel/crash_elfcorehdr_size", "460000\n")
    b = backend(standin, tmp_path / "state", hotplug=True)
    b.apply(model(root), kernel(root))
    assert "--hotplug" not in standin.loads()[0]["argv"]
    assert b.health(kernel(root)).extra["hotplug"].startswith(reason)


def test_an_unreadable_version_is_shown_as_kexec_said_it_and_rules_out_hotplug(standin, root, tmp_path, caplog):
    # stand-in: a kexec build with an unusual --version line
    standin.script(version="kexec (patched build)")
    write(root, "sys/kernel/crash_elfcorehdr_size", "460000\n")
    b = backend(standin, tmp_path / "state", hotplug=True)
    with caplog.at_level(logging.WARNING, logger="crashhpd"):
        b.apply(model(root), kernel(root))
    assert "--hotplug" not in standin.loads()[0]["argv"]
    extra = b.health(kernel(root)).extra
    assert extra["version"] == "kexec (patched build)"
    assert extra["hotplug"] == "kexec's version is unknown; --hotplug needs kexec-tools 2.0.28 or later"
    assert any("its version is unknown" in r.getMessage() for r in caplog.records)


# --- failures and retries -----------------------------------------------------------------------


def test_nonzero_exit_reports_kexecs_last_words_and_keeps_the_old_state(standin, root, tmp_path):
    # stand-in: a failure before the syscall, on cue
    b = backend(standin, tmp_path / "state")
    models = Models(root)
    b.apply(models.now(), kernel(root))
    standin.script({}, {"exit": 1, "stderr": "Cannot open `/var/lib/kdump/vmlinuz': Is a directory\n"
                                              "Cannot determine the file type of /var/lib/kdump/vmlinuz\n"})
    hot_add(root, 1)
    with pytest.raises(BackendError) as err:
        b.apply(models.now(), kernel(root))
    assert str(err.value).startswith("kexec -p failed with exit status 1: ")
    assert str(err.value).endswith("Cannot determine the file type of /var/lib/kdump/vmlinuz")
    assert err.value.retry_after == 1.0
    # kexec said nothing was loaded anew; the old image stands
    assert b.loaded(kernel(root)) == models.loaded_by(standin) == persisted(tmp_path / "state") != models.now()
    health = b.health(kernel(root))
    assert not health.ok and health.detail.startswith("last reload failed: kexec -p failed with exit status 1")
    assert health.extra["last_exit"] == 1 and health.extra["backoff_s"] == 1.0


def test_timeout_kills_the_whole_process_group(standin, root, tmp_path):
    # stand-in: a kexec that hangs (and has a child) on cue
    # had it run to its end, it would have said the kernel freed the crash image (kexec_crash_loaded 0)
    standin.script({"delay_s": 30, "child": True, "kernel": "freed"})
    b = backend(standin, tmp_path / "state", timeout_s=1)
    with pytest.raises(BackendError) as err:
        b.apply(model(root), kernel(root))
    assert str(err.value) == "kexec -p did not finish within 1 s; killed its process group"
    assert err.value.retry_after == 1.0
    assert (root / "sys/kernel/kexec_crash_loaded").read_text() == "1\n"  # killed before its end
    pids = json.loads(Path(str(standin.log) + ".pids").read_text())
    wait_for(lambda: not any(alive(pid) for pid in pids), 5, "the stand-in and its child to be gone")


def failing_applies(b: KexecBackend, root: Path, count: int) -> list[BackendError]:
    """`count` applies of the tree's model header, each of which must fail."""
    errors = []
    for _ in range(count):
        with pytest.raises(BackendError) as err:
            b.apply(model(root), kernel(root))
        errors.append(err.value)
    return errors


def test_ebusy_backs_off_doubling_and_a_success_resets_it(standin, root, tmp_path, caplog):
    # stand-in: another loader holding the kexec lock, on cue
    busy = {"exit": 1, "stderr": EBUSY}
    standin.script(busy, busy, busy, {}, busy)
    b = backend(standin, tmp_path / "state")
    with caplog.at_level(logging.INFO, logger="crashhpd"):
        errors = failing_applies(b, root, 3)
        assert all("another loader holds the kexec lock (Device or resource busy)" in str(e) for e in errors)
        b.apply(model(root), kernel(root))
        hot_add(root, 1)
        with pytest.raises(BackendError) as err:
            b.apply(model(root), kernel(root))
    assert [e.retry_after for e in errors] == [1.0, 2.0, 4.0]
    assert err.value.retry_after == 1.0
    assert [kind_of(r) for r in caplog.records].count("retry") == 3
    assert all(r.levelno == logging.WARNING for r in caplog.records if kind_of(r) == "kexec-failed")


def test_backoff_is_capped_at_a_minute():
    backoff = Backoff()
    assert [backoff.take() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    backoff.reset()
    assert backoff.take() == 1


def test_a_failed_load_that_freed_the_old_image_retries_at_once_then_backs_off(standin, root, tmp_path, caplog):
    # stand-in: the kernel freeing the crash image on a failed load needs a kernel with kexec_load
    freed = {"exit": 1, "stderr": "kexec_load failed: Cannot allocate memory\n", "kernel": "freed"}
    standin.script({}, freed, freed, freed, {})
    b = backend(standin, tmp_path / "state")
    models = Models(root)
    b.apply(models.now(), kernel(root))
    hot_add(root, 1)
    with caplog.at_level(logging.ERROR, logger="crashhpd"):
        errors = failing_applies(b, root, 3)
    assert [e.retry_after for e in errors] == [0.0, 1.0, 2.0]
    assert str(errors[-1]).startswith("NO CRASH KERNEL LOADED: kexec -p failed with exit status 1: ")
    loud = [r for r in caplog.records if kind_of(r) == "no-crash-kernel"]
    assert len(loud) == 3 and all(r.levelno == logging.ERROR for r in loud)
    assert b.loaded(kernel(root)) is None  # nothing is loaded, whatever crashhpd loaded before
    health = b.health(kernel(root))
    assert not health.ok and health.detail.startswith("NO CRASH KERNEL LOADED")
    assert health.extra["crash_loaded"] == 0
    b.apply(models.now(), kernel(root))
    assert b.loaded(kernel(root)) == models.loaded_by(standin) == persisted(tmp_path / "state")
    assert b.health(kernel(root)).ok
    standin.script(*[{}] * 5, freed)
    hot_add(root, 3)
    with pytest.raises(BackendError) as err:
        b.apply(model(root), kernel(root))
    assert err.value.retry_after == 0.0  # a success reset both the immediate retry and the backoff


def make_tree_variant(root: Path) -> Path:
    hot_add(root, 3)
    return root


@pytest.mark.parametrize("limit", ["1\n", "0\n"])
def test_the_last_allowed_crash_load_is_never_spent(standin, root, tmp_path, limit, caplog):
    # stand-in: only to prove that kexec is not run at all
    write(root, "proc/sys/kernel/kexec_load_limit_panic", limit)
    b = backend(standin, tmp_path / "state")
    with caplog.at_level(logging.ERROR, logger="crashhpd"), pytest.raises(BackendError) as err:
        b.apply(model(root), kernel(root))
    assert err.value.retry_after is None
    assert f"kexec_load_limit_panic reads {limit.strip()}" in str(err.value)
    assert standin.loads() == []
    assert [kind_of(r) for r in caplog.records] == ["load-limit"]
    health = b.health(kernel(root))
    assert not health.ok and "kexec_load_limit_panic reads" in health.detail
    assert health.extra["load_limit"] == int(limit)


@pytest.mark.parametrize("limit", ["-1\n", "2\n"])
def test_loads_go_ahead_while_the_limit_allows_more_than_one(standin, root, tmp_path, limit):
    # stand-in: a real load needs a kernel with kexec_load
    write(root, "proc/sys/kernel/kexec_load_limit_panic", limit)
    backend(standin, tmp_path / "state").apply(model(root), kernel(root))
    assert len(standin.loads()) == 1


def test_a_missing_kexec_is_one_clear_line(root, tmp_path):
    b = KexecBackend(KexecConfig(binary="kexec-not-installed"), str(root), str(tmp_path / "state"), kernel(root))
    with pytest.raises(BackendError, match=r"^kexec-not-installed not found on PATH; install kexec-tools"):
        b.apply(model(root), kernel(root))
    assert not b.health(kernel(root)).ok


# --- dry run ----------------------------------------------------------------------------------------


def test_dry_run_runs_no_load_and_changes_nothing(standin, root, tmp_path, caplog):
    # stand-in: it records every call, so a load that should not happen would show
    state_dir = tmp_path / "state"
    b = backend(standin, state_dir, dry_run=True)
    header = model(root)
    with caplog.at_level(logging.WARNING, logger="crashhpd"):
        applied = b.apply(header, kernel(root))
    assert standin.loads() == []
    assert [c["argv"] for c in standin.calls()] == [["--version"]]  # asking the version changes nothing
    assert (root / "sys/kernel/kexec_crash_loaded").read_text() == "1\n"
    assert not (state_dir / STATE_FILE).exists()
    (record,) = [r for r in caplog.records if kind_of(r) == "kexec-load"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "dry run: would run " + shlex.join(expected_argv(standin))
    assert applied.generation == 1 and b.loaded(kernel(root)) == header  # so an identical burst is a no-op


# --- what costs nothing -----------------------------------------------------------------------------


def test_online_offline_bursts_leave_the_kexec_tools_model_unchanged(standin, root, tmp_path):
    # stand-in: counts the reloads a real kexec would have done
    b = backend(standin, tmp_path / "state")
    before = model(root)
    kernel_before = build_valid(read_snapshot(str(root)), preset("kernel")).data
    b.apply(before, kernel(root))
    write(root, "sys/devices/system/cpu/online", "0,2\n")  # CPUs 1 and 3 offline, still present
    write(root, "sys/devices/system/memory/memory2/state", "offline\n")  # the block stays in /proc/iomem
    write(root, "sys/devices/system/memory/memory3/state", "offline\n")
    after = model(root)
    assert after == before == b.loaded(kernel(root))  # the daemon calls apply only when these differ: no reload
    assert build_valid(read_snapshot(str(root)), preset("kernel")).data != kernel_before  # the kernel's layout moves
    hot_add(root, 1)
    assert model(root) != b.loaded(kernel(root))  # a hot-add does change what kexec-tools builds
    assert len(standin.loads()) == 1


# --- restarts ---------------------------------------------------------------------------------------


def test_a_restart_does_not_reload_needlessly(standin, root, tmp_path):
    # stand-in: a real load needs a kernel with kexec_load
    state_dir = tmp_path / "state"
    models = Models(root)
    backend(standin, state_dir).apply(models.now(), kernel(root))
    again = backend(standin, state_dir)
    assert again.loaded(kernel(root)) == models.loaded_by(standin) == persisted(state_dir)
    assert again.state().generation == 1
    hot_add(root, 3)
    assert again.apply(model(root), kernel(root)).generation == 2
    assert json.loads((state_dir / STATE_FILE).read_text())["generation"] == 2


def test_state_from_another_boot_or_with_nothing_loaded_means_reload(standin, root, tmp_path):
    # stand-in: a real load needs a kernel with kexec_load
    state_dir = tmp_path / "state"
    header = model(root)
    backend(standin, state_dir).apply(header, kernel(root))
    write(root, "sys/kernel/kexec_crash_loaded", "0\n")
    assert backend(standin, state_dir).loaded(kernel(root)) is None
    write(root, "sys/kernel/kexec_crash_loaded", "1\n")
    write(root, "proc/sys/kernel/random/boot_id", "00000000-0000-0000-0000-000000000000\n")
    rebooted = backend(standin, state_dir)
    assert rebooted.loaded(kernel(root)) is None
    assert rebooted.apply(header, kernel(root)).generation == 2  # generations keep counting across boots


def test_a_damaged_state_file_costs_one_reload_not_a_crash(standin, root, tmp_path):
    state_dir = tmp_path / "state"
    backend(standin, state_dir).apply(model(root), kernel(root))
    (state_dir / STATE_FILE).write_text("{not json")
    assert backend(standin, state_dir).loaded(kernel(root)) is None


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def to_dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")  # read to its end, it never ends


def oversized(path: Path) -> None:
    path.write_bytes(bytes(64 * 1024 + 1))


@pytest.mark.parametrize(("name", "plant", "why"), [
    (STATE_FILE, os.mkfifo, "is not a regular file; crashhpd refuses to read it"),  # opened, it would block
    (HEADER_FILE, to_dev_zero, "is a symlink; crashhpd refuses to follow it"),
    (STATE_FILE, oversized, "is larger than 65536 bytes; crashhpd refuses to read it"),
])
def test_a_planted_state_file_costs_one_reload_and_is_never_read(standin, root, tmp_path, caplog, deadline, name,
                                                                 plant, why):
    # stand-in: a real load needs a kernel with kexec_load
    state_dir = tmp_path / "state"
    backend(standin, state_dir).apply(model(root), kernel(root))
    (state_dir / name).unlink()
    plant(state_dir / name)
    with caplog.at_level(logging.WARNING, logger="crashhpd"):
        again = backend(standin, state_dir)
    assert again.loaded(kernel(root)) is None
    assert warnings_of(caplog) == [f"{state_dir / name} {why}; the next burst reloads"]


def test_what_is_planted_at_a_fixed_temporary_name_does_not_matter(standin, root, tmp_path, deadline):
    # stand-in: a real load needs a kernel with kexec_load
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o700)
    outside = write(tmp_path, "outside", "precious")
    os.mkfifo(state_dir / f"{STATE_FILE}.tmp")  # opened for writing, it blocks until someone reads it
    (state_dir / f"{HEADER_FILE}.tmp").symlink_to(outside)
    models = Models(root)
    backend(standin, state_dir).apply(models.now(), kernel(root))
    assert backend(standin, state_dir).loaded(kernel(root)) == models.loaded_by(standin) == persisted(state_dir)
    assert outside.read_text() == "precious"


def test_the_model_header_and_its_record_are_0600_in_a_0700_dir(standin, root, tmp_path):
    # stand-in: a real load needs a kernel with kexec_load
    state_dir = tmp_path / "state"
    old = os.umask(0)  # not even an empty umask widens them
    try:
        backend(standin, state_dir).apply(model(root), kernel(root))
    finally:
        os.umask(old)
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert sorted(os.listdir(state_dir)) == [HEADER_FILE, STATE_FILE]
    assert all(stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600 for name in (HEADER_FILE, STATE_FILE))


@pytest.mark.root
def test_a_state_dir_of_another_owner_is_never_read_nor_written(standin, root, tmp_path, caplog):
    # stand-in: a real load needs a kernel with kexec_load
    state_dir = tmp_path / "state"
    backend(standin, state_dir).apply(model(root), kernel(root))
    saved = {name: (state_dir / name).read_bytes() for name in (HEADER_FILE, STATE_FILE)}
    os.chown(state_dir, NOBODY, -1)
    refusal = f"{state_dir} is owned by uid {NOBODY}, not 0; crashhpd refuses a directory another user controls"
    with caplog.at_level(logging.WARNING, logger="crashhpd"):
        again = backend(standin, state_dir)
        assert again.loaded(kernel(root)) is None
        assert again.apply(model(root), kernel(root)).generation == 1  # the reload it costs
    assert warnings_of(caplog) == [f"{refusal}; the next burst reloads",
                                   f"cannot save the kexec state: {refusal}; a restart will reload once"]
    assert {name: (state_dir / name).read_bytes() for name in saved} == saved


def test_health_reports_every_documented_key(standin, root, tmp_path):
    # stand-in: a real load needs a kernel with kexec_load
    b = backend(standin, tmp_path / "state")
    b.apply(model(root), kernel(root))
    health = b.health(kernel(root))
    assert health.ok and health.detail == "crash kernel loaded by crashhpd, generation 1"
    extra = health.extra
    assert extra["binary"] == str(standin.path) and extra["version"] == "2.0.25"
    assert extra["argv"] == expected_argv(standin)
    assert (extra["crash_loaded"], extra["load_limit"], extra["last_exit"], extra["backoff_s"]) == (1, None, 0, 0.0)


# --- a storm during a failing reload ------------------------------------------------------------------


def test_storm_during_failing_reloads_ends_in_one_load_of_the_newest_header(standin, root, tmp_path):
    # stand-in: failing N times on cue, then succeeding, needs a scripted kexec
    busy = {"exit": 1, "stderr": EBUSY}
    freed = {"exit": 1, "stderr": "kexec_load failed: Cannot allocate memory\n", "kernel": "freed"}
    standin.script(busy, busy, freed, {"exit": 1, "stderr": "Cannot load /var/lib/kdump/initrd.img\n"}, {})
    b = backend(standin, tmp_path / "state")
    models = Models(root)
    retries = []
    for blocks in range(1, 6):  # each burst hot-adds one more block; the daemon retries with the newest header
        hot_add(root, blocks)
        header = models.now()
        if b.loaded(kernel(root)) == header:
            continue
        try:
            b.apply(header, kernel(root))
        except BackendError as err:
            retries.append(err.retry_after)
    assert retries == [1.0, 2.0, 0.0, 4.0]
    successes = [c for c in standin.loads() if c["exit"] == 0]
    assert len(standin.loads()) == 5 and len(successes) == 1
    final_iomem = (root / "proc/iomem").read_bytes()
    assert successes[0]["iomem_sha256"] == hashlib.sha256(final_iomem).hexdigest()  # it saw the newest state
    assert b.loaded(kernel(root)) == models.loaded_by(standin) == persisted(tmp_path / "state") == model(root)
    assert b.state().generation == 1 and b.health(kernel(root)).ok


# --- the real kexec-tools --------------------------------------------------------------------------


REAL_KEXEC = shutil.which("kexec")
needs_real_kexec = pytest.mark.skipif(REAL_KEXEC is None, reason="kexec-tools is not installed")


@needs_real_kexec
def test_real_kexec_version_is_parsed(root, tmp_path):
    package = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "kexec-tools"], capture_output=True, text=True)
    if package.returncode != 0:
        pytest.skip("kexec-tools is not a Debian package here")
    upstream = package.stdout.split(":")[-1].split("-")[0]  # 1:2.0.25-3+b1 -> 2.0.25
    health = KexecBackend(KexecConfig(), str(root), str(tmp_path / "state"), kernel(root)).health(kernel(root))
    assert health.extra["binary"] == REAL_KEXEC
    assert health.extra["version"] == upstream


@needs_real_kexec
def test_real_kexec_failure_is_one_clear_backend_error(root, tmp_path):
    if os.path.exists("/sys/kernel/kexec_crash_loaded"):
        pytest.skip("this kernel has kexec: the real load could succeed and replace the host's crash kernel")
    image = write(tmp_path, "vmlinuz", "not a kernel")
    initrd = write(tmp_path, "initrd.img", "not an initrd")
    direct = subprocess.run([REAL_KEXEC, "-p", f"--initrd={initrd}", "--command-line=quiet", str(image)],
                            capture_output=True, text=True)
    assert direct.returncode != 0
    last_line = direct.stderr.strip().splitlines()[-1]
    b = KexecBackend(KexecConfig(kernel=str(image), initrd=str(initrd), cmdline="quiet"), str(root),
                     str(tmp_path / "state"), kernel(root))
    with pytest.raises(BackendError) as err:
        b.apply(model(root), kernel(root))
    message = str(err.value)
    assert message.startswith(f"kexec -p failed with exit status {direct.returncode}: ")
    assert message.endswith(last_line)
    assert "\n" not in message


# --- the same storm through the real daemon -----------------------------------------------------------


@pytest.mark.root
@pytest.mark.skipif(can_inject() is not None, reason=can_inject() or "")
def test_daemon_storm_during_failing_reloads_ends_in_one_load_of_the_newest_header(standin, root, tmp_path):
    # stand-in: the reloads fail on cue (the kexec lock held elsewhere) until the test lets them succeed;
    # the daemon, its uevents (real, injected through /sys) and its snapshots and headers are all real
    busy = {"exit": 1, "stderr": EBUSY}
    standin.script({}, default=busy)  # the start-up load succeeds, every later one is refused
    state_dir = tmp_path / "state"
    config = write_config(tmp_path / "crashhpd.toml", {
        "root": str(root), "backend": "kexec",
        "monitor": {"source": "kernel"},
        "debounce": {"quiet_ms": 100, "max_delay_ms": 1000},
        "sandbox": {"state_dir": str(state_dir)},
        "control": {"socket": str(tmp_path / "control.sock")},
        "kexec": {"binary": str(standin.path)},
    })
    daemon = DaemonProcess(tmp_path, config, {"KEXEC_STANDIN_CONTROL": str(standin.control)})
    try:
        daemon.wait_ready()
        # the start-up load succeeded; a uevent of the host's (or a test's just before) may already have
        # brought a refused reload after it: the storm's own are counted below
        assert standin.loads()[0]["exit"] == 0 and all(c["exit"] == 1 for c in standin.loads()[1:])
        for blocks in range(1, 5):  # the storm: a hot-add per step, a burst of uevents each, reloads failing
            hot_add(root, blocks)
            inject("add", 8)
            inject("online", 8)
            wait_for(lambda: standin.loads()[-1]["iomem_sha256"] == sha256(root / "proc/iomem"), 10,
                     f"a failed reload that saw {blocks} hot-added blocks")
        failed = len(standin.loads()) - 1
        standin.script({}, *[busy] * failed)  # the lock is free again: the next load succeeds
        inject("online", 1)  # a late event (the retry timer may be up to a minute away by now)
        wait_for(lambda: (state_dir / STATE_FILE).exists()
                 and json.loads((state_dir / STATE_FILE).read_text())["generation"] == 2, 15, "generation 2")
        daemon.wait_idle()  # the daemon's own word that nothing else is due
    finally:
        daemon.stop()
    loads = standin.loads()
    assert failed >= 4 and [c["exit"] == 0 for c in loads].count(True) == 2  # start-up, then exactly one more
    assert loads[-1]["exit"] == 0 and loads[-1]["iomem_sha256"] == sha256(root / "proc/iomem")
    newest = generated(root, "kexec-tools")
    assert json.loads((state_dir / STATE_FILE).read_text())["sha256"] == hashlib.sha256(newest).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- kexec gone, state not writable ---------------------------------------------------------------


def test_a_kexec_removed_after_start_up_is_retried_with_backoff_and_unhealthy(standin, root, tmp_path):
    # stand-in: it is removed from under the backend after its version was asked
    b = backend(standin, tmp_path / "state")
    assert b.health(kernel(root)).ok
    standin.path.unlink()
    errors = failing_applies(b, root, 3)
    assert str(errors[0]) == f"{standin.path}: cannot run: No such file or directory"
    assert all(str(standin.path) in str(e) for e in errors)  # then: not an executable file, looked for again
    assert [e.retry_after for e in errors] == [1.0, 2.0, 4.0]
    health = b.health(kernel(root))
    assert not health.ok and str(standin.path) in health.detail
    standin.path.symlink_to(STANDIN)  # reinstalled: the next try succeeds and clears it
    b.apply(model(root), kernel(root))
    assert b.health(kernel(root)).ok


def test_a_state_dir_that_cannot_be_written_makes_the_backend_unhealthy(standin, root, tmp_path, caplog):
    # stand-in: a real load needs a kernel with kexec_load
    state_dir = tmp_path / "state"
    b = backend(standin, state_dir)
    b.apply(model(root), kernel(root))
    subprocess.run(["chattr", "+i", str(state_dir)], check=True)  # read-only even for root
    try:
        hot_add(root, 1)
        with caplog.at_level(logging.WARNING, logger="crashhpd"):
            b.apply(model(root), kernel(root))  # the load itself succeeds
        health = b.health(kernel(root))
        assert not health.ok and health.detail.startswith("cannot save the kexec state: ")
        assert health.detail.endswith("a restart will reload once")
    finally:
        subprocess.run(["chattr", "-i", str(state_dir)], check=True)
    hot_add(root, 2)
    b.apply(model(root), kernel(root))
    assert b.health(kernel(root)).ok


def test_a_hung_kexec_version_costs_at_most_the_probe_bound_whatever_timeout_s_says(standin, root, tmp_path):
    # stand-in: a kexec whose --version hangs; it is the one kexec run inside the daemon's loop,
    # so it must end well before any watchdog, even with timeout_s at its 600 s maximum
    standin.script(version_delay_s=60)
    b = backend(standin, tmp_path / "state", timeout_s=600)
    (version,) = standin.calls()
    assert not alive(version["pid"])  # killed at the bound: 60 s would not have passed yet
    health = b.health(kernel(root))
    assert not health.ok and "did not finish within 5 s" in health.detail


def test_load_argv_forces_kexec_load_unless_file_load():
    """kexec-tools 2.0.27 and later try kexec_file_load on a plain -p: then the kernel, not kexec-tools, would
    build the header, and the kexec-tools layout crashhpd models would be the wrong one."""
    from crashhpd.backends.kdump_discovery import CrashKernel
    from crashhpd.backends.kexec import load_argv

    crash = CrashKernel("/boot/vmlinuz", None, "root=/dev/vda1", "test")
    assert load_argv("/usr/sbin/kexec", crash, file_load=False, hotplug=False)[:3] == ["/usr/sbin/kexec", "-p", "-c"]
    assert load_argv("/usr/sbin/kexec", crash, file_load=True, hotplug=False)[:3] == ["/usr/sbin/kexec", "-p", "-s"]
    assert "-c" not in load_argv("/usr/sbin/kexec", crash, file_load=True, hotplug=False)
