# SPDX-License-Identifier: GPL-2.0-only
"""The guest's initramfs: busybox, kexec-tools, Debian's Python 3.11 running this checkout of crashhpd, the agent.

One archive serves both kernels of a run: the first kernel gets it with a
second archive appended (the kernel and this archive again, as /boot files for
`kexec -p`); the kdump kernel gets it alone. Shared libraries are taken from
the unpacked Debian packages by following each ELF file's DT_NEEDED, so a
missing one fails the build by name instead of the guest at run time.
crashhpd's Python dependencies are copied from the environment running the
tests (the same wheels the rest of the suite tests) and every module is
compiled ahead to unchecked-hash .pyc files: under TCG, compiling at import
would cost seconds per boot.
"""

import gzip
import os
import py_compile
import shutil
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from packaging.requirements import Requirement

from .parts import REPO

GUEST_DIR = Path(__file__).parent / "guest"
PYTHON = "usr/lib/python3.11"
SITE = "usr/lib/python3/dist-packages"  # on Debian's sys.path
AGENT_DIR = "usr/lib/crashhpd-e2e"
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
DLOPENED = ("libudev.so.1",)  # pyudev loads it through ctypes, so no DT_NEEDED names it
STDLIB_LEFT_OUT = frozenset({"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
                             "config-3.11-x86_64-linux-gnu", "__pycache__", "site-packages", "dist-packages"})
KDUMP_KEPT = ("bin/", "init", "etc/", "sbin/ldconfig", "usr/bin/python3", f"{PYTHON}/", f"{AGENT_DIR}/")
KDUMP_SITE = frozenset({"crashhpd", "elftools"})
KDUMP_STDLIB_LEFT_OUT = frozenset({"asyncio", "email", "xml", "multiprocessing", "unittest", "distutils", "sqlite3",
                                   "curses", "dbm", "http", "xmlrpc", "wsgiref", "html", "concurrent", "ctypes",
                                   "venv", "zoneinfo", "tomllib", "urllib"})
ENTRY_POINTS = {"crashhpd": "crashhpd.cli", "crashhpctl": "crashhpd.control.client"}
BENCH_TOOLS = ("bin/date", "usr/bin/flock")  # coreutils' date has %N; busybox has no flock
LOADER = "lib64/ld-linux-x86-64.so.2"
BOOT_KERNEL = "boot/vmlinuz"
BOOT_INITRD = "boot/initrd.img"


class BuildError(Exception):
    """The guest cannot be assembled from what was unpacked."""


# --- newc cpio ------------------------------------------------------------------------------------


def _newc_entry(out, ino: int, name: str, mode: int, data: bytes, nlink: int = 1) -> None:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    out.write(b"070701" + "".join(f"{v:08X}" for v in fields).encode() + encoded)
    out.write(b"\0" * (-(110 + len(encoded)) % 4))
    out.write(data)
    out.write(b"\0" * (-len(data) % 4))


def write_cpio(out_path: Path, tree: Path | None, extra: Iterable[tuple[str, Path]] = (),
               members: set[Path] | None = None) -> None:
    """A newc archive of `tree` (owned by root, mtime 0), or of its `members` only (with every directory),
    plus `extra` files as (archive name, host path)."""
    ino = 1
    with open(out_path, "wb") as out:
        for directory, dirs, files in os.walk(tree) if tree is not None else ():
            dirs.sort()
            rel = os.path.relpath(directory, tree)
            if rel != ".":
                _newc_entry(out, ino, rel, stat.S_IFDIR | 0o755, b"", nlink=2)
                ino += 1
            for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]):
                path = os.path.join(directory, name)
                member = os.path.normpath(os.path.join(rel, name))
                if members is not None and Path(member) not in members:
                    continue
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    _newc_entry(out, ino, member, stat.S_IFLNK | 0o777, os.readlink(path).encode())
                else:
                    with open(path, "rb") as f:
                        _newc_entry(out, ino, member, stat.S_IFREG | stat.S_IMODE(st.st_mode), f.read())
                ino += 1
        for member, source in extra:
            for parent in reversed(Path(member).parents[:-1]):
                _newc_entry(out, ino, str(parent), stat.S_IFDIR | 0o755, b"", nlink=2)
                ino += 1
            _newc_entry(out, ino, member, stat.S_IFREG | 0o644, source.read_bytes())
            ino += 1
        _newc_entry(out, 0, "TRAILER!!!", 0, b"")


