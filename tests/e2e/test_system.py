# SPDX-License-Identifier: GPL-2.0-only
"""crashhpd as a Debian service: systemd as PID 1, real udevd, the real kdump-tools, the .deb of this run.

Each boot is one scenario run once per module (see system.py for the images);
the tests read what it saw, and every fact is taken from inside the guest
with the system's own tools: systemctl, journalctl, crashhpctl, kdump-config's
and kexec's own runs (logged by wrappers around them, so counts do not rest on
crashhpd's word), and /proc/vmcore in the kdump kernel, which kdump-tools
loaded with the kdump-side initramfs of tests/e2e.

  6.1, hot-plug    boot; hot-add a DIMM (one reload by crashhpd, none by kdump-tools'
                   rule); hot-add a second and device_del it (the header drops it); crash
  6.1, service     systemctl reload with a good and a bad configuration; the watchdog
                   (SIGSTOP); kdump-tools loaded without acpi_no_memhotplug: crashhpd's
                   start-up loads once, adding it; crashhpd stopped: the rule reloads once
                   per event, and the crash dumps none of the DIMM
  6.12, hot-plug   kdump-tools loads with kexec_file_load (-s), crashhpd picks the kernel
                   backend; the same hot-add and hot-remove, the kernel's own header crashed

and on Debian 13 (systemd 257, kdump-tools 1.10.7, kexec-tools 2.0.29, whose plain
`kexec -p` tries kexec_file_load first), test ids with `trixie`:

  6.12 and 7.3,    boot; the same hot-plug as on 6.12, with kdump-tools as configured
    hot-plug       (no -s), and on 7.3 the kexec attributes under /sys/kernel/kexec/
  6.12, service    the same service cases; the control: what kdump-tools' rule does on
                   each event on a kernel that keeps its header current itself
"""

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crashhpd.backends.kdump_discovery import param_name
from crashhpd.backends.kexec_cmdline import LOADER_PARAMS

from .parts import Qemu
from .system import KDUMP_CONFIG_TAG as KDUMP_CONFIG
from .system import KEXEC_TAG as KEXEC
from .system import System, SystemGuest, kexec_loads, unloads
from .test_kdump import covered
from .vm import HOTPLUG_BASE, MIB, Guest

DIMM = 512 * MIB
BLOCKS = DIMM // (128 * MIB)
SECOND = HOTPLUG_BASE + DIMM  # the DIMM that is hot-removed again
APPLIED_ID = "911e15bd1f624518affacdbbe47cac21"
APPLIED = f"MESSAGE_ID={APPLIED_ID}"
READY_ID = "9ffe4970f6e64a199f9e343fb8d95f8f"
KERNEL_HEADER_STALE_ID = "ad5c2f75b8b54bca994fb2d34454a2c9"
RELOAD = "MESSAGE_ID=d3a28e4dc04444728fde7f1e758cf031"
CONFIG_INVALID = "MESSAGE_ID=ce2a9b46255f42a99b51c3a7b509ee9b"
DROP_IN = "/etc/crashhpd/crashhpd.toml.d"
TAKEN_OVER = "/run/udev/rules.d/50-kdump-tools.rules"  # where crashhpd puts it while it keeps the header


def check(guest: SystemGuest | Guest, condition: bool, what: str) -> None:
    """A failure that carries the guest's transcripts."""
    if not condition:
        raise (guest.guest if isinstance(guest, SystemGuest) else guest).failure(what)


def try_reloads(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r["args"] == "try-reload"]


def hot_add(g: SystemGuest, address: int, name: str) -> dict[str, Any]:
    """A DIMM over QMP, then everything it set off: blocks online, udevd's queue empty, crashhpd idle."""
    before = g.status()["events_received"]
    cursor = g.mark()
    g.guest.hot_add_memory(DIMM, address, name)
    g.wait("online", hex(address), hex(DIMM))
    g.sh("udevadm settle --timeout=240", timeout=250)
    return {"status": g.wait("idle", before), "cursor": cursor, "kexec": g.calls(KEXEC, cursor),
            "rule": g.calls(KDUMP_CONFIG, cursor), "applied": g.entries(f"-u crashhpd {APPLIED}", cursor)}


def hot_remove(g: SystemGuest, address: int, name: str) -> dict[str, Any]:
    """device_del: the guest offlines and removes the blocks and ejects the DIMM, QEMU says DEVICE_DELETED."""
    before = g.status()["events_received"]
    cursor = g.mark()
    g.guest.qmp("device_del", id=name)
    g.guest.qmp_event("DEVICE_DELETED", 180, device=name)
    g.wait("gone", hex(address), hex(DIMM))
    g.sh("udevadm settle --timeout=240", timeout=250)
    return {"status": g.wait("idle", before), "kexec": g.calls(KEXEC, cursor), "rule": g.calls(KDUMP_CONFIG, cursor),
            "verify": json.loads(g.sh("crashhpctl verify --json")), "journal": g.entries("-u crashhpd", cursor)}


