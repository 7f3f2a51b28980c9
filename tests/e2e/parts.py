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
6.12 one from bookworm-backports has it.
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
from dataclasses import dataclass
from pathlib import Path

from . import apt_sources

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("CRASHHPD_E2E_CACHE", REPO / ".cache" / "e2e"))
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
CODENAME = "bookworm"  # the guest is Debian 12, whatever the host runs


@dataclass(frozen=True, slots=True)
class Group:
    """Packages fetched and unpacked together into one tree."""

    name: str
    packages: tuple[str, ...]
    release: str | None = None  # apt's -t: which suite wins over the default candidate
    unpack: str = ""  # only .deb files whose name starts with this are unpacked ("" = all)


QEMU = Group("qemu", ("qemu-system-x86",), release="bookworm-backports")
GUEST = Group("guest", ("busybox-static", "kexec-tools", "libc-bin", "python3.11-minimal",
                        "libpython3.11-stdlib", "libudev1", "libsystemd0", "coreutils", "util-linux"))
KERNELS = {
    "6.1": Group("linux-6.1", ("linux-image-cloud-amd64",), unpack="linux-image-"),
    "6.12": Group("linux-6.12", ("linux-image-cloud-amd64",), release="bookworm-backports",
                  unpack="linux-image-"),
}


class PartsUnavailable(Exception):
    """The package registries cannot be reached: the only reason the e2e tests may skip."""


class PartsError(Exception):
    """apt or dpkg-deb failed for a reason other than the network."""


def source_list(found: apt_sources.Mirrors | None) -> str:
    """The private source list for the host's mirrors; PartsUnavailable when the host has none."""
    if found is None:
        raise PartsUnavailable(f"no Debian mirror serving {CODENAME} (main) in the host's apt sources "
                               f"({apt_sources.ETC_APT}/sources.list, {apt_sources.ETC_APT}/sources.list.d/)")
    suites = [(found.archive, CODENAME), (found.archive, f"{CODENAME}-updates"),
              (found.archive, f"{CODENAME}-backports")]
    if found.security is not None:
        suites.insert(2, (found.security, f"{CODENAME}-security"))
    return "".join(f"deb [signed-by={KEYRING}] {uri} {suite} main\n" for uri, suite in suites)


@functools.cache
def host_sources() -> str:
    return source_list(apt_sources.mirrors(CODENAME))


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
    config: dict[str, str]


_NETWORK_WORDS = ("Could not resolve", "Temporary failure resolving", "Failed to fetch", "Could not connect",
                  "Connection failed", "Network is unreachable", "Unable to connect")


def _apt_options(cache: Path) -> list[str]:
    apt = cache / "apt"
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
               timeout_s: float) -> None:
    """A Debian system built into the directory `root` from the host's own mirrors, with customize hooks.

    Its output goes to `log`; a registry that cannot be reached is PartsUnavailable, any other failure
    PartsError with the log's tail.
    """
    if shutil.which("mmdebstrap") is None:
        raise PartsError("mmdebstrap is not installed (sh .ci/setup installs it)")
    sources = [line for line in host_sources().splitlines() if line.strip()]
    argv = ["mmdebstrap", "--mode=root", f"--variant={variant}", "--format=directory",
            *([f"--include={','.join(include)}"] if include else []),
            *(f"--customize-hook={hook}" for hook in hooks), CODENAME, str(root), *sources]
    with open(log, "w") as out:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                              timeout=timeout_s, env={**os.environ, "LC_ALL": "C"}, check=False)
    if proc.returncode != 0:
        text = log.read_text(errors="replace")
        tail = " | ".join(text.strip().splitlines()[-6:])
        if any(word in text for word in _NETWORK_WORDS):
            raise PartsUnavailable(f"mmdebstrap: the Debian package registry cannot be reached: {tail}")
        raise PartsError(f"mmdebstrap failed (exit {proc.returncode}, log {log}): {tail}")


@contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One fetch at a time: parallel test runs share the cache."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _update(cache: Path, sources: str | None = None) -> None:
    sources = host_sources() if sources is None else sources
    apt = cache / "apt"
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
    _run(["apt-get", *_apt_options(cache), "update", "--error-on=any"], "apt-get update (private source list)")
    stamp.write_text(sources)


def unpacked(group: Group, cache: Path = CACHE) -> Path:
    """The group's packages unpacked into one tree, fetched on first use and reused after."""
    key = hashlib.sha256(json.dumps([group.packages, group.release, group.unpack]).encode()).hexdigest()[:12]
    tree = cache / "root" / f"{group.name}-{key}"
    done = tree / ".unpacked"
    if done.exists():
        return tree
    with _locked(cache):
        if done.exists():
            return tree
        _update(cache)
        debs = cache / "debs" / group.name
        if debs.exists():
            shutil.rmtree(debs)
        (debs / "partial").mkdir(parents=True)
        release = ["-t", group.release] if group.release else []
        _run(["apt-get", *_apt_options(cache), f"-oDir::Cache::Archives={debs}", "install", "-y",
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


def qemu(cache: Path = CACHE) -> Qemu:
    tree = unpacked(QEMU, cache)
    libs = sorted({str(p.parent) for p in tree.rglob("*.so*") if p.is_file()})
    return Qemu(tree / "usr/bin/qemu-system-x86_64",
                (tree / "usr/share/qemu", tree / "usr/share/seabios", tree / "usr/lib/ipxe/qemu"),
                ":".join(libs))


def kernel(series: str, cache: Path = CACHE) -> Kernel:
    tree = unpacked(KERNELS[series], cache)
    images = sorted((tree / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        raise PartsError(f"linux {series}: expected one vmlinuz in {tree / 'boot'}, found {len(images)}")
    version = images[0].name.removeprefix("vmlinuz-")
    config = {}
    for line in (tree / "boot" / f"config-{version}").read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("CONFIG_"):
            config[name] = value
    return Kernel(version, images[0], config)


def guest(cache: Path = CACHE) -> Path:
    """busybox, kexec-tools, Python 3.11, libudev/libsystemd, and date and flock for the benchmark, unpacked."""
    return unpacked(GUEST, cache)
