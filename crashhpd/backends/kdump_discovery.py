# SPDX-License-Identifier: GPL-2.0-only
"""Which crash kernel to load, found the way the distributions find it.

A reload must load the same crash kernel, initrd and command line that the
distribution's own loader would (Debian's kdump-config, Fedora's kdumpctl):
anything else boots a dump environment nobody tested. Their shell-style
settings are parsed, never sourced, so a config file cannot run code in a
daemon that holds CAP_SYS_BOOT.
"""

import os
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from ..errors import BackendError, CrashhpdError, ParseError
from ..sysview.files import read_text, under

DEBIAN_DEFAULTS = "etc/default/kdump-tools"
FEDORA_SYSCONFIG = "etc/sysconfig/kdump"
DEBIAN_KERNEL = "/var/lib/kdump/vmlinuz"
DEBIAN_INITRD = "/var/lib/kdump/initrd.img"
# kdump-config appends this when KDUMP_CMDLINE_APPEND is unset or empty (kdump-tools 1.8)
DEBIAN_APPEND = "reset_devices systemd.unit=kdump-tools-dump.service nr_cpus=1 irqpoll usbcore.nousb"

ALWAYS_REMOVED = frozenset({"crashkernel", "BOOT_IMAGE"})  # reserving memory again, or a bootloader's note
DEBIAN_REMOVED = frozenset({"hugepages", "hugepagesz", "abm"})  # kdump-config's sed expression
# kdumpctl's prepare_cmdline: its initramfs mounts the dump target itself, so root and its helpers go
FEDORA_REMOVED = frozenset({
    "panic_on_warn", "root", "rd.lvm.lv", "rd.luks.uuid", "rd.dm.uuid", "rd.md.uuid", "fcoe",
    "netroot", "rd.iscsi.initiator", "iscsi_initiator",
})