def load_of(args: str) -> tuple[str, str | None, list[str]]:
    """A logged `kexec -p` as its kernel, initrd and command line's parameters. The wrapper logs "$*", so
    the command line is the words from --command-line= to the next option or to the kernel, the last word
    (kdump-config passes it before --initrd=, crashhpd after)."""
    words = args.split()
    initrd, params, inside = None, [], False
    for word in words[:-1]:
        if word.startswith("--command-line="):
            inside, word = True, word[len("--command-line="):]
        elif word.startswith("-"):
            inside = False
        if word.startswith("--initrd="):
            initrd = word[len("--initrd="):]
        elif inside and word:
            params.append(word)
    return words[-1], initrd, params


def real_paths(g: SystemGuest, calls: list[dict]) -> dict[str, str]:
    """Each kernel and initrd the loads named, resolved in the guest (kdump-tools names its links in
    /var/lib/kdump; crashhpd may name what they point at)."""
    files = sorted({f for c in kexec_loads(calls) for f in load_of(c["args"])[:2] if f})
    return dict(zip(files, g.sh(f"readlink -f {' '.join(files)}").split(), strict=True))


def same_load(ours: dict, distro: dict, files: dict[str, str], added: list[str]) -> list[str]:
    """How crashhpd's load differs from kdump-tools' beyond the parameters crashhpd `added`: [] when it names
    the same kernel and initrd and a command line equal to kdump-tools' plus `added`."""
    (kernel, initrd, params), (want_kernel, want_initrd, want_params) = load_of(ours["args"]), load_of(distro["args"])
    found = []
    if files[kernel] != files[want_kernel]:
        found.append(f"kernel {files[kernel]}, kdump-tools' {files[want_kernel]}")
    if (initrd and files[initrd]) != (want_initrd and files[want_initrd]):
        found.append(f"initrd {initrd}, kdump-tools' {want_initrd}")
    if params != want_params + added:
        found.append(f"command line {' '.join(params)!r}, kdump-tools' {' '.join(want_params)!r} + {added}")
    return found


def hotplug_scenario(qemu: Qemu, system: System, series: str, workdir: Path, kernel_args: str = "") -> dict[str, Any]:
    """Boot, look, hot-add two DIMMs, remove the second, crash; all that each stage reported."""
    with SystemGuest(qemu, system, series, workdir, kernel_args) as g:
        seen: dict[str, Any] = {"guest": g.guest, "booted": g.booted()}
        seen["active"] = g.run("systemctl is-active crashhpd kdump-tools")["stdout"].split()
        seen["status_text"] = g.sh("systemctl show -p StatusText --value crashhpd").strip()
        seen["journal"] = g.entries("-u crashhpd")
        seen["boot_kexec"] = g.calls(KEXEC)
        seen["boot_rule"] = g.calls(KDUMP_CONFIG)
        seen["crashhpctl"] = g.run("crashhpctl status")
        seen["crashhpctl_oper"] = g.run("id -nG && crashhpctl status", user="oper")
        seen["status"] = g.status()
        seen["takeover"] = g.run(f"ls {TAKEN_OVER}")["stdout"].split()  # empty when it is not there
        seen["add"] = hot_add(g, HOTPLUG_BASE, "dimm0")
        seen["verify"] = json.loads(g.sh("crashhpctl verify --json"))
        hot_add(g, SECOND, "dimm1")
        seen["remove"] = hot_remove(g, SECOND, "dimm1")
        seen["files"] = real_paths(g, g.calls(KEXEC))
        g.guest.send("CRASH")
        g.guest.expect("CRASHING")
        seen["vmcore"] = g.guest.expect("VMCORE")
        g.guest.send("PROBE", hex(HOTPLUG_BASE), hex(DIMM))
        seen["probed"] = g.guest.expect("PROBED")
        g.guest.send("READALL")
        seen["read"] = g.guest.expect("READ")
        g.guest.send("POWEROFF")
        check(g, g.guest.wait_exit() == 0, "QEMU did not exit cleanly after the kdump kernel powered off")
        return seen


