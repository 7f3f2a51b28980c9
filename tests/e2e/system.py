# SPDX-License-Identifier: GPL-2.0-only
"""The systemd guests: Debian 12 and Debian 13 on a virtio disk, booted from Debian's packages with systemd as PID 1.

The root file system is built by mmdebstrap from Debian's packages, with the
host's own mirrors (parts.host_sources()), into a directory, then written
into a raw ext4 image with `mke2fs -d`. That image is cached like the other
parts, under a key made of its package list and of every file that shapes
it (tests/e2e/system/), so later runs reuse it. It holds systemd, udev,
kdump-tools (configured as an admin would, kdump on, acpi_no_memhotplug
appended), crashhpd's Debian dependencies, its configuration drop-in, a
group and a user for crashhpctl, logging wrappers around kexec and
kdump-config, and the agent (system/overlay/usr/lib/crashhpd-e2e/agent)
that runs the host's commands over ttyS1.

What changes from run to run goes into a copy of it in one short boot
without systemd (`prepare`): the kernels, the kdump-side initramfs the e2e
suite builds (as kdump-tools' /var/lib/kdump/initrd.img-<release>, so no
initramfs is generated under TCG) and crashhpd itself, installed with
`dpkg -i` from the .deb `make deb` built in the same run (for another release
than the host's, in a chroot of that release). Every test then
boots that copy with `snapshot=on`: what a test writes is gone after it.

Both releases are built from the same recipe (system/): a Release names the
codename and the packages, the image's cache key covers both. Debian 13's
image has systemd 257, kdump-tools 1.10.7 and kexec-tools 2.0.29 (whose
plain `kexec -p` tries kexec_file_load first), and Python 3.13.

Debian's cloud kernels build virtio_blk (and on 6.1 virtio_pci) as modules,
so the first kernel gets a small initramfs (system/init, busybox and those
modules) that mounts root= and switches to systemd.
"""

import hashlib
import json
import lzma
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile

from . import apt_sources, initramfs, parts
from .parts import CACHE, REPO, Kernel, PartsError, Qemu

SYSTEM_DIR = Path(__file__).parent / "system"
# where the image is cached: CACHE, unless CRASHHPD_E2E_SYSTEM_CACHE says otherwise (e.g. a shared,
# read-only CRASHHPD_E2E_CACHE for the other parts, and a writable one for the image)
SYSTEM_CACHE = Path(os.environ.get("CRASHHPD_E2E_SYSTEM_CACHE", CACHE))
BASE = ("systemd", "systemd-sysv", "udev", "kdump-tools", "kexec-tools", "procps", "passwd")
# crashhpd's Depends (debian/control), so dpkg -i needs no network
DEPENDS = ("python3-pyelftools", "python3-prometheus-client", "python3-decorator", "python3-pyudev", "python3-systemd")


@dataclass(frozen=True, slots=True)
class Release:
    """A Debian release the systemd guest is built from, and the packages its image holds."""

    codename: str
    packages: tuple[str, ...]


BOOKWORM = Release("bookworm", (*BASE, "python3.11", *DEPENDS))
# Debian 13's python3-pydantic 2.x: there crashhpd depends on the distribution's package
TRIXIE = Release("trixie", (*BASE, "python3", *DEPENDS, "python3-pydantic"))
IMAGE_SIZE = "2G"
BUILD_TIMEOUT_S = 600
MODULES = ("virtio_pci", "virtio_blk")  # and what they depend on, from each module's .modinfo
BOOT_ARGS = "console=ttyS0 root=/dev/vda rw crashkernel=256M memhp_default_state=online_movable panic=0 loglevel=4"


