# SPDX-License-Identifier: GPL-2.0-only
"""This machine's real /proc and /sys: `generate` and `inspect --root /` on the running kernel.

The expected RAM is read from /proc/iomem here, with a reader of the test's own, and cut with
the point-sweep reference of the property tests, so crashhpd's parser is not checking itself.
"""

import json
import re
from pathlib import Path

import pytest
from crashhpd_command import crashhpd
from ram_reference import MIB, Range, expected_ram

pytestmark = [pytest.mark.root, pytest.mark.real_kernel]

LINE = re.compile(r"( *)([0-9a-f]+)-([0-9a-f]+) : (.*)")
KERNEL_TEXT_MAP = 0xFFFFFFFF80000000


def host_iomem() -> list[tuple[int, int, str]]:
    matches = map(LINE.fullmatch, Path("/proc/iomem").read_text().splitlines())
    return [(int(m[2], 16), int(m[3], 16), m[4]) for m in matches if m]


def host_dumpable_ram() -> list[Range]:
    """System RAM lines not inside an earlier one, minus Crash kernel, crash CMA and the first MiB."""
    lines = host_iomem()
    taken: list[Range] = []
    for start, end, name in lines:
        if name.startswith("System RAM") and not (taken and start <= taken[-1][1]):
            taken.append((start, end))
    holes = [(start, end) for start, end, name in lines if name == "Crash kernel"] + [(0, MIB - 1)]
    cma = Path("/sys/kernel/kexec_crash_cma_ranges")
    if cma.exists():
        holes += [tuple(int(v, 16) for v in line.split("-")) for line in cma.read_text().split()]
    return expected_ram(taken, holes)


def kallsyms_text() -> int | None:
    match = re.search(r"^([0-9a-f]+) \S _text$", Path("/proc/kallsyms").read_text(), re.MULTILINE)
    return (int(match[1], 16) or None) if match else None


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("host") / "elfcorehdr"
    generated = crashhpd("generate", "-o", str(out))
    assert generated.returncode == 0, generated.stderr.decode()
    inspected = crashhpd("inspect", str(out), "--root", "/", "--json")
    assert inspected.returncode == 0, inspected.stdout.decode() + inspected.stderr.decode()
    return json.loads(inspected.stdout)


def test_host_header_is_valid_against_the_host(report):
    assert report["valid"] is True and report["problems"] == []


def test_host_ram_is_system_ram_minus_low_mib_and_crash_kernel(report):
    ram = [(s["paddr"], s["paddr"] + s["memsz"] - 1) for s in report["header"]["segments"]
           if s["type"] == "PT_LOAD" and s["vaddr"] < KERNEL_TEXT_MAP]
    assert ram == host_dumpable_ram()
    assert ram, "a running system has RAM above 1 MiB"


def test_host_vmcoreinfo_note(report):
    addr, size = Path("/sys/kernel/vmcoreinfo").read_text().split()
    notes = [(s["paddr"], s["memsz"]) for s in report["header"]["segments"] if s["type"] == "PT_NOTE"]
    assert (int(addr, 16), int(size, 16)) in notes


def test_host_kernel_image_at_kernel_code(report):
    text = kallsyms_text()
    if text is None:
        pytest.skip("/proc/kallsyms hides _text (kptr_restrict)")
    code = next(start for start, _end, name in host_iomem() if name == "Kernel code")
    images = [s for s in report["header"]["segments"] if s["type"] == "PT_LOAD" and s["vaddr"] >= KERNEL_TEXT_MAP]
    assert [(s["paddr"], s["offset"], s["vaddr"]) for s in images] == [(code, code, text)]