# --- staging --------------------------------------------------------------------------------------


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        if not dst.is_symlink():
            dst.symlink_to(os.readlink(src))
    elif not dst.exists():
        shutil.copy2(src, dst)


def _copy_tree(src: Path, dst: Path, left_out: frozenset[str] = frozenset()) -> None:
    for directory, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if d not in left_out]
        for name in files + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
            path = Path(directory, name)
            _copy(path, dst / path.relative_to(src))


def _is_elf(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def _needed(path: Path) -> list[str]:
    with open(path, "rb") as f:
        elf = ELFFile(f)
        return [tag.needed  # type: ignore[attr-defined]  # pyelftools sets it on DT_NEEDED tags only
                for section in elf.iter_sections() if isinstance(section, DynamicSection)
                for tag in section.iter_tags("DT_NEEDED")]


def _find_library(root: Path, name: str) -> Path | None:
    for directory in LIB_DIRS:
        if (root / directory / name).exists():
            return Path(directory, name)
    return None


def _library_closure(root: Path, binaries: Iterable[Path]) -> set[Path]:
    """Every library (as named and as the file it links to) the binaries need, transitively, under root."""
    libraries: set[Path] = set()
    seen: set[str] = set()
    queue = list(binaries)
    while queue:
        binary = queue.pop()
        for name in _needed(binary):
            if name in seen:
                continue
            seen.add(name)
            found = _find_library(root, name)
            if found is None:
                raise BuildError(f"{binary.name} needs {name}, which no fetched package provides")
            real = (root / found).resolve().relative_to(root.resolve())
            libraries |= {found, real}
            queue.append(root / real)
    return libraries


def _add_libraries(root: Path, stage: Path) -> None:
    """Every shared library the staged ELF files need, transitively, from the unpacked packages."""
    binaries = [p for p in stage.rglob("*") if _is_elf(p)]
    for name in DLOPENED:
        found = _find_library(root, name)
        if found is None:
            raise BuildError(f"{name} (loaded through ctypes) is in no fetched package")
        real = (root / found).resolve().relative_to(root.resolve())
        binaries.append(root / real)
        for library in (found, real):
            _copy(root / library, stage / library)
    for library in _library_closure(root, binaries):
        _copy(root / library, stage / library)
    _copy(root / LOADER, stage / LOADER)


def _distributions(name: str) -> Iterator[metadata.Distribution]:
    """crashhpd's runtime dependencies, transitively, as installed in the environment running the tests."""
    seen: set[str] = set()
    todo = [Requirement(r) for r in metadata.requires(name) or []]
    while todo:
        req = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        key = req.name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(req.name)
        yield dist
        todo += [Requirement(r) for r in dist.requires or []]


def copy_site_packages(site: Path) -> None:
    """This checkout's crashhpd and the installed distributions it needs at run time, into `site`."""
    for dist in _distributions("crashhpd"):
        for file in dist.files or []:
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue
            _copy(Path(str(dist.locate_file(file))), site / file)
    _copy_tree(REPO / "crashhpd", site / "crashhpd", frozenset({"__pycache__"}))


def _add_site_packages(stage: Path) -> None:
    copy_site_packages(stage / SITE)
    for script, module in ENTRY_POINTS.items():
        path = stage / "usr/bin" / script
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"#!/usr/bin/python3.11\nimport sys\nfrom {module} import main\nsys.exit(main())\n")
        path.chmod(0o755)


