# SPDX-License-Identifier: GPL-2.0-only
"""The passive `kernel` backend and `auto`'s choice, on fake /proc and /sys trees.

The kernel's side (it rewriting the header on hotplug) cannot happen on this
VM, whose kernel has no kexec; the trees stand in for the attributes it
publishes, and the headers are crashhpd's real ones built from those trees.
"""

import logging
import os
from pathlib import Path

import pytest
from faketree import kernel, make_tree, write

from crashhpd.backends.kernel import KernelBackend, choose
from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.layout import preset
from crashhpd.elfcorehdr.pack import capacity
from crashhpd.errors import BackendError
from crashhpd.service.health_log import HealthLog
from crashhpd.sysview.snapshot import read_snapshot

CPU_ATTR = "sys/devices/system/cpu/crash_hotplug"
MEM_ATTR = "sys/devices/system/memory/crash_hotplug"
LOADED = "sys/kernel/kexec_crash_loaded"
SEGMENT_PHDR_BYTES = capacity(64) - 64  # what /sys/kernel/crash_elfcorehdr_size says with NR_CPUS=64


def tree(root: Path, fixtures: Path, **extra: str) -> Path:
    return make_tree(root, (fixtures / "iomem/qemu-kvm-crashkernel.txt").read_text(), possible="0-3", extra=extra)


def header(root: Path) -> bytes:
    return build_valid(read_snapshot(str(root)), preset("kernel")).data


