# SPDX-License-Identifier: GPL-2.0-only
"""The guest's parts, from Debian packages only, fetched once into a cache directory the tests own.

apt-get runs with a private source list, state, status file and cache. The
list names the host's own Debian mirrors (apt_sources.py: whatever its apt
configuration uses), for bookworm and its -updates, -security and
-backports suites; the host's apt state is never changed, and the empty status file makes
apt resolve each group's whole dependency closure, so the result does not
depend on what the host happens to have installed. Packages are unpacked with
`dpkg-deb -x`; nothing is installed system-wide.

QEMU comes from bookworm-backports (10.0): bookworm's 7.2 was found unreliable
for kdump under TCG. The 6.1 cloud kernel has no CONFIG_CRASH_HOTPLUG; the
6.12 one from bookworm-backports has it. The Debian 13 guest's kernels (a
group's `codename` is trixie) come from trixie and trixie-backports, with apt
state of their own (cache/apt-trixie), so no trixie package ever becomes a
bookworm group's candidate.
"""

import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import apt_sources

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CRASHHPD_E2E_CACHE", REPO / ".cache" / "e2e"))
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
CODENAME = "bookworm"  # the guests are Debian 12 unless a group or image says otherwise, whatever the host runs


@dataclass(frozen=True, slots=True)
class Group:
    """Packages fetched and unpacked together into one tree."""

    name: str
    packages: tuple[str, ...]
    release: str | None = None  # apt's -t: which suite wins over the default candidate
    unpack: str = ""  # only .deb files whose name starts with this are unpacked ("" = all)
    codename: str = CODENAME  # the Debian release whose suites apt reads


QEMU = Group("qemu", ("qemu-system-x86",), release="bookworm-backports")
GUEST = Group("guest", ("busybox-static", "kexec-tools", "libc-bin", "python3.11-minimal",
                        "libpython3.11-stdlib", "libudev1", "libsystemd0", "coreutils", "util-linux"))
KERNELS = {
    "6.1": Group("linux-6.1", ("linux-image-cloud-amd64",), unpack="linux-image-"),
    "6.12": Group("linux-6.12", ("linux-image-cloud-amd64",), release="bookworm-backports",
                  unpack="linux-image-"),
    # Debian 13: its own 6.12, and trixie-backports' 7.x (7.3.4 when this was written), whose image is split
    # into linux-binary- (vmlinuz), linux-modules- and linux-base- (config) packages
    "trixie-6.12": Group("linux-trixie", ("linux-image-cloud-amd64",), unpack="linux-image-", codename="trixie"),
    "trixie-7.3": Group("linux-trixie-backports", ("linux-image-cloud-amd64",), release="trixie-backports",
                        unpack="linux-", codename="trixie"),
}


class PartsUnavailable(Exception):
    """The package registries cannot be reached: the only reason the e2e tests may skip."""


class PartsError(Exception):
    """apt or dpkg-deb failed for a reason other than the network."""


def source_list(found: apt_sources.Mirrors | None, codename: str = CODENAME) -> str:
    """The private source list for the host's mirrors; PartsUnavailable when the host has none."""
    if found is None:
        raise PartsUnavailable(f"no Debian mirror serving {codename} (main) in the host's apt sources "
                               f"({apt_sources.ETC_APT}/sources.list, {apt_sources.ETC_APT}/sources.list.d/)")
    suites = [(found.archive, codename), (found.archive, f"{codename}-updates"),
              (found.archive, f"{codename}-backports")]
    if found.security is not None:
        suites.insert(2, (found.security, f"{codename}-security"))
    return "".join(f"deb [signed-by={KEYRING}] {uri} {suite} main\n" for uri, suite in suites)


@functools.cache
def host_sources(codename: str = CODENAME) -> str:
    return source_list(apt_sources.mirrors(codename, fallback=apt_sources.own_codename()), codename)


@dataclass(frozen=True, slots=True)
class Qemu:
    binary: Path
    firmware: tuple[Path, ...]  # each passed with -L
    library_path: str  # LD_LIBRARY_PATH for the unpacked shared libraries

    def env(self) -> dict[str, str]:
        return {**os.environ, "LD_LIBRARY_PATH": self.library_path}


