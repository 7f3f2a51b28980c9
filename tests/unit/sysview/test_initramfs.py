# SPDX-License-Identifier: GPL-2.0-only
"""The initramfs lister on archives made by the tools the kernel's own users run (cpio as the e2e suite and
the kernel write it, gzip, xz, zstd, lz4 -l), concatenated as early microcode and a main archive are, and on
hostile bytes: each refused with one line, within bounded memory. Images built by mkinitramfs itself are
read in tests/e2e/test_initramfs_tools.py."""

import gzip
import lzma
import shutil
import subprocess
from pathlib import Path

import pytest

from crashhpd.sysview.initramfs import MAX_NAME, list_initramfs
from crashhpd.sysview.initrd_tools import InitrdError
from tests.e2e.initramfs import write_cpio

RELEASE = "6.1.0-57-cloud-amd64"


def chunks(data: bytes, size: int = 4096):
    return (data[i:i + size] for i in range(0, len(data), size))


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> bytes:
    tree = tmp_path_factory.mktemp("tree")
    virtio = tree / f"usr/lib/modules/{RELEASE}/kernel/drivers/virtio"
    virtio.mkdir(parents=True)
    (virtio / "virtio_mem.ko").write_bytes(bytes(range(256)) * 1200)  # not a multiple of 4: padding is read
    (virtio / "virtio-pci-legacy-dev.ko.xz").write_bytes(b"x" * 3)
    (tree / f"usr/lib/modules/{RELEASE}/modules.builtin").write_text("kernel/drivers/block/virtio_blk.ko\n")
    (tree / "init").write_text("#!/bin/sh\n")
    out = tree.parent / "plain.cpio"
    write_cpio(out, tree)
    return out.read_bytes()


def newc(namesize: int, filesize: int = 0) -> bytes:
    """A newc header of a regular file: the 13 fields in hex after the magic."""
    return b"070701" + b"".join(f"{v:08X}".encode() for v in (1, 0o100644, 0, 0, 1, 0, filesize, 0, 0, 0, 0,
                                                               namesize, 0))


def tool(argv: list[str], data: bytes) -> bytes:
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    return subprocess.run(argv, input=data, capture_output=True, check=True).stdout


COMPRESSORS = {
    "cpio": lambda d: d,
    "gzip": gzip.compress,
    "xz": lambda d: lzma.compress(d, check=lzma.CHECK_CRC32),  # the kernel's xz: CRC32 (scripts/xz_wrap.sh)
    "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
    "zstd": lambda d: tool(["zstd", "-q", "-c", "-19"], d),
    "lz4": lambda d: tool(["lz4", "-q", "-l", "-c"], d),
}


@pytest.mark.parametrize("kind", COMPRESSORS)
def test_each_format_lists_the_modules_the_builtin_names_and_the_release(plain, kind):
    listing = list_initramfs(chunks(COMPRESSORS[kind](plain)), 1 << 30)
    assert listing.modules == {"virtio_mem", "virtio_pci_legacy_dev"}
    assert listing.builtin == {"virtio_blk"}
    assert listing.versions == {RELEASE}
    assert listing.formats == [kind]


@pytest.mark.parametrize("kind", ["gzip", "xz", "zstd", "lz4"])
def test_an_early_plain_archive_then_a_compressed_one_with_padding_between_and_after(plain, kind):
    early = plain.replace(b"virtio_mem.ko\0", b"virtio_mex.ko\0")  # same lengths: still a valid archive
    data = early + b"\0" * 512 + COMPRESSORS[kind](plain) + b"\0" * 12
    listing = list_initramfs(chunks(data, 1000), 1 << 30)
    assert listing.formats == ["cpio", kind]
    assert {"virtio_mem", "virtio_mex"} <= listing.modules


def test_two_compressed_streams_one_after_the_other(plain):
    data = gzip.compress(plain) + COMPRESSORS["xz"](plain.replace(b"virtio_mem.ko\0", b"virtio_mey.ko\0"))
    listing = list_initramfs(chunks(data), 1 << 30)
    assert listing.formats == ["gzip", "xz"] and {"virtio_mem", "virtio_mey"} <= listing.modules


def test_without_the_module_it_is_not_listed(plain):
    listing = list_initramfs(chunks(gzip.compress(plain.replace(b"virtio_mem.ko\0", b"virtio_me.txt\0"))),
                             1 << 30)
    assert "virtio_mem" not in listing.modules


@pytest.mark.parametrize(("make", "reason"), [
    (lambda p: gzip.compress(p)[:-64], "the gzip stream ends early"),
    (lambda p: b"\x1f\x8b" + b"\xff" * 64, "the gzip stream is corrupt"),
    (lambda p: b"MZ\x90\x00 not an initrd", "start no cpio archive and no compressed stream"),
    (lambda p: b"070701" + b"Z" * 104, "a cpio header holds a field that is not hex"),
    (lambda p: p[:200], "the archive ends inside"),
    (lambda p: newc(namesize=MAX_NAME + 1) + b"x" * 5000, "a cpio member's name is 4097 bytes"),
    (lambda p: gzip.compress(p + b"junk that is no archive"), "inside a compressed stream start no cpio archive"),
    (lambda p: COMPRESSORS["zstd"](p)[:-9], "the archive ends inside a zstd block"),
])
def test_hostile_bytes_give_one_line(plain, make, reason):
    with pytest.raises(InitrdError, match=reason) as err:
        list_initramfs(chunks(make(plain)), 1 << 30)
    assert "\n" not in str(err.value)


def test_a_stream_that_expands_without_end_stops_at_the_limit(monkeypatch):
    """A gzip bomb (1 GiB of zeros is ~1 MiB compressed) inside a cpio member is walked, never held; past the
    limit it stops with a reason."""
    import crashhpd.sysview.initramfs as module
    monkeypatch.setattr(module, "MAX_UNPACKED", 64 << 20)
    member = newc(namesize=2, filesize=1 << 30)
    bomb = gzip.compress(member + b"a\0" + b"\0" * (1 << 27), compresslevel=1)
    with pytest.raises(InitrdError, match="the gzip stream goes on past 64 MiB"):
        list_initramfs(chunks(bomb, 1 << 20), 1 << 30)


def test_the_initrd_itself_is_read_no_further_than_its_limit(plain):
    with pytest.raises(InitrdError, match="the initrd goes on past 1000 B"):
        list_initramfs(chunks(plain, 500), 1000)


def test_nothing_but_padding_is_an_empty_listing():
    listing = list_initramfs(chunks(b"\0" * (1 << 20), 1 << 16), 1 << 30)
    assert (listing.formats, listing.modules, listing.members) == ([], set(), 0)


def test_a_missing_tool_is_the_reason(plain, monkeypatch):
    data = COMPRESSORS["zstd"](plain)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(InitrdError, match="zstd is not installed: a zstd-compressed initramfs cannot be read"):
        list_initramfs(chunks(data), 1 << 30)


def test_the_kernels_module_name_rule(tmp_path: Path):
    from crashhpd.sysview.initramfs import module_name
    assert module_name("usr/lib/modules/6.1/kernel/drivers/virtio/virtio-mem.ko.zst") == "virtio_mem"
    assert module_name("kernel/drivers/virtio/virtio_mem.ko") == "virtio_mem"