def image_key(release: Release = BOOKWORM) -> str:
    """The package list and every file under system/: change either and the image is built anew."""
    digest = hashlib.sha256(json.dumps([release.codename, release.packages, IMAGE_SIZE]).encode())
    for path in sorted(p for p in SYSTEM_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(SYSTEM_DIR)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _mmdebstrap(root: Path, log: Path, release: Release) -> None:
    parts.mmdebstrap(root, log, "minbase", release.packages, [
        f"sync-in {SYSTEM_DIR / 'overlay'} /",
        f"upload {SYSTEM_DIR / 'customize'} /tmp/customize",
        'chroot "$1" sh /tmp/customize',
        'rm "$1/tmp/customize"',
    ], BUILD_TIMEOUT_S, release.codename)


def base_image(release: Release = BOOKWORM, cache: Path = SYSTEM_CACHE) -> Path:
    """The root file system as a raw ext4 image, built on first use (mmdebstrap, mke2fs -d) and reused after."""
    image = cache / "system" / f"{release.codename}-{image_key(release)}.raw"
    if image.exists():
        return image
    with parts._locked(cache):
        if image.exists():
            return image
        image.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=image.parent, prefix=".build-") as work:
            root = Path(work) / "root"
            _mmdebstrap(root, image.parent / f"mmdebstrap-{release.codename}.log", release)
            partial = Path(work) / "image.raw"
            parts._run(["mke2fs", "-q", "-t", "ext4", "-L", "crashhpd-guest", "-d", str(root), str(partial),
                        IMAGE_SIZE], "mke2fs -d (the systemd guest's root file system)")
            partial.rename(image)
        for old in image.parent.glob(f"{release.codename}-*.raw"):  # images of an older package list or recipe
            if old != image:
                old.unlink()
    return image


# --- the first kernel's initramfs -----------------------------------------------------------


def _modinfo_depends(module: Path) -> list[str]:
    with open(module, "rb") as f:
        data = ELFFile(f).get_section_by_name(".modinfo").data()
    for field in data.split(b"\0"):
        if field.startswith(b"depends="):
            return [name for name in field[8:].decode().split(",") if name]
    return []


def _module_files(kernel_tree: Path, work: Path) -> list[Path]:
    """MODULES and their dependencies, in load order, decompressed (busybox's insmod reads plain .ko)."""
    trees = [d for d in (kernel_tree / "lib/modules", kernel_tree / "usr/lib/modules") if d.is_dir()]  # Debian 12, 13
    found = {p.name.split(".ko")[0].replace("-", "_"): p for d in trees for p in d.glob("*/kernel/**/*.ko*")}
    builtin = {Path(line).name.split(".ko")[0].replace("-", "_")
               for listing in (f for d in trees for f in d.glob("*/modules.builtin"))
               for line in listing.read_text().splitlines()}
    ordered: list[Path] = []
    seen: set[str] = set()

    def add(name: str) -> None:
        if name in seen or name in builtin:
            return
        seen.add(name)
        source = found.get(name)
        if source is None:
            raise PartsError(f"module {name} is not in {kernel_tree}")
        plain = work / f"{name}.ko"
        plain.write_bytes(lzma.decompress(source.read_bytes()) if source.suffix == ".xz" else source.read_bytes())
        for dependency in _modinfo_depends(plain):
            add(dependency)
        ordered.append(plain)

    for name in MODULES:
        add(name)
    return ordered


def boot_initrd(kernel: Kernel, busybox: Path, out: Path, payload: dict[str, Path] | None = None) -> Path:
    """system/init, busybox, the virtio modules of this kernel, and for `prepare` the run's files under /payload."""
    work = out.with_suffix(".d")
    shutil.rmtree(work, ignore_errors=True)
    (work / "modules.d").mkdir(parents=True)
    modules = _module_files(kernel.tree, work / "modules.d")
    (work / "modules").write_text("".join(f"{m.name}\n" for m in modules))
    for directory in ("bin", "proc", "sys", "dev", "root"):
        (work / directory).mkdir(exist_ok=True)
    shutil.copy2(busybox, work / "bin/busybox")
    (work / "bin/sh").symlink_to("busybox")
    shutil.copy2(SYSTEM_DIR / "init", work / "init")
    (work / "init").chmod(0o755)
    extra = [(f"payload/{name}", path) for name, path in (payload or {}).items()]
    initramfs.write_cpio(out, work, extra=extra)
    shutil.rmtree(work)
    return out


# --- one run's image ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class System:
    """This run's image (crashhpd installed) and how to boot each kernel series on it."""

    image: Path
    kernels: dict[str, Kernel]
    initrds: dict[str, Path]
    prepare_seconds: float
    codename: str


