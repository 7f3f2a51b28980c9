# SPDX-License-Identifier: GPL-2.0-only
"""Run a command under the restrictions systemd/crashhpd.service puts on the daemon, without systemd.

The machines the suite runs on have no systemd as PID 1, so `systemd-run
-p ...` is not available; what the unit's kernel-enforced settings do is
reproduced with the same kernel mechanisms instead:

- SystemCallFilter= and RestrictAddressFamilies=: a seccomp filter built
  with libseccomp (through ctypes) from the unit's own lines, the groups
  expanded by `systemd-analyze syscall-filter`, so the list is systemd's.
  Anything else kills the process (SIGSYS), as systemd's default does.
- CapabilityBoundingSet= and NoNewPrivileges=: `setpriv`.

Settings enforced through cgroups or mount namespaces (IPAddressDeny=,
DevicePolicy=, ProtectSystem=, ProtectProc=) are not reproduced here.

    python3 tests/support/unit_sandbox.py FILTER.json -- COMMAND...   # load the filter, then exec COMMAND
"""

import ctypes
import ctypes.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from repo_paths import REPO

UNIT = REPO / "systemd" / "crashhpd.service"
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
FAMILIES = {"AF_UNIX": socket.AF_UNIX, "AF_NETLINK": socket.AF_NETLINK, "AF_INET": socket.AF_INET,
            "AF_INET6": socket.AF_INET6, "AF_PACKET": socket.AF_PACKET}


def directive(name: str, text: str | None = None) -> list[str]:
    """Every word of every `name=` line of the unit."""
    text = UNIT.read_text() if text is None else text
    return [word for line in text.splitlines() if line.startswith(f"{name}=")
            for word in line.partition("=")[2].split()]


def syscall_groups() -> dict[str, list[str]]:
    """systemd's own groups (`systemd-analyze syscall-filter`), each as listed, groups not yet expanded."""
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    found: set[str] = set()
    for name in names:
        found |= expand(groups[name], groups) if name.startswith("@") else {name}
    return found


def allowed_syscalls(unit_text: str | None = None) -> set[str]:
    filters = directive("SystemCallFilter", unit_text)
    if not filters or any(word.startswith("~") for word in filters):
        raise ValueError("expected an allow-list SystemCallFilter= in the unit")
    return expand(filters, syscall_groups())


def filter_spec(unit_text: str | None = None, drop: tuple[str, ...] = ()) -> dict[str, object]:
    """What the launcher loads: the syscalls, and the address families socket() may create."""
    families = directive("RestrictAddressFamilies", unit_text)
    return {"syscalls": sorted(allowed_syscalls(unit_text) - set(drop)),
            "families": [FAMILIES[name] for name in families]}


def setpriv_argv(unit_text: str | None = None) -> list[str]:
    caps = [cap.removeprefix("CAP_").lower() for cap in directive("CapabilityBoundingSet", unit_text)]
    argv = ["setpriv", "--bounding-set", ",".join(["-all", *(f"+{cap}" for cap in caps)]), "--inh-caps", "-all"]
    if directive("NoNewPrivileges", unit_text) == ["yes"]:
        argv.append("--no-new-privs")
    return argv


def sandboxed(argv: list[str], spec_path: Path, unit_text: str | None = None) -> list[str]:
    """The argv that runs `argv` under the unit's restrictions (the filter spec written to `spec_path`)."""
    return [*setpriv_argv(unit_text), sys.executable, __file__, str(spec_path), "--", *argv]


def available() -> str | None:
    """Why the restrictions cannot be reproduced here, or None."""
    if os.geteuid() != 0:
        return "reproducing the unit's capability bounding set needs root"
    for tool in ("setpriv", "systemd-analyze"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if ctypes.util.find_library("seccomp") is None:
        return "libseccomp is not installed"
    return None


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def load_filter(spec: dict) -> None:
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp"), use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_KILL_PROCESS)
    for name in spec["syscalls"]:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0 or name == "socket":  # not on this architecture; socket() is narrowed below
            continue
        if lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, number, 0, None) != 0:
            raise OSError(f"seccomp_rule_add {name} failed")
    if "socket" in spec["syscalls"]:
        number = lib.seccomp_syscall_resolve_name(b"socket")
        for family in spec["families"]:
            cmp = _ArgCmp(0, SCMP_CMP_EQ, family, 0)
            if lib.seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, number, 1, ctypes.byref(cmp)) != 0:
                raise OSError(f"seccomp_rule_add socket({family}) failed")
    if lib.seccomp_load(ctx) != 0:
        raise OSError("seccomp_load failed")


if __name__ == "__main__":
    spec_file, separator, *command = sys.argv[1:]
    assert separator == "--" and command, __doc__
    load_filter(json.loads(Path(spec_file).read_text()))
    os.execvp(command[0], command)