OSRELEASE = "proc/sys/kernel/osrelease"
CMDLINE = "proc/cmdline"
CPUINFO = "proc/cpuinfo"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAM = re.compile(r'(?:"[^"]*"?|[^\s"])+')  # a kernel parameter: blanks split, double quotes group
_VERSION = re.compile(r"kexec-tools\s+(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True, slots=True)
class Recipe:
    """What a distribution's loader would pass, before crashhpd's own config overrides anything."""

    source: str  # the file it came from, for messages
    kernel: str  # a path on the system (not yet under root)
    initrd: str
    initrd_required: bool  # kdumpctl insists on its kdump initramfs; kdump-config loads without one
    cmdline: str | None  # the distribution's full replacement of /proc/cmdline, or None
    removed: frozenset[str]  # parameter names dropped from the base command line
    append: str


@dataclass(frozen=True, slots=True)
class CrashKernel:
    """The three things `kexec -p` needs, resolved to paths crashhpd can hand to kexec."""

    kernel: str
    initrd: str | None
    cmdline: str
    source: str


# --- pure parsers -------------------------------------------------------------------------


def parse_assignments(text: str, path: str) -> dict[str, str]:
    """KEY=value pairs of a shell-style settings file, without running it.

    Each line is split like the shell would (shlex, POSIX mode: quotes,
    comments, `export`). A value that would need the shell to expand it
    ($VAR, $(cmd), backticks) is refused: passing it on literally would load
    the wrong thing without a word.
    """
    out: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as err:  # an unclosed quote
            raise ParseError(path, lineno, line, str(err)) from None
        for token in tokens:
            name, eq, value = token.partition("=")
            if not eq or not _NAME.fullmatch(name):
                continue
            if "$" in value or "`" in value:
                raise ParseError(path, lineno, line, "shell expansion is not supported; write the value out")
            out[name] = value
    return out


def split_params(cmdline: str) -> list[str]:
    """Kernel parameters as the kernel splits them: on blanks, keeping double-quoted values whole."""
    return _PARAM.findall(cmdline)


def param_name(param: str) -> str:
    return param.partition("=")[0].replace('"', "")


def edit_cmdline(base: str, removed: Iterable[str], *appended: str | None) -> str:
    """The base command line without the named parameters, then each non-empty addition."""
    drop = set(removed)
    kept = [p for p in split_params(base) if param_name(p) not in drop]
    return " ".join(kept + [a.strip() for a in appended if a and a.strip()])


def boot_cpu_apicid(cpuinfo: str) -> int | None:
    """Processor 0's APIC id: kdumpctl passes disable_cpu_apicid so the dump kernel leaves that CPU alone."""
    current: str | None = None
    for line in cpuinfo.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            current = value
        elif key == "apicid" and current == "0":
            return int(value) if value.isdigit() else None
    return None


def parse_kexec_version(text: str) -> tuple[int, int, int] | None:
    """`kexec --version` prints `kexec-tools 2.0.25` (some builds add `.git`)."""
    match = _VERSION.search(text)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def debian_recipe(settings: Mapping[str, str], source: str) -> Recipe:
    """kdump-config: KDUMP_KERNEL/KDUMP_INITRD, KDUMP_CMDLINE replaces /proc/cmdline untouched."""
    override = settings.get("KDUMP_CMDLINE") or None
    return Recipe(
        source=source,
        kernel=settings.get("KDUMP_KERNEL") or DEBIAN_KERNEL,
        initrd=settings.get("KDUMP_INITRD") or DEBIAN_INITRD,
        initrd_required=False,
        cmdline=override,
        removed=frozenset() if override else ALWAYS_REMOVED | DEBIAN_REMOVED,
        append=settings.get("KDUMP_CMDLINE_APPEND") or DEBIAN_APPEND,
    )


def fedora_recipe(settings: Mapping[str, str], source: str, release: str, apicid: int | None,
                  exists: Callable[[str], bool]) -> Recipe:
    """kdumpctl: /boot/vmlinuz-<release>, its kdump initramfs, and an edited command line.

    The initramfs lives in /boot, or in /var/lib/kdump when /boot was not
    writable when kdumpctl built it; the first that exists wins.
    """
    release = settings.get("KDUMP_KERNELVER") or release
    initrds = [f"/boot/initramfs-{release}kdump.img", f"/var/lib/kdump/initramfs-{release}kdump.img"]
    removed = {param_name(p) for p in split_params(settings.get("KDUMP_COMMANDLINE_REMOVE", ""))}
    apic = f"disable_cpu_apicid={apicid}" if apicid is not None else ""
    return Recipe(
        source=source,
        kernel=f"/boot/vmlinuz-{release}",
        initrd=next((path for path in initrds if exists(path)), initrds[0]),
        initrd_required=True,
        cmdline=settings.get("KDUMP_COMMANDLINE") or None,
        removed=ALWAYS_REMOVED | FEDORA_REMOVED | removed,
        append=" ".join(part for part in (settings.get("KDUMP_COMMANDLINE_APPEND", ""), apic) if part),
    )


# --- I/O at the edge: everything above is pure; this reads only under `root`, like the rest of crashhpd


def release(root: str) -> str:
    """The running kernel's release, from root's /proc so a test tree can name its own."""
    text = read_text(root, OSRELEASE)
    return text.strip() if text else os.uname().release


def _settings(root: str, rel: str) -> dict[str, str] | None:
    text = read_text(root, rel)
    return None if text is None else parse_assignments(text, under(root, rel))


def recipe(root: str) -> Recipe:
    """Debian's kdump-tools settings, else Fedora's, else kdump-tools' defaults (this is a Debian daemon first)."""
    debian = _settings(root, DEBIAN_DEFAULTS)
    if debian is not None:
        return debian_recipe(debian, "/" + DEBIAN_DEFAULTS)
    fedora = _settings(root, FEDORA_SYSCONFIG)
    if fedora is not None:
        cpuinfo = read_text(root, CPUINFO)
        return fedora_recipe(fedora, "/" + FEDORA_SYSCONFIG, release(root),
                             boot_cpu_apicid(cpuinfo) if cpuinfo else None,
                             lambda path: os.path.exists(under(root, path)))
    return debian_recipe({}, "kdump-tools defaults (no /etc/default/kdump-tools)")


def discover(root: str, kernel: str | None = None, initrd: str | None = None, cmdline: str | None = None,
             append: str | None = None) -> CrashKernel:
    """The crash kernel to load: crashhpd's config where it says, the distribution's recipe elsewhere.

    Paths from crashhpd's own config are taken as written; paths from the
    distribution's files are system paths and are looked up under `root`.
    `append` always goes last, after the distribution's own additions. The
    distribution's files are read only when the config leaves something open.
    """
    try:
        found = recipe(root) if None in (kernel, initrd, cmdline) else None
    except CrashhpdError as err:
        raise BackendError(f"cannot read the kdump settings: {err}") from None
    return CrashKernel(_kernel(root, kernel, found), _initrd(root, initrd, found),
                       _cmdline(root, cmdline, append, found), found.source if found else "crashhpd config")


def _existing(path: str, what: str, source: str) -> str:
    if not os.path.isfile(path):
        raise BackendError(f"{what} {path} (from {source}) does not exist")
    return path


def _kernel(root: str, configured: str | None, found: Recipe | None) -> str:
    if configured is not None:
        return _existing(configured, "crash kernel", "kexec.kernel")
    assert found is not None
    return _existing(under(root, found.kernel), "crash kernel", found.source)


def _initrd(root: str, configured: str | None, found: Recipe | None) -> str | None:
    if configured is not None:
        return _existing(configured, "initrd", "kexec.initrd")
    assert found is not None
    path = under(root, found.initrd)
    if found.initrd_required or os.path.isfile(path):
        return _existing(path, "initrd", found.source)
    return None  # kdump-config loads without an initrd when its file is absent


def _cmdline(root: str, configured: str | None, append: str | None, found: Recipe | None) -> str:
    if configured is not None:
        return edit_cmdline(configured, (), append)
    assert found is not None
    base = found.cmdline
    if base is None:
        base = read_text(root, CMDLINE)
        if base is None:
            raise BackendError(f"{under(root, CMDLINE)}: missing; set kexec.cmdline in the config")
    return edit_cmdline(base, found.removed, found.append, append)
