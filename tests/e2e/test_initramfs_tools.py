# SPDX-License-Identifier: GPL-2.0-only
"""crashhpd's initramfs lister against images Debian's own mkinitramfs builds, and against lsinitramfs's listing.

A Debian 12 chroot (mmdebstrap, the host's mirrors) with linux-image-cloud-amd64 and initramfs-tools builds
its kernel's initramfs with every compression mkinitramfs offers (-c gzip, xz, lz4, zstd: zstd is Debian 12's
default), once with /etc/initramfs-tools/modules naming virtio_mem; an early archive made with cpio ahead of
the zstd one stands for early microcode. lsinitramfs (initramfs-tools' own lister, unmkinitramfs underneath)
lists each, and the module names crashhpd finds must be exactly the .ko files it lists. The images are built
once and cached like the other parts; no guest boots here.
"""

import hashlib
import shutil
import tempfile
from pathlib import Path

import pytest

from crashhpd.sysview.initramfs import Listing, list_initramfs, module_name

from . import parts

PACKAGES = ("linux-image-cloud-amd64", "initramfs-tools", "zstd", "lz4", "xz-utils", "cpio")
FORMATS = ("gzip", "xz", "lz4", "zstd")
HOOK = """set -eu
release=$(ls /lib/modules)
mkdir -p /out
for c in gzip xz lz4 zstd; do mkinitramfs -c $c -o /out/$c.img "$release"; done
cp /etc/initramfs-tools/modules /tmp/modules.orig
echo virtio_mem >> /etc/initramfs-tools/modules
mkinitramfs -c zstd -o /out/virtio_mem.img "$release"
cp /tmp/modules.orig /etc/initramfs-tools/modules
mkdir -p /tmp/early/kernel/x86/microcode && echo stand-in > /tmp/early/kernel/x86/microcode/GenuineIntel.bin
(cd /tmp/early && find . | cpio -o -H newc --quiet) > /out/early.cpio
cat /out/early.cpio /out/zstd.img > /out/early+zstd.img
for image in /out/*.img; do lsinitramfs "$image" > "$image.list"; done
echo "$release" > /out/release
"""


@pytest.fixture(scope="module")
def images() -> Path:
    """The directory of images and their lsinitramfs listings, built on first use."""
    key = hashlib.sha256((HOOK + repr(PACKAGES)).encode()).hexdigest()[:12]
    out = parts.CACHE / "initramfs-tools" / key
    if (out / "release").exists():
        return out
    try:
        with parts._locked(parts.CACHE):
            if not (out / "release").exists():
                out.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=out.parent, prefix=".build-") as work:
                    hook = Path(work) / "hook.sh"
                    hook.write_text(HOOK)
                    partial = Path(work) / "out"
                    parts.mmdebstrap(Path(work) / "root", Path(work) / "mmdebstrap.log", "minbase", PACKAGES,
                                     [f"upload {hook} /tmp/hook.sh", 'chroot "$1" sh /tmp/hook.sh',
                                      f"copy-out /out {partial}"], 900)
                    shutil.move(partial / "out", out)
    except parts.PartsUnavailable as err:
        pytest.skip(str(err))
    return out


def listed(image: Path) -> Listing:
    with open(image, "rb") as f:
        return list_initramfs(iter(lambda: f.read(1 << 20), b""), 1 << 30)


def lsinitramfs_modules(image: Path) -> set[str]:
    return {module_name(line) for line in image.with_name(image.name + ".list").read_text().splitlines()
            if ".ko" in line.rsplit("/", 1)[-1] and "/modules/" in line}


@pytest.mark.parametrize("kind", FORMATS)
def test_each_compression_lists_what_lsinitramfs_lists(images: Path, kind: str) -> None:
    found = listed(images / f"{kind}.img")
    release = (images / "release").read_text().strip()
    assert found.formats == [kind]
    assert found.versions == {release}
    assert found.modules == lsinitramfs_modules(images / f"{kind}.img") and len(found.modules) > 10
    assert "virtio_pci" in found.modules | found.builtin  # initramfs-tools' base set


def test_virtio_mem_named_in_etc_initramfs_tools_modules_is_found_and_otherwise_not(images: Path) -> None:
    assert "virtio_mem" in listed(images / "virtio_mem.img").modules
    assert "virtio_mem" in lsinitramfs_modules(images / "virtio_mem.img")
    default = listed(images / "zstd.img")
    assert ("virtio_mem" in default.modules) == ("virtio_mem" in lsinitramfs_modules(images / "zstd.img"))


def test_an_early_archive_ahead_of_the_main_one(images: Path) -> None:
    found = listed(images / "early+zstd.img")
    assert found.formats == ["cpio", "zstd"]
    assert found.modules == listed(images / "zstd.img").modules == lsinitramfs_modules(images / "early+zstd.img")