@dataclass(frozen=True, slots=True)
class Kernel:
    version: str  # the package's uname -r
    vmlinuz: Path
    config: dict[str, str] = field(repr=False)  # thousands of CONFIG_ lines: not in failure messages
    tree: Path  # where its packages are unpacked: lib/modules/<version>/ under it (or under usr/)
    config_file: Path


_NETWORK_WORDS = ("Could not resolve", "Temporary failure resolving", "Failed to fetch", "Could not connect",
                  "Connection failed", "Network is unreachable", "Unable to connect")


def _apt_dir(cache: Path, codename: str) -> Path:
    return cache / ("apt" if codename == CODENAME else f"apt-{codename}")


def _apt_options(cache: Path, codename: str = CODENAME) -> list[str]:
    apt = _apt_dir(cache, codename)
    return [
        f"-oDir::Etc::SourceList={apt / 'sources.list'}", f"-oDir::Etc::SourceParts={apt / 'empty'}",
        "-oDir::Etc::Preferences=/dev/null", f"-oDir::Etc::PreferencesParts={apt / 'empty'}",
        f"-oDir::State={apt / 'state'}", f"-oDir::State::status={apt / 'status'}",
        f"-oDir::Cache={apt / 'cache'}", "-oDebug::NoLocking=1", "-oAPT::Sandbox::User=root",
        "-oAcquire::Retries=3", "-q",
    ]


def _run(argv: list[str], what: str) -> str:
    proc = subprocess.run(argv, check=False, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600,
                          env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"})
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        if any(word in proc.stderr + proc.stdout for word in _NETWORK_WORDS):
            raise PartsUnavailable(f"{what}: the Debian package registry cannot be reached: {tail}")
        raise PartsError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def mmdebstrap(root: Path, log: Path, variant: str, include: Sequence[str], hooks: Sequence[str],
               timeout_s: float, codename: str = CODENAME) -> None:
    """A Debian system built into the directory `root` from the host's own mirrors, with customize hooks.

    Its output goes to `log`; a registry that cannot be reached is PartsUnavailable, any other failure
    PartsError with the log's tail.
    """
    if shutil.which("mmdebstrap") is None:
        raise PartsError("mmdebstrap is not installed (sh .ci/setup installs it)")
    sources = [line for line in host_sources(codename).splitlines() if line.strip()]
    argv = ["mmdebstrap", "--mode=root", f"--variant={variant}", "--format=directory",
            *([f"--include={','.join(include)}"] if include else []),
            *(f"--customize-hook={hook}" for hook in hooks), codename, str(root), *sources]
    with open(log, "w") as out:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout_s, env={**os.environ, "LC_ALL": "C"}, check=False)
    if proc.returncode != 0:
        text = log.read_text(errors="replace")
        tail = " | ".join(text.strip().splitlines()[-6:])
        if any(word in text for word in _NETWORK_WORDS):
            raise PartsUnavailable(f"mmdebstrap: the Debian package registry cannot be reached: {tail}")
        raise PartsError(f"mmdebstrap failed (exit {proc.returncode}, log {log}): {tail}")


LOCAL_CAS = Path("/usr/local/share/ca-certificates")  # where Debian keeps the CAs an admin trusts


def local_ca_hooks() -> list[str]:
    """mmdebstrap hooks for a system on this host's network: it trusts the CAs this host's admin added (a
    proxy's, say) as it uses this host's mirrors; ca-certificates, once installed there, bundles them."""
    if not any(LOCAL_CAS.rglob("*.crt")):
        return []
    return [f'mkdir -p "$1{LOCAL_CAS}"', f"sync-in {LOCAL_CAS} {LOCAL_CAS}"]


@contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One fetch at a time: parallel test runs share the cache."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _update(cache: Path, sources: str | None = None, codename: str = CODENAME) -> None:
    sources = host_sources(codename) if sources is None else sources
    apt = _apt_dir(cache, codename)
    for sub in ("empty", "state/lists/partial", "cache/archives/partial"):
        (apt / sub).mkdir(parents=True, exist_ok=True)
    (apt / "sources.list").write_text(sources)
    (apt / "status").touch()
    stamp = apt / "updated"
    if stamp.exists() and stamp.read_text() == sources:
        return
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise PartsUnavailable("apt-get and dpkg-deb are needed to fetch the guest's Debian packages")
    # without --error-on=any, apt-get update exits 0 when no mirror answers
    _run(["apt-get", *_apt_options(cache, codename), "update", "--error-on=any"],
         f"apt-get update (private source list, {codename})")
    stamp.write_text(sources)


