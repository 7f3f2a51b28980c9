# SPDX-License-Identifier: GPL-2.0-only
"""virtio-mem devices on this host, as sysfs lists them: whether the kdump kernel needs virtio_mem.

A virtio-mem device's RAM is "System RAM (virtio_mem)" in /proc/iomem, added in whole memory blocks
of which only some sub-blocks may be plugged. The kdump kernel's virtio_mem driver (kdump mode,
Linux commit ffc763d0c334, "virtio-mem: kdump mode to sanitize /proc/vmcore access", v5.16) tells
/proc/vmcore which of them are unplugged; with VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE reading them is
forbidden, so a kdump initramfs without the module cannot save such a guest correctly. The device
is counted on the PCI bus (QEMU's virtio-mem-pci: vendor 0x1af4, device 0x1040 + VIRTIO_ID_MEM),
present before any virtio driver binds, and on the virtio bus for other transports.
"""

import os

from ..errors import SnapshotError
from .files import read_text, under

PCI_DEVICES = "sys/bus/pci/devices"
VIRTIO_DEVICES = "sys/bus/virtio/devices"
VIRTIO_ID_MEM = 24  # include/uapi/linux/virtio_ids.h
PCI_VENDOR_VIRTIO = 0x1AF4  # include/linux/pci_ids.h: PCI_VENDOR_ID_REDHAT_QUMRANET
PCI_DEVICE_MODERN_BASE = 0x1040  # virtio 1.0's PCI device IDs: 0x1040 + the virtio device ID
MODULE = "virtio_mem"


def _ids(root: str, directory: str, names: tuple[str, ...]) -> list[tuple[int, ...]]:
    """For each device under `directory`, the hex values of its `names` files (devices missing one left out)."""
    path = under(root, directory)
    try:
        entries = sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as err:
        raise SnapshotError(f"{path}: {err.strerror}") from None
    found = []
    for entry in entries:
        texts = [read_text(root, f"{directory}/{entry}/{name}") for name in names]
        try:
            found.append(tuple(int(text.strip(), 16) for text in texts if text is not None))
        except ValueError:
            continue  # not an ID sysfs would write: not a device this counts
    return found


def count_devices(root: str) -> int:
    """virtio-mem devices: on the PCI bus, else on the virtio bus (virtio-mmio), whichever sees more."""
    pci = sum(ids == (PCI_VENDOR_VIRTIO, PCI_DEVICE_MODERN_BASE + VIRTIO_ID_MEM)
              for ids in _ids(root, PCI_DEVICES, ("vendor", "device")))
    virtio = sum(ids == (VIRTIO_ID_MEM,) for ids in _ids(root, VIRTIO_DEVICES, ("device",)))
    return max(pci, virtio)