def _compile(stage: Path) -> None:
    """Unchecked-hash .pyc next to every module: valid whatever mtime the archive gives the sources."""
    if sys.version_info[:2] != (3, 11):
        return  # another Python's bytecode would be rejected by the guest's 3.11 anyway
    for source in stage.rglob("*.py"):
        guest_path = "/" + str(source.relative_to(stage))
        cfile = source.parent / "__pycache__" / f"{source.stem}.cpython-311.pyc"
        try:
            py_compile.compile(str(source), cfile=str(cfile), dfile=guest_path, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        except py_compile.PyCompileError:
            continue  # e.g. lib2to3-style test data that is not Python 3; the guest never imports it


def stage(root: Path, stage_dir: Path) -> Path:
    """Lay out the guest's file system from the unpacked packages `root` into `stage_dir`."""
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    for directory in ("proc", "sys", "dev", "run", "tmp", "etc", "var/lib", "root", "boot", "usr/sbin"):
        (stage_dir / directory).mkdir(parents=True, exist_ok=True)
    _copy(root / "bin/busybox", stage_dir / "bin/busybox")
    (stage_dir / "bin/sh").symlink_to("busybox")
    _copy(root / "sbin/kexec", stage_dir / "sbin/kexec")
    _copy(root / "sbin/ldconfig", stage_dir / "sbin/ldconfig")
    _copy(root / "usr/bin/python3.11", stage_dir / "usr/bin/python3.11")
    (stage_dir / "usr/bin/python3").symlink_to("python3.11")
    _copy_tree(root / PYTHON, stage_dir / PYTHON, STDLIB_LEFT_OUT)
    _add_site_packages(stage_dir)
    _copy_tree(GUEST_DIR, stage_dir / AGENT_DIR, frozenset({"__pycache__"}))
    for tool in BENCH_TOOLS:  # next to the agent, so busybox's own applets stay the shell's
        _copy(root / tool, stage_dir / AGENT_DIR / "bin" / Path(tool).name)
    _add_libraries(root, stage_dir)  # last: for every ELF file staged above
    init = stage_dir / "init"
    shutil.copy2(GUEST_DIR / "init", init)
    init.chmod(0o755)
    (stage_dir / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (stage_dir / "etc/group").write_text("root:x:0:\n")  # the control socket's default group
    (stage_dir / "etc/ld.so.conf").write_text("".join(f"/{d}\n" for d in LIB_DIRS))
    _compile(stage_dir)
    return stage_dir


def _kdump_members(stage_dir: Path) -> set[Path]:
    """What the kdump kernel runs: the agent, crashhpd's validator and the Python under them.

    Its 256 MiB hold the compressed archive and the unpacked files at once,
    so pydantic, kexec-tools, libsystemd and the stdlib packages nobody
    imports there stay out; so do extension modules needing more than
    Python itself links.
    """
    python = stage_dir / "usr/bin/python3.11"
    base_libraries = _library_closure(stage_dir, [python])
    base_names = {p.name for p in base_libraries} | {Path(LOADER).name}
    members = set(base_libraries) | {Path(LOADER)}
    for path in stage_dir.rglob("*"):
        rel = path.relative_to(stage_dir)
        if path.is_dir() and not path.is_symlink():
            continue
        parts = rel.parts
        if str(rel).startswith(KDUMP_KEPT) and not set(parts) & KDUMP_STDLIB_LEFT_OUT:
            if "lib-dynload" in parts and _is_elf(path) and not set(_needed(path)) <= base_names:
                continue
            members.add(rel)
        elif parts[:len(Path(SITE).parts)] == Path(SITE).parts and parts[len(Path(SITE).parts)] in KDUMP_SITE:
            members.add(rel)
    return members


def _gzip(plain: Path) -> Path:
    packed = plain.with_name(plain.name + ".gz")
    with open(plain, "rb") as src, gzip.open(packed, "wb", compresslevel=1) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    plain.unlink()
    return packed


@dataclass(frozen=True, slots=True)
class Archives:
    full: Path  # everything the first kernel runs
    kdump: Path  # the subset the kdump kernel runs, loaded by `kexec -p`


def build(root: Path, work: Path) -> Archives:
    """Both archives, gzip-compressed: the kdump kernel holds its archive twice while unpacking it."""
    work.mkdir(parents=True, exist_ok=True)
    stage_dir = stage(root, work / "stage")
    write_cpio(work / "full.cpio", stage_dir)
    write_cpio(work / "kdump.cpio", stage_dir, members=_kdump_members(stage_dir))
    return Archives(_gzip(work / "full.cpio"), _gzip(work / "kdump.cpio"))


def first_kernel_initrd(archives: Archives, vmlinuz: Path, out: Path) -> Path:
    """The kernel and the kdump archive as /boot files (what `kexec -p` loads), then the full archive."""
    boot = out.with_suffix(".boot.cpio")
    write_cpio(boot, None, extra=((BOOT_KERNEL, vmlinuz), (BOOT_INITRD, archives.kdump)))
    with open(out, "wb") as f:
        for part in (boot, archives.full):  # the kernel finds an archive after a plain one, not after a gzip one
            with open(part, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)
    boot.unlink()
    return out