def unpacked(group: Group, cache: Path = CACHE, sources: str | None = None) -> Path:
    """The group's packages unpacked into one tree, fetched on first use and reused after; `sources`: another
    source list than its codename's suites."""
    key = hashlib.sha256(json.dumps([group.packages, group.release, group.unpack]).encode()).hexdigest()[:12]
    tree = cache / "root" / f"{group.name}-{key}"
    done = tree / ".unpacked"
    if done.exists():
        return tree
    with _locked(cache):
        if done.exists():
            return tree
        _update(cache, sources, codename=group.codename)
        debs = cache / "debs" / group.name
        if debs.exists():
            shutil.rmtree(debs)
        (debs / "partial").mkdir(parents=True)
        release = ["-t", group.release] if group.release else []
        _run(["apt-get", *_apt_options(cache, group.codename), f"-oDir::Cache::Archives={debs}", "install", "-y",
              "--download-only", "--no-install-recommends", *release, *group.packages],
             f"apt-get install --download-only {' '.join(group.packages)}")
        if tree.exists():
            shutil.rmtree(tree)
        tree.mkdir(parents=True)
        manifest = []
        for deb in sorted(debs.glob("*.deb")):
            if not deb.name.startswith(group.unpack):
                continue
            _run(["dpkg-deb", "-x", str(deb), str(tree)], f"dpkg-deb -x {deb.name}")
            manifest.append(deb.name)
        if not manifest:
            raise PartsError(f"{group.name}: apt fetched no package starting with {group.unpack!r}")
        (tree / ".manifest").write_text("\n".join(manifest) + "\n")
        shutil.rmtree(debs)
        done.touch()
    return tree


def suite_package(package: str, suite: str, cache: Path = CACHE) -> Path:
    """`package` as Debian's `suite` (a codename, or testing) ships it, unpacked with what it depends on into one
    tree: from that suite alone (testing has no -backports), on the host's own archive."""
    found = apt_sources.mirrors(suite, fallback=apt_sources.own_codename())
    if found is None:
        raise PartsUnavailable(f"no Debian mirror in the host's apt sources ({apt_sources.ETC_APT}) to fetch {suite}")
    sources = f"deb [signed-by={KEYRING}] {found.archive} {suite} main\n"
    return unpacked(Group(f"{package}-{suite}", (package,), codename=suite), cache, sources)


def qemu(cache: Path = CACHE) -> Qemu:
    tree = unpacked(QEMU, cache)
    libs = sorted({str(p.parent) for p in tree.rglob("*.so*") if p.is_file()})
    return Qemu(tree / "usr/bin/qemu-system-x86_64",
                (tree / "usr/share/qemu", tree / "usr/share/seabios", tree / "usr/lib/ipxe/qemu"),
                ":".join(libs))


def kernel(series: str, cache: Path = CACHE) -> Kernel:
    """A kernel package unpacked: /boot/vmlinuz-<version> up to Linux 6.x, /usr/lib/modules/<version>/vmlinuz
    (and its config beside it) in Debian's packages of 7.x."""
    tree = unpacked(KERNELS[series], cache)
    boot = sorted((tree / "boot").glob("vmlinuz-*"))
    images = [(i, i.name.removeprefix("vmlinuz-"), i.with_name(f"config-{i.name.removeprefix('vmlinuz-')}"))
              for i in boot] or [(i, i.parent.name, i.with_name("config"))
                                 for i in sorted(tree.glob("usr/lib/modules/*/vmlinuz"))]
    if len(images) != 1:
        raise PartsError(f"linux {series}: expected one vmlinuz in {tree / 'boot'} or {tree / 'usr/lib/modules/*'}, "
                         f"found {len(images)}")
    vmlinuz, version, config_file = images[0]
    config = {}
    for line in config_file.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("CONFIG_"):
            config[name] = value
    return Kernel(version, vmlinuz, config, tree, config_file)


def guest(cache: Path = CACHE) -> Path:
    """busybox, kexec-tools, Python 3.11, libudev/libsystemd, and date and flock for the benchmark, unpacked."""
    return unpacked(GUEST, cache)