def _build_elsewhere(out: Path, release: Release) -> None:
    """`sh .ci/setup deb` in a minimal chroot of `release` (mmdebstrap), which installs the build dependencies
    there from the host's mirrors: the package fits the release it is built on (debian/rules)."""
    with tempfile.TemporaryDirectory(dir=out, prefix=".build-") as work:
        source = Path(work) / "crashhpd.tar"
        # GNU tar's --exclude-vcs-ignores does not take .gitignore's "dir/" lines: .venv and the e2e cache by name
        subprocess.run(["tar", "-C", str(REPO), "--exclude-vcs", "--exclude-vcs-ignores", "--exclude=./.venv",
                        "--exclude=./.cache", "-cf", str(source), "."], check=True, timeout=120)
        log = out / f"build-{release.codename}.log"
        parts.mmdebstrap(Path(work) / "root", log, "minbase", ("ca-certificates",), [
            *parts.local_ca_hooks(),
            'chroot "$1" update-ca-certificates',
            f"upload {source} /root/crashhpd.tar",
            'chroot "$1" sh -c "mkdir /root/src /root/out && tar -C /root/src -xf /root/crashhpd.tar '
            '&& sh /root/src/.ci/setup deb /root/out"',
            f"sync-out /root/out {out}",
        ], BUILD_TIMEOUT_S, release.codename)


def build_deb(out: Path, release: Release = BOOKWORM) -> Path:
    """`make deb` (through .ci/setup, which installs the build dependencies) into `out`, built on `release`:
    on this host when it runs that release, else in a chroot of it."""
    out.mkdir(parents=True, exist_ok=True)
    if release.codename == apt_sources.own_codename():
        parts._run(["sh", str(REPO / ".ci/setup"), "deb", str(out)], "make deb")
    else:
        _build_elsewhere(out, release)
    debs = sorted(out.glob("crashhpd_*.deb"))
    if len(debs) != 1:
        raise PartsError(f"make deb left {len(debs)} packages in {out}")
    return debs[0]


def prepare(qemu: Qemu, kernels: dict[str, Kernel], kdump_initrd: Path, work: Path,
            deadline_s: float = 180.0, release: Release = BOOKWORM, cache: Path = SYSTEM_CACHE) -> System:
    """A copy of the release's cached image (in `cache`) with this run's kernels, kdump initrds and crashhpd .deb
    installed."""
    from .vm import Guest  # vm imports nothing of this module; kept local so the build half stays light

    started = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    base = base_image(release, cache)
    deb = build_deb(work / "deb", release)
    image = work / "system.raw"
    subprocess.run(["cp", "--sparse=always", str(base), str(image)], check=True)
    busybox = parts.guest() / "bin/busybox"
    initrds = {series: boot_initrd(k, busybox, work / f"boot-{series}.cpio") for series, k in kernels.items()}
    payload = {"crashhpd.deb": deb}
    for kernel in kernels.values():
        payload[f"boot/vmlinuz-{kernel.version}"] = kernel.vmlinuz
        payload[f"boot/config-{kernel.version}"] = kernel.config_file
        payload[f"kdump/initrd.img-{kernel.version}"] = kdump_initrd
    first = next(iter(kernels))
    installer = boot_initrd(kernels[first], busybox, work / "install.cpio", payload)
    with Guest(qemu, kernels[first], installer, work / "prepare", "install", deadline_s=deadline_s,
               append="console=ttyS0 root=/dev/vda crashhpd_e2e.install panic=0 loglevel=4",
               extra=("-drive", f"file={image},format=raw,if=virtio")) as guest:
        installed = guest.expect("INSTALLED")
        if installed["exit"] != 0:
            raise guest.failure(f"dpkg -i crashhpd.deb failed in the guest: {installed}")
        if guest.wait_exit() != 0:
            raise guest.failure("QEMU did not exit cleanly after the install")
    installer.unlink()
    return System(image, kernels, initrds, time.monotonic() - started, release.codename)


# --- a boot of it -----------------------------------------------------------------------------


