# SPDX-License-Identifier: GPL-2.0-only
"""The kdump initramfs check: where the initrd is (boot parameters), when a host needs virtio_mem (sysfs), and
what is said when the loaded image cannot be read and the distribution's file stands in for it."""

import gzip
import struct

from faketree import write

from crashhpd.sysview.boot_params import BOOT_PARAMS_SIZE
from crashhpd.sysview.kdump_initrd import InitrdCheck, KdumpInitrd
from crashhpd.sysview.loaded_header import LoadedHeader
from crashhpd.sysview.ramdisk import EXT_RAMDISK_IMAGE, RAMDISK_IMAGE, RAMDISK_SIZE, Ramdisk, ramdisk
from crashhpd.sysview.virtio_mem import count_devices
from tests.e2e.initramfs import write_cpio

RELEASE = "6.1.0-57-cloud-amd64"


def params(image: int, size: int) -> bytes:
    data = bytearray(BOOT_PARAMS_SIZE)
    data[0x1FE] = 0x55
    data[0x202:0x206] = b"HdrS"
    struct.pack_into("<I", data, RAMDISK_IMAGE, image & 0xFFFFFFFF)
    struct.pack_into("<I", data, EXT_RAMDISK_IMAGE, image >> 32)
    struct.pack_into("<I", data, RAMDISK_SIZE, size)
    return bytes(data)


def test_the_initrd_is_where_the_boot_parameters_say_inside_a_segment():
    segments = [(0x2E000000, 0x1000000), (0x2F000000, 0x3000), (0x2F003000, 0x900000)]
    heads = [(0, b"\0" * 64), (1, params(0x2F003000, 0x8F1234)), (2, b"\x1f\x8b")]
    assert ramdisk(heads, segments) == Ramdisk((0x2F003000, 0x8F1234))


def test_an_initrd_above_4_gib_takes_the_high_half_from_ext_ramdisk_image():
    assert ramdisk([(0, params(0x1_2F003000, 0x1000))], [(0x1_2F003000, 0x2000)]).span == (0x1_2F003000, 0x1000)


def test_no_initrd_and_an_initrd_outside_the_image_are_reasons():
    assert ramdisk([(0, params(0, 0))], [(0, 0x1000)]).reason == \
        "the crash kernel was loaded without an initrd (ramdisk_size is 0)"
    assert "lies in none of the crash image's 1 segments" in str(ramdisk([(0, params(0x5000, 0x2000))],
                                                                         [(0x4000, 0x2000)]).reason)
    assert "holds x86 boot parameters" in str(ramdisk([(0, b"\0" * 4096)], [(0, 0x1000)]).reason)


def virtio_mem_pci(root, slot: str, device: str = "0x1058") -> None:
    write(root, f"sys/bus/pci/devices/{slot}/vendor", "0x1af4\n")
    write(root, f"sys/bus/pci/devices/{slot}/device", f"{device}\n")


def test_virtio_mem_devices_are_counted_on_the_pci_bus_before_any_driver_binds(tmp_path):
    assert count_devices(str(tmp_path)) == 0
    virtio_mem_pci(tmp_path, "0000:00:04.0")
    virtio_mem_pci(tmp_path, "0000:00:05.0", device="0x1042")  # virtio-blk (modern): not counted
    write(tmp_path, "sys/bus/pci/devices/0000:00:06.0/vendor", "junk\n")
    assert count_devices(str(tmp_path)) == 1
    write(tmp_path, "sys/bus/virtio/devices/virtio0/device", "0x0018\n")
    write(tmp_path, "sys/bus/virtio/devices/virtio1/device", "0x0018\n")
    assert count_devices(str(tmp_path)) == 2  # two on the virtio bus (virtio-mmio): the larger count


def archive(tmp_path, modules: tuple[str, ...], builtin: str = "") -> bytes:
    tree = tmp_path / "tree"
    for name in modules:
        write(tree, f"usr/lib/modules/{RELEASE}/kernel/drivers/virtio/{name}.ko", "\x7fELF")
    write(tree, f"usr/lib/modules/{RELEASE}/modules.builtin", builtin)
    write_cpio(tmp_path / "a.cpio", tree)
    return gzip.compress((tmp_path / "a.cpio").read_bytes())


UNREAD = LoadedHeader(readable=False, reason="no /sys/kernel/btf/vmlinux: the kernel's header cannot be located")


def test_without_a_virtio_mem_device_nothing_is_read(tmp_path):
    assert KdumpInitrd(str(tmp_path)).check(UNREAD, 0) == InitrdCheck()


def test_kdump_tools_file_stands_in_and_the_result_says_so(tmp_path):
    write(tmp_path, "proc/sys/kernel/osrelease", f"{RELEASE}\n")
    (tmp_path / "var/lib/kdump").mkdir(parents=True)
    (tmp_path / f"var/lib/kdump/initrd.img-{RELEASE}").write_bytes(archive(tmp_path, ("virtio_pci",)))
    found = KdumpInitrd(str(tmp_path)).check(UNREAD, 1)
    assert (found.needed, found.missing, found.ok) == (("virtio_mem",), ("virtio_mem",), False)
    assert found.source == (f"{tmp_path}/var/lib/kdump/initrd.img-{RELEASE} (the loaded image's initrd could not "
                            f"be read: {UNREAD.reason})")


def test_a_module_present_or_built_in_is_not_missing(tmp_path):
    write(tmp_path, "proc/sys/kernel/osrelease", f"{RELEASE}\n")
    path = tmp_path / f"var/lib/kdump/initrd.img-{RELEASE}"
    path.parent.mkdir(parents=True)
    path.write_bytes(archive(tmp_path, ("virtio_mem",)))
    assert KdumpInitrd(str(tmp_path)).check(UNREAD, 1).ok is True
    path.write_bytes(archive(tmp_path, (), builtin="kernel/drivers/virtio/virtio_mem.ko\n"))
    assert KdumpInitrd(str(tmp_path)).check(UNREAD, 1).ok is True
    path.write_bytes(archive(tmp_path, ()))  # built in per this host's own modules.builtin for that release
    write(tmp_path, f"lib/modules/{RELEASE}/modules.builtin", "kernel/drivers/virtio/virtio_mem.ko\n")
    assert KdumpInitrd(str(tmp_path)).check(UNREAD, 1).ok is True


def test_no_image_and_no_file_is_unknown_with_both_reasons(tmp_path):
    write(tmp_path, "proc/sys/kernel/osrelease", f"{RELEASE}\n")
    found = KdumpInitrd(str(tmp_path)).check(UNREAD, 1)
    assert (found.ok, found.missing) == (None, ())
    assert found.reason == (f"the loaded crash image's initrd could not be read ({UNREAD.reason}) and no "
                            f"distribution's kdump initrd is there ({tmp_path}/var/lib/kdump/initrd.img-{RELEASE}, "
                            f"{tmp_path}/boot/initramfs-{RELEASE}kdump.img)")


def test_a_corrupt_file_is_unknown_with_its_one_line(tmp_path):
    write(tmp_path, "proc/sys/kernel/osrelease", f"{RELEASE}\n")
    path = tmp_path / f"var/lib/kdump/initrd.img-{RELEASE}"
    path.parent.mkdir(parents=True)
    path.write_bytes(archive(tmp_path, ("virtio_mem",))[:-40])
    found = KdumpInitrd(str(tmp_path)).check(UNREAD, 1)
    assert (found.ok, found.reason) == (None, "the gzip stream ends early")
