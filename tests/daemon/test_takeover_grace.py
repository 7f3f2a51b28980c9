# SPDX-License-Identifier: GPL-2.0-only
"""An unhealthy backend keeps the udev takeover for a bounded grace, then the distribution's rule is back.

The real update in this process, on a fake root whose kernel says it no longer updates its header
(crash_hotplug 0) with [kernel] recover on; the clock is the test's, so the grace passes without waiting.
"""

import selectors

from faketree import QEMU_GUEST, make_tree, write

from crashhpd import config as config_mod
from crashhpd.service.daemon import Daemon
from crashhpd.service.metrics import Metrics
from crashhpd.service.notify import Notifier
from crashhpd.service.updater import GIVE_BACK_AFTER_S
from crashhpd.wiring import build_parts

HOTPLUG = ("sys/devices/system/cpu/crash_hotplug", "sys/devices/system/memory/crash_hotplug")


def test_the_rule_is_given_back_after_the_grace_and_taken_again_once_healthy(tmp_path):
    root = make_tree(tmp_path / "root", QEMU_GUEST, extra={"sys/kernel/kexec_crash_loaded": "1\n",
                                                            **{attr: "0\n" for attr in HOTPLUG}})
    cfg = config_mod.validate([("test", {"root": str(root), "backend": "kernel", "state_dir": str(tmp_path / "s")})])
    now = [1000.0]
    daemon = Daemon(build_parts(cfg, None), build_parts, selectors.DefaultSelector(), Metrics(), Notifier(), None,
                    None, config_mod.load, clock=lambda: now[0])
    daemon.update("events")
    updater = daemon.updater
    assert daemon.status().backend_ok is False and updater.give_back_at() == 1000.0 + GIVE_BACK_AFTER_S
    now[0] += GIVE_BACK_AFTER_S - 1
    assert updater.not_keeping(now[0]) is None  # within the grace: the takeover stands
    now[0] += 1
    assert updater.not_keeping(now[0]) == (
        f"the kernel backend has been unhealthy for {GIVE_BACK_AFTER_S:g} s: the kernel no longer updates the header "
        "(crash_hotplug cpu=0 memory=0); it reads 0 briefly while a load holds the kexec lock, so crashhpd does not "
        'reload: if this persists, restart crashhpd with backend "auto" or "kexec"')
    for attr in HOTPLUG:
        write(root, attr, "1\n")
    daemon.update("events")  # healthy again: the grace is over, and so is the verdict
    assert updater.give_back_at() is None and updater.not_keeping(now[0]) is None
