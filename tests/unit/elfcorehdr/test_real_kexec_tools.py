# SPDX-License-Identifier: GPL-2.0-only
"""The `kexec-tools` layout against the real kexec-tools: `kexec -p` on each fake tree, byte for byte.

Each case builds a fake root (faketree.make_tree, plus a synthetic /proc/kcore, which kexec-tools
needs for the kernel image and the direct-map base) and runs kexec on it in a private mount namespace,
chrooted into that root with /usr (and /lib, /lib64, /bin, /sbin where they are not symlinks into it)
bind-mounted read-only and a real Debian bzImage as the crash kernel. Every case runs once per
kexec-tools users run: Debian 12's (2.0.25), Debian 13's (2.0.29) and testing's (2.0.32 when this was
written), each unpacked with its own libc from its .deb (tests/e2e/parts.py, a cache the tests own;
nothing is installed into the host), mounted at /kexec-tools and started through its own ld.so.
An LD_PRELOAD shim (kexec_shim.c, compiled here with gcc) takes the kexec_load syscall, writes
every segment to a file and returns success; kexec_file_load gets ENOSYS. As a second guard the
chrooted process runs without CAP_SYS_BOOT, so a load that got past the shim would be refused by
the kernel. All three build the same header for every case: no version needs a model of its own.

Where a Persistent Memory range appears the header's program headers stay and only its zero
padding grows: crashhpd calls that the same header (layout.same_program_headers), so it costs no
reload; the tests say what else of the load changes.

What "the header" is: kexec-tools' elfcorehdr segment is the one whose buffer starts with an
ELF64 ET_CORE header. Its buffer (bufsz bytes) is what crash_create_elf64_headers() built:
64 + 56 * (CPUs sysconf counts + VMCOREINFO + kernel image + every range get_crash_memory_ranges()
kept), rounded up to 1 KiB, program headers first and zeros after; its memsz (at least 16 KiB)
is only the hole it reserves, which the kernel zero-fills past bufsz. crashhpd's `kexec-tools`
layout stands for that buffer: build_valid(...).data must be bufsz bytes long and equal to it.

Skips only when not root, when unshare or chroot cannot be used here, or when the Debian packages
cannot be fetched (tests/e2e/parts.py, the host's own mirrors).
"""

import os
import re
import shlex
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from faketree import kcore, kernel, make_tree, replace_iomem
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from repo_paths import IOMEM_FIXTURES, SUPPORT
from standin import Standin, hot_add, root, standin  # noqa: F401  (fixtures)

from crashhpd.backends.base import settle
from crashhpd.backends.kexec import KexecBackend
from crashhpd.config import KexecConfig
from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.layout import plan, preset, same_program_headers
from crashhpd.elfcorehdr.pack import build
from crashhpd.elfcorehdr.table import table
from crashhpd.elfcorehdr.validate import parse
from crashhpd.errors import InvalidHeader
from crashhpd.service.reconcile import InFlight, Outcome, reconcile
from crashhpd.sysview.kernel_state import read_kernel_state
from crashhpd.sysview.snapshot import read_snapshot

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: mount namespaces and chroot")

SHIM_SOURCE = SUPPORT / "kexec_shim.c"
TEXT = 0xFFFFFFFF81000000  # _text in faketree's kallsyms
IMAGE_SIZE = 0x3A00000  # its _end - _text
# each suite's kexec-tools, and the version it shipped when this was written (testing's moves on)
KEXEC_TOOLS = {"bookworm": "2.0.25", "trixie": "2.0.29", "testing": "2.0.32"}
INSIDE = "/kexec-tools"  # where its tree is mounted in the chroot
DIRECT_MAP = 0xFFFF888000000000
GIB = 1 << 30
MIB = 1 << 20
KIB16 = 16 * 1024
PAGE = 4096
HIDDEN_KALLSYMS = "0000000000000000 T _text\n0000000000000000 T _stext\n0000000000000000 B _end\n"
# thinkpad-bare-metal.txt was taken on a machine without a crash kernel, which kexec -p refuses
# ("Memory for crashkernel is not reserved"); it is loaded with a 256 MiB reservation added
ADDED_CRASH_KERNEL = {
    "thinkpad-bare-metal": ("  67e87000-681fffff : Kernel bss\n",
                            "  67e87000-681fffff : Kernel bss\n  b0000000-bfffffff : Crash kernel\n"),
}


