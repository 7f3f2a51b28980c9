# SPDX-License-Identifier: GPL-2.0-only
"""The daemon as a real process on a fake root, driven by real kernel uevents.

The root tree is fake (crashhpd reads it as it would read / inside a guest);
the events are real: writing an action to /sys/devices/system/memory/memoryN/uevent
makes the kernel broadcast a uevent to every netlink listener.
"""

import signal
import time
import tomllib
from pathlib import Path

import pytest
from daemonproc import UEVENTS, DaemonProcess, generated, generation, inject, segment_header, wait_for, write_config
from faketree import VIRTIO_MEM, make_tree, replace_iomem, virtio_mem_plugged

pytestmark = UEVENTS

QUIET_MS = 150


def tree_with(root: Path, extra_blocks: int) -> None:
    """The virtio-mem fixture plus `extra_blocks` hot-added 128 MiB blocks under virtio1."""
    replace_iomem(root, virtio_mem_plugged(extra_blocks))


@pytest.fixture
def env(tmp_path: Path):
    root = make_tree(tmp_path / "root", VIRTIO_MEM)
    state_dir = tmp_path / "state"
    config = write_config(tmp_path / "crashhpd.toml", {
        "root": str(root),
        "monitor": {"source": "kernel"},
        "debounce": {"quiet_ms": QUIET_MS, "max_delay_ms": 2000},
        "backend": "sandbox", "sandbox": {"state_dir": str(state_dir)},
        "log": {"level": "debug"},
        "control": {"socket": str(tmp_path / "control.sock")},
    })
    daemons: list[DaemonProcess] = []

    def start(cfg: Path = config, **env: str) -> DaemonProcess:
        d = DaemonProcess(tmp_path, cfg, env)
        daemons.append(d)
        d.wait_ready()
        return d

    yield root, state_dir, config, start
    for d in daemons:
        d.stop()


def test_startup_applies_the_first_header_before_ready(env):
    root, state_dir, _, start = env
    d = start()
    assert generation(state_dir) == 1
    assert segment_header(state_dir) == generated(root)
    assert d.notify.seen("STATUS=generation 1")


def test_hot_add_with_a_real_uevent_is_exactly_one_apply(env):
    root, state_dir, _, start = env
    d = start()
    tree_with(root, 1)
    inject("online")
    wait_for(lambda: generation(state_dir) == 2, 10, "generation 2")
    d.wait_idle()
    assert generation(state_dir) == 2, "one event, one apply"
    assert segment_header(state_dir) == generated(root)
    assert "+ RAM 0x350000000-0x357ffffff (128 MiB)" in d.stderr()


def test_event_without_a_relevant_change_applies_nothing(env):
    root, state_dir, _, start = env
    d = start()
    inject("change")
    wait_for(lambda: "header unchanged" in d.stderr(), 10, "the skipped update")
    assert generation(state_dir) == 1


def test_storm_of_3840_events_is_at_most_two_applies_and_ends_correct(env, tmp_path):
    """However long the 3840 writes take, the debounce's maximum delay does not end the burst under them."""
    root, state_dir, config, start = env
    d = start(write_config(tmp_path / "storm.toml", {
        **tomllib.loads(config.read_text()), "debounce": {"quiet_ms": QUIET_MS, "max_delay_ms": 60_000}}))
    for step in range(4):  # memory arrives while the storm runs
        tree_with(root, step + 1)
        inject("online", 960)
    wait_for(lambda: segment_header(state_dir) == generated(root), 10, "the final header")
    status = d.wait_idle()
    assert status["events_received"] >= 3840  # every write reached the daemon (other tests' may add to it)
    assert status["applies"] == generation(state_dir)  # the start-up apply counted too
    assert generation(state_dir) - 1 <= 2
    assert segment_header(state_dir) == generated(root)
    assert d.proc.poll() is None


def test_overflowing_the_receive_buffer_triggers_a_rescan_that_ends_correct(env, tmp_path):
    root, state_dir, _, start = env
    config = write_config(tmp_path / "tiny.toml", {
        "root": str(root), "monitor": {"source": "kernel", "receive_buffer_bytes": 65536},
        "debounce": {"quiet_ms": QUIET_MS, "max_delay_ms": 2000}, "backend": "sandbox",
        "sandbox": {"state_dir": str(state_dir)},
        "log": {"level": "debug"}, "control": {"socket": str(tmp_path / "control.sock")},
    })
    d = start(config)
    d.signal(signal.SIGSTOP)  # the daemon reads nothing while the storm fills its socket
    try:
        tree_with(root, 3)
        inject("online", 3840)
    finally:
        d.signal(signal.SIGCONT)
    wait_for(lambda: "ENOBUFS" in d.stderr(), 10, "the overflow to be noticed")
    wait_for(lambda: segment_header(state_dir) == generated(root), 10, "the rescanned header")
    assert d.proc.poll() is None