class SystemGuest:
    """One boot of the run's image (snapshot=on: nothing it writes outlives it), driven through the agent."""

    MEMORY = "1G,slots=4,maxmem=4G"
    SMP = "2,maxcpus=3"

    def __init__(self, qemu: Qemu, system: System, series: str, workdir: Path, kernel_args: str = "",
                 deadline_s: float = 240.0, memory: str = MEMORY, smp: str = SMP) -> None:
        from .vm import Guest

        kernel = system.kernels[series]
        self.series = series
        self.guest = Guest(qemu, kernel, system.initrds[series], workdir, "system", deadline_s=deadline_s,
                           memory=memory, smp=smp, append=f"{BOOT_ARGS} {kernel_args}".strip(),
                           extra=("-drive", f"file={system.image},format=raw,if=virtio,snapshot=on"))

    def __enter__(self) -> "SystemGuest":
        return self

    def __exit__(self, *exc: object) -> None:
        self.guest.kill()

    def booted(self) -> dict:
        """Once the agent runs and systemd has finished starting everything (running or degraded)."""
        booted = self.guest.expect("BOOTED")
        state = self.run("systemctl is-system-running --wait", timeout=180)
        booted["state"] = state["stdout"].strip()
        return booted

    def run(self, sh: str, user: str | None = None, timeout: float = 120) -> dict:
        self.guest.send("RUN", json.dumps({"sh": sh, "user": user, "timeout": timeout}))
        return self.guest.expect("RAN")

    def sh(self, sh: str, user: str | None = None, timeout: float = 120) -> str:
        """stdout of a command that must succeed; anything else fails the test with the transcripts."""
        result = self.run(sh, user, timeout)
        if result["exit"] != 0:
            raise self.guest.failure(f"`{sh}` exited {result['exit']}: {result['stderr'] or result['stdout']}")
        return result["stdout"]

    def json_lines(self, sh: str) -> list[dict]:
        return [json.loads(line) for line in self.sh(sh).splitlines() if line.strip()]

    # --- what the guest's own tools say -----------------------------------------------------

    def mark(self) -> str:
        """The journal's newest cursor: what comes after it happened after this call."""
        out = self.sh("journalctl --sync && journalctl -q -n 1 --show-cursor -o cat")
        return out.strip().splitlines()[-1].removeprefix("-- cursor: ")

    def entries(self, matches: str, after: str | None = None) -> list[dict]:
        """Journal entries (journalctl -o json), all of this boot or those after a mark().

        --cursor and not --after-cursor: with matches, systemd 252's --after-cursor skips the
        first matching entry when the cursor's own entry does not match.
        """
        since = f"--cursor='{after}'" if after else "-b"
        found = self.json_lines(f"journalctl --sync && journalctl -q -o json {since} {matches}")
        return [e for e in found if e.get("__CURSOR") != after]

    def calls(self, tag: str, after: str | None = None) -> list[dict]:
        """What a logging wrapper (kexec, kdump-config) recorded: one dict per run."""
        runs = []
        for entry in self.entries(f"-t {tag}", after):
            start, end, status, unit, *args = str(entry["MESSAGE"]).split(" ", 4)
            runs.append({"start": float(start), "end": float(end), "exit": int(status), "unit": unit,
                         "args": args[0] if args else ""})
        return runs

    def status(self) -> dict:
        """crashhpd's status over its socket (the wait helper): cheaper than crashhpctl under TCG."""
        return json.loads(self.sh(f"{WAIT} status"))

    def until_entries(self, matches: str, after: str, count: int = 1, timeout_s: float = 90.0) -> list[dict]:
        """The journal entries after a mark() once there are `count` of them (a signal's effect comes later)."""
        deadline = time.monotonic() + timeout_s
        while len(found := self.entries(matches, after)) < count:
            if time.monotonic() > deadline:
                raise self.guest.failure(f"{count} journal entries {matches} not seen in {timeout_s:g} s: {found}")
            time.sleep(0.5)
        return found

    def wait(self, *args: object) -> dict:
        return json.loads(self.sh(f"{WAIT} {' '.join(str(a) for a in args)}", timeout=300))


WAIT = "/usr/lib/crashhpd-e2e/wait"
KEXEC_TAG, KDUMP_CONFIG_TAG = "crashhpd-e2e-kexec", "crashhpd-e2e-kdump-config"  # the wrappers' journal tags


def _kind(args: str) -> str:
    """A wrapper's call as "load", "unload" or "other" (--version), whatever order its options come in.

    kdump-config loads with `-p [-s] ...` and unloads with `-p -u` or `-s -p -u`; crashhpd loads with
    `-p -c|-s ...`: the options are looked at, not where they stand.
    """
    options = args.split()
    if "-p" not in options:
        return "other"
    return "unload" if "-u" in options else "load"


def kexec_loads(calls: list[dict], unit: str | None = None) -> list[dict]:
    """`kexec -p` loads (not --version, not an unload) among a wrapper's calls, of one unit or all."""
    return [c for c in calls if _kind(c["args"]) == "load" and (unit is None or c["unit"] == unit)]


def unloads(calls: list[dict], unit: str | None = None) -> list[dict]:
    return [c for c in calls if _kind(c["args"]) == "unload" and (unit is None or c["unit"] == unit)]
