# SPDX-License-Identifier: GPL-2.0-only
"""The stand-in kexec (tests/support/kexec_standin.py) on a Debian host's fake tree, and what tests ask of it.

Shared by the kexec backend's tests and the kexec-child tests: the `root` and `standin`
fixtures (import them into the test module so pytest registers them), the header the
daemon would model for a tree, and how to tell a process or a log record apart.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
from faketree import QEMU_GUEST, QEMU_HOT_ADD_BASE, hot_added, make_tree, replace_iomem
from repo_paths import STANDIN

from crashhpd import log
from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.layout import preset
from crashhpd.sysview.snapshot import read_snapshot

CMDLINE = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=UUID=0b4e ro quiet crashkernel=512M-:192M\n"
KDUMP_TOOLS = "USE_KDUMP=1\nKDUMP_KERNEL=/var/lib/kdump/vmlinuz\nKDUMP_INITRD=/var/lib/kdump/initrd.img\n" \
              'KDUMP_CMDLINE_APPEND="nr_cpus=1 irqpoll"\n'
BOOT_ID = "6f1c3f5e-1d1b-4a36-9d9b-3c8c2f6a0b11\n"


@dataclass
class Standin:
    """The stand-in kexec and its script: what each load does, and what it was called with."""

    path: Path
    control: Path
    root: Path

    def script(self, *outcomes: dict, default: dict | None = None, version: str = "kexec-tools 2.0.25",
               version_delay_s: float = 0) -> None:
        self.control.write_text(json.dumps({"root": str(self.root), "log": str(self.log), "version": version,
                                            "version_delay_s": version_delay_s, "outcomes": list(outcomes),
                                            "default": default or {}}))

    @property
    def log(self) -> Path:
        return self.control.with_suffix(".jsonl")

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def loads(self) -> list[dict]:
        return [c for c in self.calls() if "-p" in c["argv"]]


def hot_add(root: Path, blocks: int) -> None:
    """The QEMU guest with `blocks` hot-added 128 MiB blocks of System RAM above its own."""
    replace_iomem(root, hot_added(QEMU_GUEST, blocks, QEMU_HOT_ADD_BASE))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A Debian host with kdump-tools set up and a crash kernel loaded at boot."""
    tree = make_tree(tmp_path / "root", QEMU_GUEST, possible="0-3", memory_blocks=4, extra={
        "sys/kernel/kexec_crash_loaded": "1\n",
        "proc/cmdline": CMDLINE,
        "proc/sys/kernel/random/boot_id": BOOT_ID,
        "etc/default/kdump-tools": KDUMP_TOOLS,
        "var/lib/kdump/vmlinuz": "kernel image",
        "var/lib/kdump/initrd.img": "initrd image",
    })
    return tree


@pytest.fixture
def standin(tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> Standin:
    # a stand-in, because this kernel has no kexec_load: a real `kexec -p` can only fail here
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "kexec").symlink_to(STANDIN)
    control = tmp_path / "standin.json"
    monkeypatch.setenv("KEXEC_STANDIN_CONTROL", str(control))
    s = Standin(bindir / "kexec", control, root)
    s.script()
    return s


def model(root: Path) -> bytes:
    """The header kexec-tools would build for this tree: what the daemon compares with loaded()."""
    return build_valid(read_snapshot(str(root)), preset("kexec-tools")).data


def kind_of(record: logging.LogRecord) -> str | None:
    operation = log.operation_of(record)
    return operation.kind if operation else None


def alive(pid: int) -> bool:
    """Running, as opposed to gone or a zombie nobody has reaped yet."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"
