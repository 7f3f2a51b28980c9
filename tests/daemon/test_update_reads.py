# SPDX-License-Identifier: GPL-2.0-only
"""One update reads and parses what it needs once: the kernel's header per read, the kexec state per apply.

The real loop's update in this process, with the kexec backend and the stand-in kexec on a fake kernel whose
loaded header is read back (tests/support/fakekcore.py); the parser and the kexec-state reader are counted.
"""

import selectors
import time
from collections import Counter
from pathlib import Path

import pytest
from daemonproc import kexec_setup
from fakekcore import CrashKernel
from faketree import QEMU_GUEST, QEMU_HOT_ADD_BASE, hot_added, replace_iomem

from crashhpd import config as config_mod
from crashhpd.abi.elf import EHDR, align_up
from crashhpd.elfcorehdr import build, coverage
from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.layout import preset
from crashhpd.elfcorehdr.pack import capacity
from crashhpd.service import updater
from crashhpd.service.daemon import Daemon
from crashhpd.service.metrics import Metrics
from crashhpd.service.notify import Notifier
from crashhpd.sysview import snapshot
from crashhpd.sysview.snapshot import read_snapshot
from crashhpd.wiring import build_parts

MEMSZ = align_up(capacity(64), 4096)


class Counted:
    """Calls of the parser on the kernel's header bytes, and reads of the kexec state, wherever they happen."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, kernel_header: bytes) -> None:
        self.calls: Counter[str] = Counter()
        parse = coverage.parse
        read_state = snapshot.read_kernel_state

        def counted_parse(data: bytes, previous=None):  # type: ignore[no-untyped-def]
            if data == kernel_header:
                self.calls["parse kernel header"] += 1
            return parse(data, previous)

        def counted_read(root: str):  # type: ignore[no-untyped-def]
            self.calls["read kexec state"] += 1
            return read_state(root)

        for module in (coverage, build):
            monkeypatch.setattr(module, "parse", counted_parse)
        for module in (snapshot, updater):
            monkeypatch.setattr(module, "read_kernel_state", counted_read)


def daemon_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Daemon, bytes]:
    setup = kexec_setup(tmp_path, QEMU_GUEST)
    for name, value in setup.env().items():
        monkeypatch.setenv(name, value)
    crash = CrashKernel(setup.root).install(b"\x7fELF", MEMSZ)
    held = build_valid(read_snapshot(str(setup.root)), preset("kexec-tools")).data
    crash.fill(held, MEMSZ)  # what kdump-tools loaded; the stand-in kexec never writes the fake kernel's memory
    ehdr = EHDR.unpack_from(held)
    held = held[:ehdr[5] + ehdr[10] * ehdr[9]]  # as the reader returns it: up to the end of the program headers
    assert len(held) < MEMSZ and held != build_valid(read_snapshot(str(setup.root)), preset("kexec-tools")).data
    cfg = config_mod.load(str(setup.config))
    daemon = Daemon(build_parts(cfg, None), build_parts, selectors.DefaultSelector(), Metrics(), Notifier(),
                    str(setup.config), None, config_mod.load)
    return setup.root, daemon, held


def run_update(daemon: Daemon) -> None:
    """One update to its end: the kexec child's pipes and pidfd driven from the daemon's own selector."""
    daemon.update("events")
    deadline = time.monotonic() + 30
    while daemon.updater.applying is not None:
        assert time.monotonic() < deadline, "the stand-in kexec did not finish"
        for key, mask in daemon.selector.select(1):
            key.data(mask)
        daemon.updater.step(time.monotonic())


def test_an_update_that_skips_parses_the_kernels_header_once_and_reads_the_kexec_state_once(tmp_path, monkeypatch):
    _root, daemon, held = daemon_on(tmp_path, monkeypatch)
    counted = Counted(monkeypatch, held)
    run_update(daemon)
    status = daemon.status()
    assert (status.applies, status.skipped_noop, status.kernel_header_in_sync) == (0, 1, True)
    assert counted.calls == {"parse kernel header": 1, "read kexec state": 1}


def test_an_update_that_reloads_parses_each_read_of_the_kernels_header_once(tmp_path, monkeypatch):
    root, daemon, held = daemon_on(tmp_path, monkeypatch)
    replace_iomem(root, hot_added(QEMU_GUEST, 1, QEMU_HOT_ADD_BASE))
    counted = Counted(monkeypatch, held)
    run_update(daemon)
    status = daemon.status()
    assert status.applies == 1 and status.kernel_header_in_sync is False  # the stand-in left the old header
    # once as the snapshot read it: the skip decision, the diff, the model-drift check and status all use that
    # parse, and the header read back after the reload, the same bytes, is compared, not parsed again
    assert counted.calls == {"parse kernel header": 1, "read kexec state": 2}


def test_status_says_how_many_crash_loads_the_kernel_still_allows(tmp_path, monkeypatch):
    """kexec_load_limit_panic (Linux commit a42aaad2e47b, v6.3): -1 is unlimited, a count is what is left."""
    from faketree import write

    root, daemon, _held = daemon_on(tmp_path, monkeypatch)
    assert daemon.status().crash_loads_left is None  # no such file: unlimited
    for text, left in (("-1\n", None), ("7\n", 7), ("0\n", 0)):
        write(root, "proc/sys/kernel/kexec_load_limit_panic", text)
        run_update(daemon)
        assert daemon.status().crash_loads_left == left


def test_readiness_lists_every_check_and_a_spent_load_limit_fails_one_with_its_metric(tmp_path, monkeypatch):
    """Status, the metrics and crashhpctl's rendering read the one verdict: each check with its outcome, and
    the check that failed is the reason the host is not protected."""
    from faketree import write
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from crashhpd.control.render import show_status
    from crashhpd.service.metrics import families

    root, daemon, _held = daemon_on(tmp_path, monkeypatch)
    run_update(daemon)
    before = {r["check"]: r["ok"] for r in daemon.status().readiness}
    assert before["crash_loads"] is True and before["header"] is not False
    write(root, "proc/sys/kernel/kexec_load_limit_panic", "0\n")
    run_update(daemon)
    status = daemon.status()
    loads = next(r for r in status.readiness if r["check"] == "crash_loads")
    assert loads["ok"] is False and loads["reason"] in status.unprotected_reasons and not status.protected

    class Collector:
        def collect(self):  # type: ignore[no-untyped-def]
            return families(status, time.time())

    registry = CollectorRegistry()
    registry.register(Collector())  # type: ignore[arg-type]
    exported = generate_latest(registry).decode()
    assert 'crashhpd_readiness_ok{check="crash_loads"} 0.0' in exported
    assert 'crashhpd_readiness_ok{check="backend"} 1.0' in exported
    import dataclasses
    text, code = show_status(dataclasses.asdict(status), time.time())  # type: ignore[arg-type]
    assert f"FAILED  crash_loads: {loads['reason']}" in text and code == 1


def test_the_ram_status_reports_is_the_whole_sum_after_hot_adds_and_a_hot_remove(tmp_path, monkeypatch):
    """Status sums the header's RAM once per build, from the last sum where the ranges moved (a comparison, not
    8192 additions): after each change it is the sum of the header's RAM ranges, counted whole here."""
    root, daemon, _held = daemon_on(tmp_path, monkeypatch)
    for blocks in (1, 3, 2):
        replace_iomem(root, hot_added(QEMU_GUEST, blocks, QEMU_HOT_ADD_BASE))
        run_update(daemon)
        status = daemon.status()
        whole = build_valid(read_snapshot(str(root)), preset("kexec-tools"))
        assert status.in_sync and status.ram_ranges == len(whole.model.ram)
        assert status.ram_bytes == sum(end - start + 1 for start, end in whole.model.ram)