@dataclass(frozen=True, slots=True)
class Segment:
    mem: int
    memsz: int
    bufsz: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Load:
    calls: tuple[str, ...]  # the shim's log: "kexec_load FLAGS ENTRY NR" or "kexec_file_load"
    segments: tuple[Segment, ...]

    @property
    def header(self) -> Segment:
        found = [s for s in self.segments
                 if s.data[:5] == b"\x7fELF\x02" and struct.unpack_from("<H", s.data, 16)[0] == 4]
        assert len(found) == 1, f"{len(found)} ELF64 ET_CORE segments in {self}"
        return found[0]


# --- the machinery: a shim, a kernel, a chroot --------------------------------------------------


@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shim") / "kexec-shim.so"
    proc = subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(out), str(SHIM_SOURCE),
                           "-ldl"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"gcc: {proc.stderr}"
    return out


@pytest.fixture(scope="session")
def vmlinuz() -> Path:
    from e2e import parts

    try:
        return parts.kernel("6.1").vmlinuz
    except parts.PartsUnavailable as err:
        pytest.skip(f"no Debian kernel to load: {err}")


@dataclass(frozen=True, slots=True)
class KexecTools:
    """One release's kexec-tools, unpacked with its libraries: run as `argv` inside the chroot."""

    suite: str
    version: str  # the package's upstream version, read from the file name apt fetched
    tree: Path

    @property
    def argv(self) -> list[str]:
        """Its own ld.so, libraries and kexec, wherever its libc6 and kexec-tools put them (/lib or /usr/lib)."""
        libs = [d for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu") if (self.tree / d).is_dir()]
        (loader,) = [d for d in libs if (self.tree / d / "ld-linux-x86-64.so.2").is_file()]
        (kexec,) = [p for p in ("sbin/kexec", "usr/sbin/kexec") if (self.tree / p).is_file()]
        return [f"{INSIDE}/{loader}/ld-linux-x86-64.so.2", "--library-path", ":".join(f"{INSIDE}/{d}" for d in libs),
                f"{INSIDE}/{kexec}"]

    @property
    def tries_file_load_first(self) -> bool:
        """Since 2.0.27 a plain `kexec -p` tries kexec_file_load, then kexec_load where that fails."""
        return tuple(map(int, self.version.split("."))) >= (2, 0, 27)


def chrooted(root: Path, argv: list[str], env: dict[str, str],
             kexec_tools: Path | None = None) -> subprocess.CompletedProcess[str]:
    """argv run in a private mount namespace, chrooted into root, /usr and the rest mounted read-only
    (and a kexec-tools tree at /kexec-tools), without CAP_SYS_BOOT and with only `env` in its environment."""
    q = shlex.quote
    lines = ["set -e"]
    if kexec_tools is not None:
        (root / INSIDE.lstrip("/")).mkdir(exist_ok=True)
        lines.append(f"mount --bind -o ro {q(str(kexec_tools))} {q(str(root / INSIDE.lstrip('/')))}")
    for name in ("usr", "bin", "sbin", "lib", "lib64"):
        host, inside = Path("/") / name, root / name
        if host.is_symlink():
            if not inside.is_symlink():
                inside.symlink_to(os.readlink(host))
        elif host.is_dir():
            inside.mkdir(exist_ok=True)
            lines.append(f"mount --bind -o ro {q(str(host))} {q(str(inside))}")
    lines.append(f"exec setpriv --bounding-set -sys_boot chroot {q(str(root))} /usr/bin/env -i "
                 + " ".join(q(f"{k}={v}") for k, v in env.items()) + " " + " ".join(map(q, argv)))
    return subprocess.run(["unshare", "-m", "sh", "-c", "\n".join(lines)], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture(scope="session")
def chroot_works(tmp_path_factory: pytest.TempPathFactory) -> None:
    probe = chrooted(tmp_path_factory.mktemp("probe"), ["/usr/bin/true"], {})
    if probe.returncode != 0:
        pytest.skip(f"unshare -m, mount --bind or chroot cannot be used here: {probe.stderr.strip()}")


@pytest.fixture(scope="session", params=sorted(KEXEC_TOOLS))
def kexec(request: pytest.FixtureRequest, chroot_works: None) -> KexecTools:
    """The suite's kexec-tools, unpacked from its packages, once a chroot like the one it runs in works here."""
    from e2e import parts

    try:
        tree = parts.suite_package("kexec-tools", request.param)
    except parts.PartsUnavailable as err:
        pytest.skip(f"no kexec-tools of {request.param}: {err}")
    (deb,) = [n for n in (tree / ".manifest").read_text().split() if n.startswith("kexec-tools_")]
    version = re.sub(r"^kexec-tools_(?:\d+%3a)?([\d.]+).*", r"\1", deb)
    return KexecTools(request.param, version, tree)


def test_each_suite_ships_the_kexec_tools_this_was_written_for(kexec):
    """testing moves on: a newer version there is one more to compare with, never an older one."""
    expected = tuple(map(int, KEXEC_TOOLS[kexec.suite].split(".")))
    found = tuple(map(int, kexec.version.split(".")))
    assert found == expected if kexec.suite != "testing" else found >= expected, kexec.version


def kernel_code(iomem: str) -> int:
    return int(re.search(r"([0-9a-f]+)-[0-9a-f]+ : Kernel code", iomem).group(1), 16)  # type: ignore[union-attr]


def system(base: Path, iomem: str, loads: list[tuple[int, int, int]] | None = None, **tree: object) -> Path:
    """A fake root; its kcore maps the kernel text like Linux (KCORE_TEXT first, then the direct map)."""
    root = make_tree(base / "root", iomem, **tree)  # type: ignore[arg-type]
    if loads is None:
        loads = [(TEXT, kernel_code(iomem), IMAGE_SIZE), (DIRECT_MAP, 0, 4 * GIB)]
    (root / "proc" / "kcore").write_bytes(kcore(loads))
    return root


def kexec_p(root: Path, kexec: KexecTools, shim: Path, vmlinuz: Path, *options: str) -> Load:
    """`kexec -p [options] vmlinuz` chrooted into root: what it handed to kexec_load."""
    out = root / "shim-out"
    out.mkdir()
    shutil.copy(shim, root / "kexec-shim.so")
    shutil.copy(vmlinuz, root / "vmlinuz")
    argv = [*kexec.argv, "-p", *options, "/vmlinuz"]
    proc = chrooted(root, argv, {"KEXEC_SHIM_OUT": "/shim-out", "LD_PRELOAD": "/kexec-shim.so"}, kexec.tree)
    calls = tuple((out / "calls").read_text().splitlines()) if (out / "calls").exists() else ()
    assert proc.returncode == 0, (f"kexec {kexec.version} -p {' '.join(options)} failed ({proc.returncode}): "
                                  f"{proc.stderr.strip()}")
    assert any(c.startswith("kexec_load ") for c in calls), f"the shim saw no kexec_load: {calls} {proc.stderr}"
    segments = []
    for line in (out / "segments").read_text().splitlines():
        index, mem, memsz, bufsz = line.split()
        segments.append(Segment(int(mem, 16), int(memsz, 16), int(bufsz, 16), (out / f"seg{index}").read_bytes()))
    return Load(calls, tuple(segments))


def assert_same_header(root: Path, load: Load) -> None:
    """crashhpd's kexec-tools layout for the tree is the buffer kexec-tools loaded, to the byte."""
    real = load.header
    built = build_valid(read_snapshot(str(root)), preset("kexec-tools"))
    assert real.memsz == max(KIB16, -(-real.bufsz // PAGE) * PAGE)
    assert (len(built.data), built.data) == (real.bufsz, real.data), (
        f"\nkexec-tools ({real.bufsz} bytes):\n{table(parse(real.data))}\n"
        f"crashhpd ({len(built.data)} bytes):\n{table(parse(built.data))}")
    for index, p_offset in built.model.ram_offsets:  # the low-memory copy is a segment of its own, right there
        start, end = built.model.ram[index]
        assert any(s.mem == p_offset and s.bufsz == -(-(end - start + 1) // 1024) * 1024 for s in load.segments)


# --- the cases --------------------------------------------------------------------------------------


def fixture_text(name: str) -> str:
    text = (IOMEM_FIXTURES / f"{name}.txt").read_text()
    if name in ADDED_CRASH_KERNEL:
        old, new = ADDED_CRASH_KERNEL[name]
        assert old in text
        text = text.replace(old, new)
    return text


QEMU = (IOMEM_FIXTURES / "qemu-kvm-crashkernel.txt").read_text()
QEMU_KERNEL_TEXT = [(TEXT, 0x14E800000, IMAGE_SIZE), (DIRECT_MAP, 0, 4 * GIB)]

SMALL = ("00001000-0009fbff : System RAM\n00100000-3fffffff : System RAM\n  01000000-01ffffff : Kernel code\n"
         "  02a00000-02dfffff : Kernel bss\n")
SMALL_KCORE = [(TEXT, 0x1000000, IMAGE_SIZE), (DIRECT_MAP, 0, 4 * GIB)]

SPECIAL: dict[str, tuple[str, dict[str, object]]] = {
    # sysconf(_SC_NPROCESSORS_CONF) counts `possible` (5 CPUs), so CPUs 0-4 are looked at and 6 is not
    "possible-with-a-gap": (QEMU, {"possible": "0-3,6"}),
    # CPUs 6 and 7 are possible but absent (no crash_notes): no note, but room for one each
    "possible-present-online-differ": (QEMU, {"possible": "0-7", "present": "0-5", "online": "0-3,5"}),
    # CPU 1 has no crash_notes, CPU 3 no crash_notes_size (a 1024-byte note)
    "cpus-without-notes-or-size": (QEMU, {"possible": "0-3", "online": "0-1",
                                          "notes": {0: (0x7000, 368), 2: (0x9000, 368), 3: (0xA000, None)}}),
    "gart-in-ram": (QEMU.replace("  14f764000-14fa71fff : Kernel bss\n",
                                 "  14f764000-14fa71fff : Kernel bss\n  200000000-203ffffff : GART\n"), {}),
    "crash-cma": (QEMU, {"extra": {"sys/kernel/kexec_crash_cma_ranges": "80000000-8fffffff\n200000000-2ffffffff\n"}}),
    "crash-kernel-fills-a-ram-line": (
        QEMU.replace("  2a000000-340fffff : Crash kernel\n", "")
        + "440000000-47fffffff : System RAM\n  440000000-47fffffff : Crash kernel\n", {}),
    # kptr_restrict: every symbol reads 0, so the image is kcore's first PT_LOAD in the kernel text
    # window (the KASLR'd one, not the module area after it); the direct map is KASLR'd too
    "kallsyms-hidden-kcore-image": (QEMU, {"kallsyms": HIDDEN_KALLSYMS, "loads": [
        (0xFFFFFFFF9A000000, 0x14E800000, 0x2345000), (0xFFFF9F0000000000, 0, 4 * GIB),
        (0xFFFFFFFFC0000000, 0, 0x1000000)]}),
    "no-kallsyms": (QEMU, {"kallsyms": None, "loads": QEMU_KERNEL_TEXT}),
    # the kcore PT_LOAD holding _stext, its start rounded down to 1 MiB and its size up to a page
    "kcore-image-unaligned": (QEMU, {
        "kallsyms": "ffffffff9a200000 T _text\nffffffff9a200000 T _stext\nffffffff9c000000 B _end\n",
        "loads": [(0xFFFF9F0000000000, 0, 4 * GIB), (0xFFFFFFFF9A123000, 0x14E800000, 0x2345123)]}),
    # exclude_region(): both lines the Crash kernel overlaps are cut, only the last one's upper part
    # comes back, as RAM, so 0x28000000-0x2fffffff (reserved) is dumped and 0x30000000-0x3fffffff is not
    "reserved-in-ram-overlapping-crash": (
        SMALL + "  20000000-2fffffff : reserved\n    24000000-27ffffff : Crash kernel\n", {"loads": SMALL_KCORE}),
    "two-crash-kernels-in-one-line": (
        SMALL + "  20000000-27ffffff : Crash kernel\n  28000000-3fffffff : Crash kernel\n", {"loads": SMALL_KCORE}),
    "last-gart-line-counts": (SMALL + "  20000000-27ffffff : Crash kernel\n  30000000-30ffffff : GART\n"
                              "  38000000-38ffffff : GART\n", {"loads": SMALL_KCORE}),
    "low-ram-ends-at-640k": (SMALL.replace("0009fbff", "000a0000") + "  20000000-27ffffff : Crash kernel\n",
                             {"loads": SMALL_KCORE}),
    # the tree of test_header_golden.py
    "golden": ("00000000-00000fff : Reserved\n00001000-0009fbff : System RAM\n00100000-3fffffff : System RAM\n"
               "  01000000-01ffffff : Kernel code\n  02a00000-02dfffff : Kernel bss\n"
               "  20000000-27ffffff : Crash kernel\n",
               {"possible": "0-1", "online": "0", "notes": {0: (0x13FC17000, 368), 1: (0x13FC18000, None)}}),
}


@pytest.mark.parametrize("name", sorted(p.stem for p in IOMEM_FIXTURES.glob("*.txt")))
def test_fixture_header_is_byte_exact(tmp_path, kexec, shim, vmlinuz, name):
    root = system(tmp_path, fixture_text(name))
    assert_same_header(root, kexec_p(root, kexec, shim, vmlinuz))


@pytest.mark.parametrize("case", sorted(SPECIAL))
def test_special_case_header_is_byte_exact(tmp_path, kexec, shim, vmlinuz, case):
    iomem, tree = SPECIAL[case]
    tree = dict(tree)
    loads = tree.pop("loads", None)
    root = system(tmp_path, iomem, loads, **tree)  # type: ignore[arg-type]
    assert_same_header(root, kexec_p(root, kexec, shim, vmlinuz))


def test_no_crash_kernel_is_refused_by_kexec_tools(tmp_path, kexec, shim, vmlinuz):
    root = system(tmp_path, (IOMEM_FIXTURES / "thinkpad-bare-metal.txt").read_text())
    with pytest.raises(AssertionError, match="Memory for crashkernel is not reserved"):
        kexec_p(root, kexec, shim, vmlinuz)


def test_dash_c_is_kexec_load_like_plain_p(tmp_path, kexec, shim, vmlinuz):
    """`-c` forces kexec_load; without it 2.0.27+ try kexec_file_load first (the shim answers ENOSYS, as a
    kernel without it would) and fall back to the same kexec_load, 2.0.25 goes straight to it."""
    plain_root = system(tmp_path / "plain", QEMU, QEMU_KERNEL_TEXT)
    forced_root = system(tmp_path / "forced", QEMU, QEMU_KERNEL_TEXT)
    plain = kexec_p(plain_root, kexec, shim, vmlinuz)
    forced = kexec_p(forced_root, kexec, shim, vmlinuz, "-c")
    first = ["kexec_file_load"] if kexec.tries_file_load_first else []
    assert [c.split()[0] for c in plain.calls] == [*first, "kexec_load"]
    assert [c.split()[0] for c in forced.calls] == ["kexec_load"]
    assert plain.calls[-1].split()[1] == forced.calls[0].split()[1]  # the same flags: KEXEC_ON_CRASH | x86_64
    assert forced.header == plain.header
    assert_same_header(forced_root, forced)


def test_ram_nested_in_ram_is_built_twice_and_refused(tmp_path, kexec, shim, vmlinuz):
    """kexec-tools keeps a System RAM line inside another one as a PT_LOAD of its own, out of order and
    overlapping its parent: the model has the same bytes, and crashhpd calls that header invalid."""
    iomem = SMALL.replace("  02a00000-02dfffff : Kernel bss\n",
                          "  02a00000-02dfffff : Kernel bss\n  10000000-1fffffff : System RAM (kmem)\n")
    root = system(tmp_path, iomem + "  30000000-37ffffff : Crash kernel\n", SMALL_KCORE)
    real = kexec_p(root, kexec, shim, vmlinuz).header
    snapshot = read_snapshot(str(root))
    assert build(plan(snapshot, preset("kexec-tools"))) == real.data
    with pytest.raises(InvalidHeader, match="RAM 0x10000000 overlaps or precedes RAM 0x38000000-0x3fffffff"):
        build_valid(snapshot, preset("kexec-tools"))


# --- Persistent Memory: only the zero padding grows, so no reload ------------------------------------

# two 16 GiB NVDIMM regions at 64 GiB, above any RAM here: 18 ranges to size for instead of 16, so
# kexec-tools' buffer crosses 1 KiB
PMEM = "1000000000-13ffffffff : Persistent Memory\n1400000000-17ffffffff : Persistent Memory\n"
E820 = struct.Struct("<QQI")  # struct boot_e820_entry: addr, size, type
E820_ENTRIES, E820_TABLE, E820_TYPE_PMEM = 0x1E8, 0x2D0, 7  # struct boot_params offsets; its E820 type


def e820(boot_params: bytes) -> list[tuple[int, int, int]]:
    return [E820.unpack_from(boot_params, E820_TABLE + E820.size * i) for i in range(boot_params[E820_ENTRIES])]


def boot_params(load: Load) -> bytes:
    """The segment holding struct boot_params: the setup header's "HdrS" at 0x202."""
    (found,) = [s.data for s in load.segments if s.data[0x202:0x206] == b"HdrS"]
    return found


def test_persistent_memory_grows_only_the_headers_zero_padding(tmp_path, kexec, shim, vmlinuz):
    """Two Persistent Memory ranges appear: kexec-tools writes the same program headers into a buffer
    sized for two more (1 KiB -> 2 KiB), crashhpd's model builds both byte for byte and calls them the
    same header. The rest of the load changes only in the crash kernel's E820 map, two entries of type
    E820_TYPE_PMEM more (and purgatory's digests of it), which a dump never reads: /proc/vmcore serves
    what the header's program headers say."""
    before_root = system(tmp_path / "before", QEMU, QEMU_KERNEL_TEXT)
    after_root = system(tmp_path / "after", QEMU + PMEM, QEMU_KERNEL_TEXT)
    before, after = kexec_p(before_root, kexec, shim, vmlinuz), kexec_p(after_root, kexec, shim, vmlinuz)
    assert_same_header(before_root, before)
    assert_same_header(after_root, after)
    old, new = before.header.data, after.header.data
    end = 64 + 56 * struct.unpack_from("<H", old, 56)[0]
    assert (len(old), len(new)) == (1024, 2048)
    assert new[:end] == old[:end] and new[end:] == bytes(len(new) - end)
    assert same_program_headers(old, new) and same_program_headers(new, old)
    old_params, new_params = boot_params(before), boot_params(after)
    added = [(0x1000000000, 0x400000000, E820_TYPE_PMEM), (0x1400000000, 0x400000000, E820_TYPE_PMEM)]
    assert e820(new_params) == e820(old_params) + added
    table_end = E820_TABLE + E820.size * new_params[E820_ENTRIES]
    assert (new_params[:E820_ENTRIES] + new_params[E820_ENTRIES + 1:E820_TABLE] + new_params[table_end:]
            == old_params[:E820_ENTRIES] + old_params[E820_ENTRIES + 1:E820_TABLE] + old_params[table_end:])


def test_persistent_memory_costs_the_kexec_backend_no_reload_and_new_ram_one(standin, tmp_path):
    """The decision, where the kernel's header cannot be read back (this tree has no kcore), so the kexec
    backend's model of its last load decides: the 2 KiB header the two ranges give is the 1 KiB one in
    force, padded (the test above), so no reload; a hot-added block is one. Comparing bytes, crashhpd
    reloaded for the padding: the first assertion on `outcome` fails on that. The stand-in kexec
    (tests/support/kexec_standin.py) loads, as this kernel has no kexec_load."""
    tree = standin.root
    layout = preset("kexec-tools")
    backend = KexecBackend(KexecConfig(binary=str(standin.path)), str(tree), str(tmp_path / "state"), kernel(tree))
    first = build_valid(read_snapshot(str(tree)), layout)
    settle(backend.begin(first.data, kernel(tree)), lambda: read_kernel_state(str(tree)))
    assert len(standin.loads()) == 1 and len(first.data) == 1024
    replace_iomem(tree, (tree / "proc/iomem").read_text() + PMEM)
    snapshot = read_snapshot(str(tree))
    assert snapshot.loaded_header is None and len(build_valid(snapshot, layout).data) == 2048
    outcome = reconcile(backend, snapshot, layout)
    assert isinstance(outcome, Outcome) and outcome.applied is None, "a reload for zero padding"
    assert len(standin.loads()) == 1
    hot_add(tree, 1)  # the negative control: RAM the header lacks
    replace_iomem(tree, (tree / "proc/iomem").read_text() + PMEM)
    pending = reconcile(backend, read_snapshot(str(tree)), layout)
    assert isinstance(pending, InFlight) and any(line.startswith("+ RAM 0x") for line in pending.changes)
    settle(pending.pending, lambda: read_kernel_state(str(tree)))
    assert len(standin.loads()) == 2


# --- random systems: whatever the walk meets, the model says what the binary builds -------------------

TOP_NAMES = ("System RAM", "reserved", "Reserved", "ACPI Tables", "ACPI Non-volatile Storage", "Persistent Memory",
             "GART", "PCI Bus 0000:00", "RAM buffer")
CHILD_NAMES = ("Crash kernel", "GART", "reserved", "System RAM (kmem)", "Kernel data")


@st.composite
def random_system(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    """Low RAM, a 2 GiB RAM line with the kernel, blocks of random kinds and children above 4 GiB in
    MiB steps, and last a RAM line holding the 256 MiB Crash kernel that the bzImage is loaded into."""
    low_end = draw(st.sampled_from([0x9FBFF, 0x9FFFF, 0xA0000, 0x57FFF]))
    lines = [f"00001000-{low_end:08x} : System RAM", "00100000-7fffffff : System RAM",
             "  01000000-01ffffff : Kernel code"]
    base = 4 << 30
    for _ in range(draw(st.integers(0, 5))):
        size = draw(st.integers(1, 64)) * MIB
        name = draw(st.sampled_from(TOP_NAMES))
        lines.append(f"{base:x}-{base + size - 1:x} : {name}")
        if name in ("System RAM", "Persistent Memory") and size > 2 * MIB:
            offsets = sorted(set(draw(st.lists(st.integers(0, size // MIB - 1), max_size=4))))
            for lo, hi in zip(offsets[::2], offsets[1::2] + [size // MIB][: len(offsets) % 2]):
                child = "System RAM (kmem)" if name == "Persistent Memory" else draw(st.sampled_from(CHILD_NAMES))
                lines.append(f"  {base + lo * MIB:x}-{base + hi * MIB - 1:x} : {child}")
        base += size + draw(st.integers(0, 2)) * MIB
    ram_size = 512 * MIB
    crash_at = draw(st.sampled_from([0, 128, 256]))  # at the start, inside, at the end
    crash_size = ram_size if draw(st.booleans()) and crash_at == 0 else 256 * MIB
    lines.append(f"{base:x}-{base + ram_size - 1:x} : System RAM")
    lines.append(f"  {base + crash_at * MIB:x}-{base + crash_at * MIB + crash_size - 1:x} : Crash kernel")
    possible = draw(st.integers(1, 6))
    present = sorted(draw(st.sets(st.integers(0, possible - 1), min_size=1)))
    notes = {cpu: (0x13FC17000 + 0x1000 * cpu, draw(st.sampled_from([368, None]))) for cpu in present}
    tree = {"possible": f"0-{possible - 1}", "present": ",".join(map(str, present)), "notes": notes,
            "extra": ({"sys/kernel/kexec_crash_cma_ranges": "100000-3fffffff\n"} if draw(st.booleans()) else {})}
    return "".join(line + "\n" for line in lines), tree


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=random_system())
def test_random_system_header_is_byte_exact(kexec, shim, vmlinuz, case):
    iomem, tree = case
    with tempfile.TemporaryDirectory() as tmp:
        root = system(Path(tmp), iomem, **tree)  # type: ignore[arg-type]
        real = kexec_p(root, kexec, shim, vmlinuz).header
        assert build(plan(read_snapshot(str(root)), preset("kexec-tools"))) == real.data, (
            f"\n{iomem}\nkexec-tools:\n{table(parse(real.data))}")