@pytest.fixture(scope="module")
def on_61(qemu: Qemu, system_image: System, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return hotplug_scenario(qemu, system_image, "6.1", tmp_path_factory.mktemp("system-6.1"))


@pytest.fixture(scope="module")
def on_612(qemu: Qemu, system_image: System, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return hotplug_scenario(qemu, system_image, "6.12", tmp_path_factory.mktemp("system-6.12"),
                            "crashhpd_e2e.kexec_args=-s")


@pytest.fixture(scope="module")
def on_trixie_612(qemu: Qemu, trixie_image: System, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return hotplug_scenario(qemu, trixie_image, "6.12", tmp_path_factory.mktemp("trixie-6.12"))


@pytest.fixture(scope="module")
def on_trixie_73(qemu: Qemu, trixie_image: System, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return hotplug_scenario(qemu, trixie_image, "7.3", tmp_path_factory.mktemp("trixie-7.3"))


@dataclass(frozen=True, slots=True)
class Boot:
    """A hot-plug scenario's fixture and what its guest must show."""

    scenario: str  # the fixture's name
    backend: str  # auto's choice
    kexec_sysfs: str = "kernel"  # where crashhpd read the kexec attributes (Linux 6.19 moved them)
    kexec_args: str = ""  # KDUMP_KEXEC_ARGS of the boot


KEXEC_BOOTS = [pytest.param(Boot("on_61", "kexec"), id="bookworm-6_1")]
KERNEL_BOOTS = [pytest.param(Boot("on_612", "kernel", kexec_args="-s"), id="bookworm-6_12"),
                pytest.param(Boot("on_trixie_612", "kernel"), id="trixie-6_12"),
                pytest.param(Boot("on_trixie_73", "kernel", kexec_sysfs="kernel/kexec"), id="trixie-7_3")]


def _seen(request: pytest.FixtureRequest) -> tuple[Boot, dict[str, Any]]:
    """The parameter's Boot and what its scenario saw (each scenario's fixture boots once per module)."""
    return request.param, request.getfixturevalue(request.param.scenario)


@pytest.fixture(scope="module", params=[*KEXEC_BOOTS, *KERNEL_BOOTS[1:]])
def booted(request: pytest.FixtureRequest) -> tuple[Boot, dict[str, Any]]:
    """The boot cases, once per release: Debian 12's 6.1 (kexec backend) and Debian 13's kernels (kernel)."""
    return _seen(request)


@pytest.fixture(scope="module", params=KERNEL_BOOTS)
def updates_itself(request: pytest.FixtureRequest) -> tuple[Boot, dict[str, Any]]:
    """The kernels that keep their own header current (CONFIG_CRASH_HOTPLUG, loaded with kexec_file_load)."""
    return _seen(request)


@pytest.fixture(scope="module", params=[*KEXEC_BOOTS, *KERNEL_BOOTS])
def every_boot(request: pytest.FixtureRequest) -> tuple[Boot, dict[str, Any]]:
    """Every hot-plug boot: what is said of all of them, kexec backend and kernel backend alike."""
    return _seen(request)


def messages(journal: list[dict]) -> list[str]:
    return [str(e.get("MESSAGE", "")) for e in journal]


def test_the_kexec_wrappers_calls_are_told_apart_by_their_options_wherever_they_stand() -> None:
    calls = [{"unit": "kdump-tools.service", "args": a} for a in (
        "--version", "-p -u", "-s -p -u", "-p --command-line=ro quiet --initrd=/x /vmlinuz",
        "-s -p --command-line=ro --initrd=/x /vmlinuz")]
    calls.append({"unit": "crashhpd.service", "args": "-p -c --command-line=ro /vmlinuz"})
    assert [c["args"][:6] for c in kexec_loads(calls)] == ["-p --c", "-s -p ", "-p -c "]
    assert [c["args"] for c in unloads(calls)] == ["-p -u", "-s -p -u"]
    assert kexec_loads(calls, "crashhpd.service") == calls[-1:]


# --- 6.1: boot, hot-add, hot-remove, crash ------------------------------------------------------


def first(journal: list[dict], wanted: Callable[[dict], bool], what: str, guest: Guest) -> int:
    found = next((i for i, e in enumerate(journal) if wanted(e)), None)
    if found is None:
        raise guest.failure(f"no {what} in crashhpd's journal: {messages(journal)}")
    return found


def says_backend(status_text: str, backend: str) -> bool:
    """crashhpctl status names auto's choice and calls it healthy (its columns are as wide as its longest label)."""
    return re.search(rf"^backend +{backend} \(chosen by auto\) \(healthy", status_text, re.MULTILINE) is not None


def test_boot_crashhpd_is_ready_after_kdump_tools_loaded_and_its_first_reconcile(
        booted: tuple[Boot, dict[str, Any]]) -> None:
    boot, seen = booted
    guest, journal = seen["guest"], seen["journal"]
    check(guest, seen["active"] == ["active", "active"], f"systemctl is-active crashhpd kdump-tools: {seen}")
    boot_loads = kexec_loads(seen["boot_kexec"], "kdump-tools.service")
    check(guest, len(boot_loads) == 1 and boot_loads[0]["exit"] == 0,
          f"kdump-tools' load at boot: {seen['boot_kexec']}")
    started = first(journal, lambda e: str(e.get("MESSAGE")).startswith("crashhpd started"), "start-up line", guest)
    reconciled = first(journal, lambda e: e.get("MESSAGE_ID") == READY_ID, "ready line (after the first reconcile)",
                       guest)
    ready = first(journal, lambda e: str(e.get("MESSAGE")).startswith("Started crashhpd.service"), "'Started'", guest)
    # READY=1 and STATUS= go in one datagram, after the first reconcile; the daemon logs the same status as
    # "ready: ..." right after it (so that line and systemd's "Started" may come in either order)
    check(guest, started < ready and f"ready: {seen['status_text']}" == journal[reconciled]["MESSAGE"],
          f"systemd's 'Started' must follow the start and carry the first reconcile's status: {messages(journal)}")
    check(guest, int(journal[started]["__REALTIME_TIMESTAMP"]) / 1e6 > boot_loads[0]["end"],
          "crashhpd started before kdump-tools had loaded the crash kernel")
    check(guest, re.match(rf"generation \d+, 2 CPUs, \d+ ranges, {boot.backend}, idle$", seen["status_text"])
          is not None, f"StatusText: {seen['status_text']}")
    status = seen["crashhpctl"]
    check(guest, status["exit"] == 0 and re.match(r"protected +yes: ", status["stdout"]) is not None
          and says_backend(status["stdout"], boot.backend),
          f"crashhpctl status under the unit's hardening: {status}")


def test_boot_crashhpd_loads_nothing_where_kdump_tools_loaded_the_right_crash_kernel(
        every_boot: tuple[Boot, dict[str, Any]]) -> None:
    """kdump-tools loaded the crash kernel with acpi_no_memhotplug (the image's KDUMP_CMDLINE_APPEND) and no
    memory has changed: crashhpd's start-up must spend no load, counted by the kexec wrapper, not by crashhpd.
    The control, a start-up whose crash kernel is not right and which must cost exactly one load, is in the
    service cases below (the command line lacking the parameter; on 6.1 the header lacking a DIMM)."""
    _, seen = every_boot
    guest, status = seen["guest"], seen["status"]
    check(guest, len(kexec_loads(seen["boot_kexec"], "kdump-tools.service")) == 1,
          f"kdump-tools' load at boot: {seen['boot_kexec']}")
    check(guest, kexec_loads(seen["boot_kexec"], "crashhpd.service") == [] == unloads(seen["boot_kexec"],
          "crashhpd.service"), f"crashhpd ran kexec at a start-up with the right crash kernel: {seen['boot_kexec']}")
    check(guest, status["crash_kernel_cmdline"] is not None and status["crash_kernel_cmdline_missing"] == []
          and status["uncovered_ram_bytes"] == 0, f"crashhpd's status after its start-up: {status}")


def test_boot_the_command_line_crashhpd_reads_from_the_kernel_is_the_one_kdump_tools_passed(
        every_boot: tuple[Boot, dict[str, Any]]) -> None:
    """status's crash_kernel_cmdline, read from the loaded image's boot parameters, is kdump-tools' logged
    --command-line plus only what the loaders add themselves (kexec-tools' acpi_rsdp= and elfcorehdr=,
    kexec_file_load's elfcorehdr=)."""
    _, seen = every_boot
    distro = kexec_loads(seen["boot_kexec"], "kdump-tools.service")[0]
    loaded = seen["status"]["crash_kernel_cmdline"] or ""
    ours = [p for p in loaded.split() if param_name(p) not in LOADER_PARAMS]
    check(seen["guest"], ours == load_of(distro["args"])[2],
          f"the crash kernel's command line read back: {loaded!r}; kdump-tools passed {distro['args']!r}")


def test_reload_crashhpd_loads_the_kernel_initrd_and_command_line_kdump_tools_loaded(
        every_boot: tuple[Boot, dict[str, Any]]) -> None:
    """crashhpd's own load (on 6.1 the hot-add's reload, on the kernel backend the hot-remove's recovery)
    against kdump-tools' boot load in the same guest, both as the kexec wrapper logged them: the same files,
    and the same command line, as kdump-tools' already holds what crashhpd adds (acpi_no_memhotplug). The
    service cases prove the comparison sees a difference: there crashhpd adds the parameter kdump-tools lacks."""
    _, seen = every_boot
    distro = kexec_loads(seen["boot_kexec"], "kdump-tools.service")[0]
    ours = kexec_loads(seen["add"]["kexec"] + seen["remove"]["kexec"], "crashhpd.service")
    check(seen["guest"], len(ours) >= 1, f"crashhpd loaded nothing: {seen['add']['kexec']}, {seen['remove']}")
    for load in ours:
        differs = same_load(load, distro, seen["files"], [])
        check(seen["guest"], differs == [], f"crashhpd's load {load['args']!r} differs from kdump-tools': {differs}")


def test_hot_add_udevd_delivers_and_crashhpd_reloads_exactly_once(on_61: dict[str, Any]) -> None:
    guest, add = on_61["guest"], on_61["add"]
    check(guest, any("uevents from udev" in t for t in messages(on_61["journal"])),
          f"crashhpd's start-up line does not name udev: {messages(on_61['journal'])}")
    ours = kexec_loads(add["kexec"], "crashhpd.service")
    check(guest, len(ours) == 1 and ours[0]["exit"] == 0, f"crashhpd's kexec -p runs for one hot-add: {add['kexec']}")
    check(guest, add["status"]["events_received"] - on_61["status"]["events_received"] >= 2 * BLOCKS,
          f"crashhpd saw fewer uevents than the {2 * BLOCKS} of the DIMM: {add['status']}")
    check(guest, on_61["verify"]["in_sync"], f"crashhpctl verify: {on_61['verify']}")
    applied = add["applied"]
    check(guest, len(applied) == 1, f"{len(applied)} applied entries in the journal for one hot-add: {applied}")
    fields = {k: v for k, v in applied[0].items() if k.startswith("CRASHHPD_")}
    generation = add["status"]["generation"]
    check(guest, generation == on_61["status"]["generation"] + 1
          and fields.get("CRASHHPD_GENERATION") == str(generation)
          and "CRASHHPD_EVENTS" in fields and "CRASHHPD_RANGES" in fields, f"the applied entry's fields: {applied[0]}")


def test_hot_add_kdump_tools_rule_reloads_nothing_while_crashhpd_runs(booted: tuple[Boot, dict[str, Any]]) -> None:
    """With crashhpd, the rule never runs: the counterpart of each release's control case below."""
    _, seen = booted
    add = seen["add"]
    assert TAKEN_OVER in seen["takeover"], f"crashhpd's override is not in /run/udev/rules.d: {seen['takeover']}"
    assert try_reloads(add["rule"]) == [], f"kdump-config try-reload ran while crashhpd kept the header: {add['rule']}"
    assert kexec_loads(add["kexec"], "systemd-udevd.service") == [], add["kexec"]
    assert unloads(add["kexec"], "systemd-udevd.service") == [], add["kexec"]


def test_a_member_of_the_control_group_runs_crashhpctl_status(booted: tuple[Boot, dict[str, Any]]) -> None:
    boot, seen = booted
    oper = seen["crashhpctl_oper"]
    check(seen["guest"], oper["exit"] == 0 and "crashadm" in oper["stdout"].split("\n")[0]
          and says_backend(oper["stdout"], boot.backend),
          f"crashhpctl status as oper: {oper}")


def test_hot_add_the_dimm_is_in_the_vmcore(on_61: dict[str, Any]) -> None:
    guest, vmcore = on_61["guest"], on_61["vmcore"]
    saved = covered(vmcore["segments"], HOTPLUG_BASE, DIMM)
    check(guest, saved == DIMM, f"/proc/vmcore holds {saved} of the DIMM's {DIMM} bytes: {vmcore}")
    for page in on_61["probed"]:
        check(guest, page["covered"] and page["bytes"] == 4096, f"reading the DIMM in /proc/vmcore: {on_61['probed']}")


def test_hot_remove_the_header_drops_the_range_and_the_whole_vmcore_reads(on_61: dict[str, Any]) -> None:
    guest, remove, vmcore = on_61["guest"], on_61["remove"], on_61["vmcore"]
    check(guest, remove["verify"]["in_sync"], f"crashhpctl verify after the hot-remove: {remove['verify']}")
    check(guest, any(change.startswith("- RAM") for change in remove["status"]["last_changes"]),
          f"the last apply did not drop a RAM range: {remove['status']}")
    check(guest, len(kexec_loads(remove["kexec"], "crashhpd.service")) >= 1, f"no reload for the removal: {remove}")
    stale = covered(vmcore["segments"], SECOND, DIMM)
    check(guest, stale == 0, f"/proc/vmcore has {stale} bytes of PT_LOAD over the removed DIMM: {vmcore}")
    read = on_61["read"]
    check(guest, read["error"] is None and read["bytes"] == vmcore["size"], f"reading all of /proc/vmcore: {read}")


# --- 6.12 and 7.3: kexec_file_load, the kernel backend -----------------------------------------------


def test_kernel_updates_auto_picks_the_kernel_backend_and_a_hot_add_costs_no_reload(
        updates_itself: tuple[Boot, dict[str, Any]]) -> None:
    """On Debian 12, kdump-tools is told -s; on Debian 13 it runs a plain `kexec -p`, and crash_hotplug
    reading 1 says kexec-tools 2.0.29 chose kexec_file_load by itself (a kexec_load image reads 0 unless
    loaded with --hotplug, which kdump-tools does not pass)."""
    boot, seen = updates_itself
    guest, status = seen["guest"], seen["status"]
    boot_loads = kexec_loads(seen["boot_kexec"], "kdump-tools.service")
    options = boot_loads[0]["args"].split()[:2] if boot_loads else []
    check(guest, len(boot_loads) == 1 and (("-s" in options) == (boot.kexec_args == "-s")),
          f"kdump-tools' load: {boot_loads}")
    check(guest, status["backend"] == "kernel" and status["crash_hotplug_memory"] == 1,
          f"auto did not pick the passive kernel backend: {status}")
    check(guest, status["kexec_sysfs"] == boot.kexec_sysfs, f"the kexec attributes read: {status['kexec_sysfs']}")
    check(guest, seen["active"] == ["active", "active"], f"systemctl is-active: {seen['active']}")
    added = seen["add"]["kexec"]
    check(guest, kexec_loads(added) == [] and unloads(added) == [], f"kexec ran for the hot-add: {added}")
    check(guest, try_reloads(seen["add"]["rule"]) == [], f"kdump-tools' rule ran: {seen['add']['rule']}")
    check(guest, seen["verify"]["in_sync"], f"crashhpctl verify after the hot-add: {seen['verify']}")
    check(guest, covered(seen["vmcore"]["segments"], HOTPLUG_BASE, DIMM) == DIMM,
          f"the kernel's own header lacks the hot-added DIMM: {seen['vmcore']}")


def test_kernel_updates_hot_remove_the_kernel_keeps_the_range_and_crashhpd_reloads_once_to_drop_it(
        updates_itself: tuple[Boot, dict[str, Any]]) -> None:
    """Linux 6.12 rebuilds its header at MEM_OFFLINE, while the range is still System RAM, and not after the
    removal: crashhpd reads the header back from the kernel, says it is stale, and recovers with one reload."""
    _, seen = updates_itself
    guest, remove, vmcore, read = seen["guest"], seen["remove"], seen["vmcore"], seen["read"]
    gone = f"- RAM {SECOND:#x}-{SECOND + DIMM - 1:#x} (512 MiB)"
    said = [str(e["MESSAGE"]) for e in remove["journal"] if e.get("MESSAGE_ID") == KERNEL_HEADER_STALE_ID]
    check(guest, len(said) == 2 and "header is stale" in said[0] and gone in said[0] and "current again" in said[1],
          f"crashhpd's word on the kernel's header: {said}")
    recovered = kexec_loads(remove["kexec"], "crashhpd.service")
    check(guest, len(recovered) == 1 and recovered[0]["args"].startswith("-p -s ")
          and remove["status"]["last_apply_reason"] == "recover",
          f"the recovery: {remove['kexec']}, {remove['status']}")
    check(guest, remove["status"]["kernel_header_in_sync"] is True and remove["verify"]["in_sync"],
          f"after the recovery: {remove['status']}, {remove['verify']}")
    check(guest, covered(vmcore["segments"], SECOND, DIMM) == 0, f"a PT_LOAD over the removed DIMM: {vmcore}")
    check(guest, read["error"] is None and read["bytes"] == vmcore["size"], f"reading all of /proc/vmcore: {read}")


# --- 6.1: the service under systemd ----------------------------------------------------------------


@pytest.fixture(scope="module", params=[pytest.param(("system_image", "6.1"), id="bookworm-6_1"),
                                        pytest.param(("trixie_image", "6.12"), id="trixie-6_12")])
def service(qemu: Qemu, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[SystemGuest]:
    """One boot per release for the service cases, in this file's order; the control stops crashhpd, so it is
    last. Debian 12's 6.1 has the kexec backend, Debian 13's 6.12 the kernel backend."""
    image, series = request.param
    system: System = request.getfixturevalue(image)
    with SystemGuest(qemu, system, series, tmp_path_factory.mktemp(f"{system.codename}-service"),
                     deadline_s=420) as g:
        g.booted()
        yield g


def main_pid(g: SystemGuest) -> int:
    return int(g.sh("systemctl show -p MainPID --value crashhpd"))


def test_reload_a_good_configuration_is_taken_and_a_bad_one_keeps_the_old(service: SystemGuest) -> None:
    g = service
    pid, cursor = main_pid(g), g.mark()
    since = cursor
    g.sh("systemd-analyze log-level debug")  # PID 1 then logs each notification it gets
    g.sh(f"printf '[debounce]\\nquiet_ms = 300\\n' > {DROP_IN}/60-good.toml && systemctl reload crashhpd")
    good = g.until_entries(f"-u crashhpd {RELOAD}", cursor)
    state = g.sh("systemctl show -p ActiveState,SubState crashhpd").split()
    check(g, len(good) == 1 and state == ["ActiveState=active", "SubState=running"],
          f"a good reload: {good}, {state}")
    cursor = g.mark()
    g.sh(f"printf '[debounce]\\nquiet_ms = \"soon\"\\n' > {DROP_IN}/70-bad.toml && systemctl reload crashhpd")
    bad = g.until_entries(f"-u crashhpd {CONFIG_INVALID}", cursor)
    g.sh("systemd-analyze log-level info")
    state = g.sh("systemctl show -p ActiveState,SubState crashhpd").split()
    check(g, len(bad) == 1 and "quiet_ms" in str(bad[0]["MESSAGE"]) and "70-bad.toml" in str(bad[0]["MESSAGE"]),
          f"the journal does not say why the bad configuration was refused: {bad}")
    check(g, state == ["ActiveState=active", "SubState=running"] and main_pid(g) == pid,
          f"the bad reload changed the service: {state}")
    notified = [m for m in messages(g.entries("_PID=1 UNIT=crashhpd.service", since)) if "notification message" in m]
    for needed in ("RELOADING=1", "READY=1"):
        check(g, sum(needed in m for m in notified) >= 2, f"systemd saw {needed} fewer than twice: {notified}")
    g.sh(f"rm {DROP_IN}/60-good.toml {DROP_IN}/70-bad.toml && systemctl reload crashhpd")


def test_watchdog_a_stopped_daemon_is_killed_restarted_and_in_sync_again(service: SystemGuest) -> None:
    g = service
    g.sh("mkdir -p /run/systemd/system/crashhpd.service.d && printf '[Service]\\nWatchdogSec=4s\\n' "
         "> /run/systemd/system/crashhpd.service.d/watchdog.conf && systemctl daemon-reload "
         "&& systemctl restart crashhpd", timeout=180)
    pid, cursor = main_pid(g), g.mark()
    g.sh(f"kill -STOP {pid}")
    g.sh(f"until [ \"$(systemctl show -p NRestarts --value crashhpd)\" -ge 1 ] && systemctl is-active -q crashhpd "
         f"&& [ \"$(systemctl show -p MainPID --value crashhpd)\" != {pid} ]; do sleep 0.5; done", timeout=180)
    g.wait("idle", -1)
    said = [str(e["MESSAGE"]) for e in g.entries("-u crashhpd", cursor)]
    check(g, any("Watchdog timeout" in m for m in said), f"systemd did not report the watchdog: {said}")
    verify = json.loads(g.sh("crashhpctl verify --json"))
    check(g, verify["in_sync"], f"crashhpctl verify after the restart: {verify}")
    g.sh("rm /run/systemd/system/crashhpd.service.d/watchdog.conf && systemctl daemon-reload")


def test_start_up_a_crash_kernel_without_acpi_no_memhotplug_costs_one_load_that_adds_it(service: SystemGuest) -> None:
    """The control of the boot cases' "no load at a right start-up" and "the same load as kdump-tools'":
    kdump-tools loads with Debian's default KDUMP_CMDLINE_APPEND (no acpi_no_memhotplug) while crashhpd is
    stopped; crashhpd, started, must spend exactly one load, and that load names kdump-tools' kernel and initrd
    and its command line with only acpi_no_memhotplug added. The image's setting is put back afterwards."""
    g = service
    g.sh("systemctl stop crashhpd", timeout=60)
    cursor = g.mark()
    g.sh("sed -i 's/ acpi_no_memhotplug\"$/\"/' /etc/default/kdump-tools && systemctl restart kdump-tools",
         timeout=180)
    g.sh("systemctl start crashhpd", timeout=180)
    status = g.wait("idle", -1)
    g.sh("sed -i '/^KDUMP_CMDLINE_APPEND=/s/\"$/ acpi_no_memhotplug\"/' /etc/default/kdump-tools")
    calls = g.calls(KEXEC, cursor)
    distro, ours = kexec_loads(calls, "kdump-tools.service"), kexec_loads(calls, "crashhpd.service")
    check(g, len(distro) == 1 and "acpi_no_memhotplug" not in load_of(distro[0]["args"])[2],
          f"kdump-tools' load with the default append: {calls}")
    check(g, len(ours) == 1 and ours[0]["exit"] == 0, f"crashhpd's loads at its start-up: {calls}")
    differs = same_load(ours[0], distro[0], real_paths(g, calls), [])
    check(g, len(differs) == 1 and differs[0].startswith("command line "),
          f"the comparison must see the parameter crashhpd added, and nothing else: {differs}")
    check(g, same_load(ours[0], distro[0], real_paths(g, calls), ["acpi_no_memhotplug"]) == [],
          f"crashhpd's load {ours[0]['args']!r} against kdump-tools' {distro[0]['args']!r}")
    check(g, "acpi_no_memhotplug" in (status["crash_kernel_cmdline"] or "").split()
          and status["crash_kernel_cmdline_missing"] == [], f"the command line read back after the load: {status}")


def test_control_crashhpd_stopped_the_rule_runs_once_per_event_and_udevd_refuses_its_kexec(
        service: SystemGuest) -> None:
    """The real baseline, as Debian 12 and 13 ship it: udevd runs kdump-config try-reload for every memory
    online event, and every one fails, because systemd-udevd.service's SystemCallFilter (@system-service
    @module @raw-io bpf, SystemCallErrorNumber=EPERM; systemd 252 and 257 alike) has no kexec_load: `kexec -p -u`
    gets EPERM, kdump-config stops there, and the crash kernel stays loaded. On Debian 12's 6.1 its header is
    the one of before the hot-add, and the guest crashed then dumps no byte of the DIMM; on Debian 13's 6.12,
    loaded with kexec_file_load, the kernel has updated it itself: crashhpd, started again, reads the kernel's
    header back and finds the DIMM in it, with no load."""
    g = service
    g.sh("systemctl stop crashhpd", timeout=60)
    check(g, g.run(f"test -e {TAKEN_OVER}")["exit"] == 1, "crashhpd stopped and left its override in place")
    cursor = g.mark()
    g.guest.hot_add_memory(DIMM, HOTPLUG_BASE, "dimm0")
    g.wait("online", hex(HOTPLUG_BASE), hex(DIMM))
    g.sh("udevadm settle --timeout=240", timeout=250)
    runs, calls = try_reloads(g.calls(KDUMP_CONFIG, cursor)), g.calls(KEXEC, cursor)
    check(g, len(runs) == BLOCKS, f"{len(runs)} kdump-config try-reload runs for {BLOCKS} memory online events: {runs}")
    refused = unloads(calls, "systemd-udevd.service")
    check(g, len(refused) == BLOCKS and all(c["exit"] != 0 for c in refused) and all(r["exit"] == 1 for r in runs),
          f"each run's `kexec -p -u` under udevd: {calls}, the runs: {runs}")
    check(g, kexec_loads(calls) == [], f"a crash kernel was loaded after the hot-add: {calls}")
    allowed = g.sh("systemctl show -p SystemCallFilter --value systemd-udevd").split()
    check(g, "kexec_load" not in allowed and "execve" in allowed, f"udevd's system call filter: {allowed}")
    check(g, g.sh("cat /sys/kernel/kexec_crash_loaded").strip() == "1", "the crash kernel of the boot is gone")
    if g.run("cat /sys/devices/system/memory/crash_hotplug")["stdout"].strip() != "1":
        # 6.1 (no such file): nothing updated the header, so the dump must lack the DIMM that the hot-plug
        # boot's dump, with crashhpd, holds (test_hot_add_the_dimm_is_in_the_vmcore)
        g.guest.send("CRASH")
        g.guest.expect("CRASHING")
        vmcore = g.guest.expect("VMCORE")
        g.guest.send("PROBE", hex(HOTPLUG_BASE), hex(DIMM))
        probed = g.guest.expect("PROBED")
        check(g, covered(vmcore["segments"], HOTPLUG_BASE, DIMM) == 0 and not any(p["covered"] for p in probed),
              f"a dump taken without crashhpd holds the DIMM: {vmcore}, {probed}")
        return
    cursor = g.mark()
    g.sh("systemctl start crashhpd", timeout=180)
    status = g.wait("idle", -1)
    calls = g.calls(KEXEC, cursor)
    check(g, status["backend"] == "kernel" and status["kernel_header_in_sync"] is True
          and status["uncovered_ram_bytes"] == 0, f"the kernel's own header after the rule failed: {status}")
    check(g, kexec_loads(calls) == [], f"crashhpd loaded where the kernel's header was current: {calls}")
