# SPDX-License-Identifier: GPL-2.0-only
"""How long reading the elfcorehdr the kernel holds takes, with BTF parsed once per boot against on every read.

Run: .venv/bin/python tests/bench/loaded_header_read.py [--reads N] [--baseline-reads N] [--btf-repeat N]

The fake kernel (tests/support/fakekcore.py) holds the largest header the seed
patch's segment takes for 64 CPUs: 64 CPU notes, VMCOREINFO, the kernel
image and 8192 RAM ranges, 8258 program headers filling a 456 KiB segment,
built by build_valid on a fake tree. Its BTF is this host's own
/sys/kernel/btf/vmlinux with struct kimage and struct kexec_segment
appended (this host's kernel has no kexec), so a parse costs what it costs
on a real kernel; its kallsyms is this host's /proc/kallsyms with the fake
kernel's symbols in front. /proc/kcore is a sparse ELF core file with the
kernel image mapping and 1 GiB of direct map.

Printed: median, p90 and max of N reads by one LoadedHeaderReader (BTF
offsets, symbols and page_offset kept from its first read, as for one
boot), the first read itself, the same figures for a new reader per read
(BTF and kallsyms parsed on every read: the baseline), and the time to read
and parse (and only parse) this host's real /sys/kernel/btf/vmlinux with the types
`struct list_head` and `struct task_struct` resolved from it.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from fakebtf import BtfBuilder, kimage_btf  # noqa: E402
from fakekcore import CrashKernel  # noqa: E402
from faketree import make_tree  # noqa: E402

from crashhpd.abi.elf import EHDR_SIZE, PHDR_SIZE, align_up  # noqa: E402
from crashhpd.elfcorehdr.build import build_valid  # noqa: E402
from crashhpd.elfcorehdr.layout import preset  # noqa: E402
from crashhpd.elfcorehdr.pack import capacity  # noqa: E402
from crashhpd.sysview.btf import Btf, BtfError, read_vmlinux_btf  # noqa: E402
from crashhpd.sysview.loaded_header import LoadedHeaderReader, kimage_layout  # noqa: E402
from crashhpd.sysview.snapshot import read_snapshot  # noqa: E402

HOST_BTF = "/sys/kernel/btf/vmlinux"
CPUS = 64
HIGH_RANGES = 8190  # with the two low ranges the crash kernel splits: 8192
GIB = 1 << 30


def iomem(high_ranges: int) -> str:
    """A machine of `high_ranges` separate 128 MiB blocks above 4 GiB, plus the usual low memory."""
    lines = ["00001000-0009fbff : System RAM", "00100000-bffdffff : System RAM", "  01000000-01ffffff : Kernel code",
             "  02a00000-02dfffff : Kernel bss", "  2a000000-340fffff : Crash kernel"]
    block = 128 << 20
    lines += [f"{4 * GIB + 2 * i * block:x}-{4 * GIB + 2 * i * block + block - 1:x} : System RAM"
              for i in range(high_ranges)]
    return "\n".join(lines) + "\n"


def stats(times: list[float]) -> str:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return (f"median {statistics.median(ordered) * 1e3:7.2f} ms  p90 {p90 * 1e3:7.2f} ms  "
            f"max {ordered[-1] * 1e3:7.2f} ms  (n={len(ordered)})")


def timed_reads(make_reader, reads: int, expected: bytes) -> list[float]:
    times = []
    for _ in range(reads):
        reader = make_reader()
        start = time.perf_counter()
        result = reader.read()
        times.append(time.perf_counter() - start)
        assert result.readable and result.header == expected, result.reason
    return times


def fake_btf() -> tuple[bytes, str]:
    """The BTF for the fake kernel, and what it is."""
    if not os.path.exists(HOST_BTF):
        return kimage_btf(), "synthetic (this host has no /sys/kernel/btf/vmlinux)"
    host = Path(HOST_BTF).read_bytes()
    try:
        Btf.parse(host).find_struct("kimage")
        return host, f"this host's own ({len(host)} bytes, with its own struct kimage)"
    except BtfError:
        grown = kimage_btf(BtfBuilder(host))
        return grown, f"this host's ({len(host)} bytes) with struct kimage appended ({len(grown)} bytes)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reads", type=int, default=201)
    ap.add_argument("--baseline-reads", type=int, default=21)
    ap.add_argument("--btf-repeat", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        system = make_tree(Path(tmp) / "system", iomem(HIGH_RANGES), possible=f"0-{CPUS - 1}")
        built = build_valid(read_snapshot(str(system)), preset("kernel"))
        header, phnum = built.data, built.model.phnum
        memsz = align_up(capacity(CPUS), 4096)  # the segment as kexec_add_buffer() rounds it
        blob, what = fake_btf()
        root = Path(tmp) / "kernel"
        kernel = CrashKernel(root, btf=blob, layout=kimage_layout(Btf.parse(blob)))
        kernel.install(header, memsz)
        if os.path.exists("/proc/kallsyms"):
            own = (root / "proc/kallsyms").read_text()
            (root / "proc/kallsyms").write_text(own + Path("/proc/kallsyms").read_text())
        expected = header[:EHDR_SIZE + PHDR_SIZE * phnum]
        print(f"header: {phnum} program headers, {len(header)} bytes, in a {memsz}-byte segment")
        print(f"BTF: {what}; kallsyms: {(root / 'proc/kallsyms').stat().st_size} bytes")

        one = LoadedHeaderReader(str(root))
        start = time.perf_counter()
        first = one.read()
        first_t = time.perf_counter() - start
        assert first.readable and first.header == expected, first.reason
        steady = timed_reads(lambda: one, args.reads, expected)
        baseline = timed_reads(lambda: LoadedHeaderReader(str(root)), args.baseline_reads, expected)
        print(f"first read of a boot (BTF, kallsyms, page_offset):  {first_t * 1e3:7.2f} ms")
        print(f"read, BTF once per boot (one reader):             {stats(steady)}")
        print(f"read, BTF and kallsyms parsed on every read:      {stats(baseline)}")
        print(f"once per boot is {statistics.median(baseline) / statistics.median(steady):.0f}x faster per read")

    if not os.path.exists(HOST_BTF):
        print(f"host BTF: skipped, no {HOST_BTF}")
        return
    parse_times = []
    for _ in range(args.btf_repeat):
        start = time.perf_counter()
        btf = read_vmlinux_btf("/")
        parse_times.append(time.perf_counter() - start)
    assert btf is not None
    data = Path(HOST_BTF).read_bytes()
    parse_only = []
    for _ in range(args.btf_repeat):
        start = time.perf_counter()
        Btf.parse(data)
        parse_only.append(time.perf_counter() - start)
    list_head = btf.find_struct("list_head")
    members = ", ".join(f"{m.name} at {m.offset}" for m in btf.members(list_head))
    task = btf.find_struct("task_struct")
    print(f"host {HOST_BTF}: {os.path.getsize(HOST_BTF)} bytes, {btf.count} types")
    print(f"  read and parsed:                                {stats(parse_times)}")
    print(f"  parsed from memory:                             {stats(parse_only)}")
    print(f"  struct list_head: {btf.size_of(list_head)} bytes, {members}; struct task_struct: "
          f"{btf.size_of(task)} bytes, {len(btf.members(task))} members, pid at {btf.field(task, 'pid').offset}")


if __name__ == "__main__":
    main()