def ready_after_reloading(d: DaemonProcess) -> bool:
    starts = [m.startswith("RELOADING=1") for m in d.notify.messages]
    return True in starts and any(m.startswith("READY=1") for m in d.notify.messages[starts.index(True):])


def test_sighup_with_a_bad_file_keeps_the_old_config(env):
    root, state_dir, config, start = env
    d = start()
    good = config.read_text()
    config.write_text(good.replace(f"quiet_ms = {QUIET_MS}", "quiet_ms = -5"))
    d.signal(signal.SIGHUP)
    wait_for(lambda: "debounce.quiet_ms" in d.stderr(), 10, "the invalid key to be named")
    wait_for(lambda: ready_after_reloading(d), 5, "READY=1 after RELOADING=1")
    tree_with(root, 1)
    inject("online")
    wait_for(lambda: generation(state_dir) == 2, 10, "an apply under the old config")
    assert d.proc.poll() is None


def test_sighup_with_a_good_file_takes_effect(env):
    root, state_dir, config, start = env
    d = start()
    config.write_text(config.read_text().replace('root = ', 'layout = "kexec-tools"\nroot = '))
    d.signal(signal.SIGHUP)
    wait_for(lambda: generation(state_dir) == 2, 10, "the header in the new layout")
    assert segment_header(state_dir) == generated(root, "kexec-tools")
    wait_for(lambda: ready_after_reloading(d), 5, "READY=1 after RELOADING=1")


def test_watchdog_pings_status_and_clean_stop(env):
    _, _, _, start = env
    d = start(WATCHDOG_USEC="200000")
    wait_for(lambda: d.notify.seen("WATCHDOG=1"), 5, "a watchdog ping")
    assert d.notify.seen("STATUS=")
    assert d.stop() == 0
    assert any("STOPPING=1" in m for m in d.notify.messages)


def wakeups(pid: int) -> int:
    """Context switches of the daemon's process: each wake-up from the loop's select() adds one."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return sum(int(line.split()[1]) for line in status if "ctxt_switches" in line)


def settled(pid: int, timeout: float = 5) -> int:
    """The daemon's wake-ups once they have stopped: the same count twice in a row, 50 ms apart."""
    deadline = time.monotonic() + timeout
    previous = wakeups(pid)
    while True:
        time.sleep(0.05)
        now = wakeups(pid)
        if now == previous:
            return now
        assert time.monotonic() < deadline, "the daemon did not fall asleep"
        previous = now


def test_an_idle_daemon_does_not_wake_up(env):
    _, _, _, start = env
    d = start()  # no WATCHDOG_USEC: nothing at all is due
    d.wait_idle()  # its own word that nothing is due; then no more asking, which would wake it
    before = settled(d.proc.pid)
    time.sleep(3)  # not a wait for anything: the 3 s of quiet are the thing measured
    assert wakeups(d.proc.pid) - before <= 2, "an idle daemon must sleep until an event or a signal"


def test_the_passive_backend_rereads_crash_hotplug_on_events(env, tmp_path):
    root, state_dir, _, start = env
    hotplug = root / "sys/devices/system/memory/crash_hotplug"
    hotplug.write_text("1\n")
    config = write_config(tmp_path / "auto.toml", {
        "root": str(root), "backend": "auto", "monitor": {"source": "kernel"},
        "debounce": {"quiet_ms": QUIET_MS, "max_delay_ms": 2000}, "sandbox": {"state_dir": str(state_dir)},
        "control": {"socket": str(tmp_path / "control.sock")},
    })
    d = start(config)
    assert "backend kernel" in d.stderr()  # auto: the kernel keeps the header itself
    hotplug.write_text("0\n")
    # a fixed sleep on purpose: the check is that nothing happens without an event, so there is no
    # report to wait for; the sleep gives a daemon that reread crash_hotplug on a timer the time to show it
    time.sleep(QUIET_MS / 1000 * 3)
    assert "no longer updates the header" not in d.stderr(), "read on events, not on a timer"
    inject("online")
    wait_for(lambda: "no longer updates the header" in d.stderr(), 10, "the change noticed on the next burst")
    assert not (state_dir / "elfcorehdr").exists(), "the passive backend never writes"
