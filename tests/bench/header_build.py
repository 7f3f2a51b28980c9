# SPDX-License-Identifier: GPL-2.0-only
"""How long building one elfcorehdr takes, against pyelftools' own construct structs.

Run: .venv/bin/python tests/bench/header_build.py [--repeat N]

Two cases from the issue: 8192 CPUs + 8192 RAM ranges (the largest header
the seed patch's segment holds) and 64 CPUs + 3840 ranges (a guest grown by
480 GiB in 128 MiB blocks). Each case times crashhpd's path from snapshot to
bytes (layout.plan + header.build, precompiled struct.Struct.pack_into into
one buffer) and the same header built with pyelftools' Elf_Ehdr/Elf_Phdr
construct structs, checks that both produce identical bytes, and prints
medians and the ratio.
"""

import argparse
import statistics
import time
from functools import partial

from elftools.construct.lib.container import Container
from elftools.elf.structs import ELFStructs

from crashhpd.abi.elf import EHDR_SIZE, PHDR_SIZE, header_size
from crashhpd.elfcorehdr.layout import HeaderModel, Layout, plan, preset
from crashhpd.elfcorehdr.pack import build
from crashhpd.sysview.kernel_state import KernelState
from crashhpd.sysview.snapshot import BootConstants, CpuNote, Snapshot

GIB = 1 << 30


def snapshot(cpus: int, ranges: int) -> Snapshot:
    """A system with `ranges` separate 128 MiB RAM blocks above 4 GiB and `cpus` CPUs with notes."""
    ram = ((0x100000, 0xBFFFFFFF),) + tuple(
        (4 * GIB + i * 2 * (128 << 20), 4 * GIB + i * 2 * (128 << 20) + (128 << 20) - 1) for i in range(ranges - 1)
    )
    every = frozenset(range(cpus))
    return Snapshot(
        root="/", ram=ram, crash_kernel=(), kernel_code=(0x1000000, 0x1FFFFFF), kernel_bss=(0x2A00000, 0x2DFFFFF),
        cpus_possible=every, cpus_present=every, cpus_online=every,
        crash_notes={c: CpuNote(0x13FC17000 + c * 0x1000, 368) for c in range(cpus)},
        vmcoreinfo=(0x100C66000, 0x1024), boot=BootConstants(0xFFFFFFFF81000000, 0xFFFFFFFF84A00000, None),
        kernel=KernelState(None, None, None, None, None, None, None, None),  # no kexec: the header is all we build
    )


def build_with_construct(model: HeaderModel, structs: ELFStructs) -> bytes:
    """The same header, one Container per program header through pyelftools' construct structs."""
    phdrs = [("PT_NOTE", 0, a, 0, a, s) for _cpu, a, s in model.cpu_notes]
    if model.vmcoreinfo:
        phdrs.append(("PT_NOTE", 0, model.vmcoreinfo[0], 0, model.vmcoreinfo[0], model.vmcoreinfo[1]))
    if model.image:
        phdrs.append(("PT_LOAD", 7, model.image[0], model.image[1], model.image[0], model.image[2]))
    phdrs += [("PT_LOAD", 7, s, s + model.page_offset, s, e - s + 1) for s, e in model.ram]
    ehdr = Container(
        e_ident=Container(EI_MAG=[0x7F, 0x45, 0x4C, 0x46], EI_CLASS="ELFCLASS64", EI_DATA="ELFDATA2LSB",
                          EI_VERSION="EV_CURRENT", EI_OSABI="ELFOSABI_SYSV", EI_ABIVERSION=0),
        e_type="ET_CORE", e_machine="EM_X86_64", e_version="EV_CURRENT", e_entry=0, e_phoff=EHDR_SIZE, e_shoff=0,
        e_flags=0, e_ehsize=EHDR_SIZE, e_phentsize=PHDR_SIZE, e_phnum=len(phdrs), e_shentsize=0, e_shnum=0,
        e_shstrndx=0,
    )
    parts = [structs.Elf_Ehdr.build(ehdr)]
    for ptype, flags, offset, vaddr, paddr, size in phdrs:
        parts.append(structs.Elf_Phdr.build(Container(
            p_type=ptype, p_flags=flags, p_offset=offset, p_vaddr=vaddr, p_paddr=paddr,
            p_filesz=size, p_memsz=size, p_align=0)))
    data = b"".join(parts)
    return data + bytes(header_size(len(phdrs), model.align) - len(data))


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def plan_and_build(snap: Snapshot, layout: Layout) -> bytes:
    return build(plan(snap, layout))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=21)
    args = ap.parse_args()
    structs = ELFStructs(little_endian=True, elfclass=64)
    structs.create_basic_structs()
    structs.create_advanced_structs(e_type="ET_CORE", e_machine="EM_X86_64", e_ident_osabi="ELFOSABI_SYSV")
    layout = preset("kernel")
    print(f"{'case':<22} {'phdrs':>6} {'bytes':>8} {'crashhpd plan+build':>20} {'build only':>11} "
          f"{'pyelftools construct':>21} {'ratio':>7}")
    for cpus, ranges in ((8192, 8192), (64, 3840)):
        snap = snapshot(cpus, ranges)
        # plan and build, not build_valid: what is measured is the packing, without the parse and the checks
        full_t, ours = timed(partial(plan_and_build, snap, layout), args.repeat)
        model = plan(snap, layout)
        build_t, _ = timed(partial(build, model), args.repeat)
        theirs_t, theirs = timed(partial(build_with_construct, model, structs), max(3, args.repeat // 7))
        assert ours == theirs, "construct-built header differs from crashhpd's"
        print(f"{f'{cpus} CPUs + {ranges} ranges':<22} {model.phnum:>6} {len(ours):>8} {full_t * 1e3:>17.2f} ms "
              f"{build_t * 1e3:>8.2f} ms {theirs_t * 1e3:>18.1f} ms {theirs_t / full_t:>6.0f}x")


if __name__ == "__main__":
    main()