def files_and_mtimes(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(("extra", "expected"), [
    ({CPU_ATTR: "1\n", MEM_ATTR: "1\n"}, "kernel"),
    ({CPU_ATTR: "0\n", MEM_ATTR: "1\n"}, "kernel"),
    ({CPU_ATTR: "1\n"}, "kernel"),
    ({CPU_ATTR: "0\n", MEM_ATTR: "0\n"}, "kexec"),
    ({}, "kexec"),
])
def test_auto_chooses_the_passive_backend_only_when_the_kernel_updates_the_header(tmp_path, fixtures, extra, expected):
    root = tree(tmp_path, fixtures, **extra)
    assert choose(kernel(root)) == expected


def test_apply_records_and_touches_nothing(tmp_path, fixtures):
    root = tree(tmp_path, fixtures, **{CPU_ATTR: "1\n", MEM_ATTR: "1\n", LOADED: "1\n"})
    backend = KernelBackend()
    assert backend.loaded(kernel(root)) is None and backend.state() is None
    before = files_and_mtimes(root)
    first = header(root)
    applied = backend.apply(first, kernel(root))
    assert (applied.generation, applied.header_size) == (1, len(first))
    assert backend.loaded(kernel(root)) == first
    write(root, "sys/devices/system/cpu/online", "0-2\n")  # CPU 3 went offline: the kernel layout drops its note
    second = header(root)
    assert second != first
    assert backend.apply(second, kernel(root)).generation == 2
    assert backend.loaded(kernel(root)) == second
    after = files_and_mtimes(root)
    del after[str(root / "sys/devices/system/cpu/online")]
    del before[str(root / "sys/devices/system/cpu/online")]
    assert after == before  # nothing written, nothing reloaded


def test_health_rereads_the_attributes_on_every_call(tmp_path, fixtures):
    root = tree(tmp_path, fixtures, **{CPU_ATTR: "1\n", MEM_ATTR: "1\n", LOADED: "1\n"})
    backend = KernelBackend()
    assert backend.health(kernel(root)).ok
    write(root, CPU_ATTR, "0\n")
    assert backend.health(kernel(root)).ok  # memory still updated by the kernel
    write(root, MEM_ATTR, "0\n")
    health = backend.health(kernel(root))
    assert not health.ok
    assert "the kernel no longer updates the header (crash_hotplug cpu=0 memory=0)" in health.detail
    assert "does not reload" in health.detail
    assert (health.extra["crash_hotplug_cpu"], health.extra["crash_hotplug_memory"]) == (0, 0)
    write(root, CPU_ATTR, "1\n")
    write(root, MEM_ATTR, "1\n")  # the lock holder finished: the transient 0 is gone
    assert backend.health(kernel(root)).ok


def test_missing_attributes_mean_the_kernel_does_not_update(tmp_path, fixtures):
    health = KernelBackend().health(kernel(tree(tmp_path, fixtures, **{LOADED: "1\n"})))
    assert not health.ok
    assert "crash_hotplug cpu=missing memory=missing" in health.detail


def test_no_crash_kernel_is_said_loudly(tmp_path, fixtures):
    health = KernelBackend().health(kernel(tree(tmp_path, fixtures, **{CPU_ATTR: "1\n", MEM_ATTR: "1\n",
                                                                     LOADED: "0\n"})))
    assert not health.ok
    assert health.detail.startswith("NO CRASH KERNEL LOADED")


def test_a_transient_zero_is_reported_once_and_never_acted_on(tmp_path, fixtures, caplog):
    root = tree(tmp_path, fixtures, **{CPU_ATTR: "1\n", MEM_ATTR: "1\n", LOADED: "1\n"})
    backend = KernelBackend()
    journal = HealthLog()  # what the daemon feeds each verdict through after an update
    backend.apply(header(root), kernel(root))
    assert backend.health(kernel(root)).ok
    journal.observe(backend.name, backend.health(kernel(root)))
    write(root, CPU_ATTR, "0\n")
    write(root, MEM_ATTR, "0\n")
    before = files_and_mtimes(root)
    with caplog.at_level(logging.INFO, logger="crashhpd"):
        for _ in range(2):
            health = backend.health(kernel(root))
            assert not health.ok
            journal.observe(backend.name, health)
        assert backend.apply(header(root), kernel(root)).generation == 2  # still passive: recorded, nothing loaded
    assert files_and_mtimes(root) == before
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no longer updates the header" in warnings[0].getMessage()


def test_health_is_pure_it_logs_nothing_however_often_status_asks(tmp_path, fixtures, caplog):
    root = tree(tmp_path, fixtures, **{CPU_ATTR: "0\n", MEM_ATTR: "0\n", LOADED: "0\n"})
    with caplog.at_level(logging.DEBUG, logger="crashhpd"):
        for _ in range(3):
            assert not KernelBackend().health(kernel(root)).ok
    assert caplog.records == []


def test_capacity_is_the_segment_the_kernel_publishes(tmp_path, fixtures):
    root = tree(tmp_path, fixtures, **{CPU_ATTR: "1\n", "sys/kernel/crash_elfcorehdr_size": f"{SEGMENT_PHDR_BYTES}\n"})
    assert KernelBackend().capacity(kernel(root)) == capacity(64)
    assert KernelBackend().capacity(kernel(tree(tmp_path / "old", fixtures, **{CPU_ATTR: "1\n"}))) is None


def test_a_header_larger_than_the_segment_is_refused_and_the_old_one_stays(tmp_path, fixtures):
    # a segment with room for only 4 program headers, page-aligned like every kexec segment: 4096 bytes
    root = tree(tmp_path, fixtures, **{CPU_ATTR: "1\n", "sys/kernel/crash_elfcorehdr_size": f"{4 * 56}\n"})
    backend = KernelBackend()
    small = b"\x7fELF" + bytes(4092)
    backend.apply(small, kernel(root))
    big = header(root) + bytes(4096)  # 8192 bytes
    with pytest.raises(BackendError) as err:
        backend.apply(big, kernel(root))
    assert "needs 8192 bytes" in str(err.value) and "holds 288" in str(err.value)
    assert err.value.retry_after is None
    assert backend.loaded(kernel(root)) == small and backend.state().generation == 1


def test_the_real_host_has_no_kernel_updated_header():
    if os.path.exists("/sys/kernel/kexec_crash_loaded"):
        pytest.skip("this kernel has kexec; the expectation below is for the test VM's kernel without it")
    assert choose(kernel("/")) == "kexec"
    assert not KernelBackend().health(kernel("/")).ok


def test_the_passive_backend_models_the_kernels_own_cpu_set_whatever_cpus_says(tmp_path, fixtures):
    """6.6+ writes a note per possible CPU and ignores online/offline: an offline CPU keeps its note."""
    from crashhpd.config import validate
    from crashhpd.wiring import build_parts

    root = make_tree(tmp_path / "root", (fixtures / "iomem/qemu-kvm-crashkernel.txt").read_text(),
                     possible="0-3", online="0-2", extra={CPU_ATTR: "1\n", MEM_ATTR: "1\n", LOADED: "1\n"})
    for cpus in ("online", "present", "possible"):
        parts = build_parts(validate([("test", {"root": str(root), "backend": "kernel", "cpus": cpus})]), None)
        assert parts.layout.cpus == "possible"
    old = make_tree(tmp_path / "old", (fixtures / "iomem/qemu-kvm-crashkernel.txt").read_text(),
                    possible="0-7", present="0-3", online="0-2", extra={LOADED: "1\n"})  # before 6.6
    parts = build_parts(validate([("test", {"root": str(old), "backend": "kernel"})]), None)
    assert parts.layout.cpus == "present"
    sandbox = build_parts(validate([("test", {"root": str(root), "backend": "sandbox",
                                              "state_dir": str(tmp_path / "state")})]), None)
    assert sandbox.layout.cpus == "online"  # the sandbox keeps what cpus says


def test_status_names_the_possible_cpus_sysfs_gives_no_note_for(tmp_path, fixtures):
    import selectors

    from crashhpd import config as config_mod
    from crashhpd.service.daemon import Daemon
    from crashhpd.service.metrics import Metrics
    from crashhpd.service.notify import Notifier
    from crashhpd.wiring import build_parts

    root = make_tree(tmp_path / "root", (fixtures / "iomem/qemu-kvm-crashkernel.txt").read_text(),
                     possible="0-5", present="0-3", extra={CPU_ATTR: "1\n", MEM_ATTR: "1\n", LOADED: "1\n"})
    cfg = config_mod.validate([("test", {"root": str(root), "backend": "kernel", "kernel": {"recover": False}})])
    parts = build_parts(cfg, None)
    daemon = Daemon(parts, build_parts, selectors.DefaultSelector(), Metrics(), Notifier(),
                    None, None, config_mod.load)
    daemon.update("events")
    status = daemon.status()
    assert status.cpus == 4 and status.cpus_without_notes == [4, 5]
