# SPDX-License-Identifier: GPL-2.0-only
"""The modules this host's devices need in the kdump kernel, and which of them its initramfs lacks.

Read from the initrd that is loaded: its segment of the crash image (ramdisk.py names it), through
/proc/kcore, is what the kdump kernel will unpack. Where the image cannot be read, the file the
distribution's tool builds stands in for it (kdump-tools' /var/lib/kdump/initrd.img-<release>,
kdump-utils' /boot/initramfs-<release>kdump.img), and the result says which was read. A module
counts as present when the initramfs holds it or modules.builtin (the initramfs's, else this
host's for the same release) says the kernel has it built in. The verdict is kept while the same
initrd stays loaded: its place and its first and last 64 KiB must match for the listing to be reused.
"""

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from .files import NotRegularFile, open_regular, read_text, under
from .initramfs import CHUNK, Listing, list_initramfs, module_name
from .initrd_tools import InitrdError
from .kcore import Kcore, KcoreError
from .loaded_header import LoadedHeader
from .virtio_mem import MODULE as VIRTIO_MEM

MAX_INITRD = 1 << 30  # bytes: no kdump initrd is near it, and a crash kernel reservation holds less
PROBE = 64 << 10  # bytes at each end of the initrd that identify it between two updates
OSRELEASE = "proc/sys/kernel/osrelease"
# where each distribution's kdump tool writes the initrd it loads, by kernel release
DISTRIBUTION_FILES = ("var/lib/kdump/initrd.img-{release}", "boot/initramfs-{release}kdump.img")
BUILTIN_FILES = ("lib/modules/{release}/modules.builtin", "usr/lib/modules/{release}/modules.builtin")


@dataclass(frozen=True, slots=True)
class InitrdCheck:
    """What the kdump initramfs lacks of what this host needs; `reason` says why it is unknown."""

    needed: tuple[str, ...] = ()  # modules the host's devices need in the kdump kernel
    missing: tuple[str, ...] = ()  # of those, neither in the initramfs nor built into the kernel
    source: str | None = None  # what was read: the loaded image's initrd segment, or a file
    reason: str | None = None

    @property
    def ok(self) -> bool | None:
        """True: nothing needed is missing; False: something is; None: needed, but not known."""
        if self.missing:
            return False
        return None if self.reason is not None else True


def lacking(listing: Listing, needed: tuple[str, ...], builtin_elsewhere: frozenset[str]) -> tuple[str, ...]:
    """The needed modules the initramfs neither holds nor lists (or the host lists) as built in."""
    present = listing.modules | listing.builtin | builtin_elsewhere
    return tuple(name for name in needed if name not in present)


class KdumpInitrd:
    """Reads the kdump initramfs under `root` when a host device needs a module there; keep one per daemon."""

    def __init__(self, root: str = "/") -> None:
        self.root = root
        self._kept: tuple[object, Listing | str] | None = None  # (what identifies the initrd, its listing or why)

    def check(self, loaded: LoadedHeader | None, virtio_mem_devices: int) -> InitrdCheck:
        needed = (VIRTIO_MEM,) if virtio_mem_devices else ()
        if not needed:
            return InitrdCheck()
        segment = loaded.initrd.span if loaded is not None and loaded.readable else None
        if segment is not None and loaded is not None and loaded.page_offset is not None:
            source = f"the loaded crash image's initrd segment (0x{segment[0]:x}, {segment[1]} bytes)"
            found = self._from_segment(segment, loaded.page_offset)
        else:
            why = (loaded.initrd.reason if loaded.readable else loaded.reason) if loaded is not None else None
            source, found = self._from_file(why or "the crash image was not read")
        if isinstance(found, str):
            return InitrdCheck(needed, (), source, found)
        return InitrdCheck(needed, lacking(found, needed, self._builtin(found)), source)

    # --- where the bytes come from ---------------------------------------------------------------

    def _listing(self, identity: object, chunks: Iterator[bytes], size: int) -> Listing | str:
        if self._kept is not None and self._kept[0] == identity:
            return self._kept[1]
        try:
            found: Listing | str = list_initramfs(chunks, size)
        except InitrdError as err:
            found = str(err)
        self._kept = (identity, found)
        return found

    def _from_segment(self, segment: tuple[int, int], page_offset: int) -> Listing | str:
        address, size = segment
        if size > MAX_INITRD:
            return f"the loaded initrd is {size} bytes, more than any kdump initrd ({MAX_INITRD})"
        try:
            with Kcore(self.root) as kcore:
                base = page_offset + address
                ends = kcore.read(base, min(PROBE, size), "the initrd") + \
                    kcore.read(base + max(0, size - PROBE), min(PROBE, size), "the initrd")
                identity = ("segment", address, size, hashlib.sha256(ends).digest())
                return self._listing(identity, _kcore_chunks(kcore, base, size), size)
        except KcoreError as err:
            return f"the loaded initrd cannot be read: {err}"

    def _from_file(self, why: str) -> tuple[str, Listing | str]:
        release = (read_text(self.root, OSRELEASE) or "").strip()
        paths = [under(self.root, rel.format(release=release)) for rel in DISTRIBUTION_FILES] if release else []
        for path in paths:
            try:
                fd = open_regular(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except (NotRegularFile, OSError) as err:
                return path, f"{path}: {getattr(err, 'strerror', None) or 'not a regular file'}"
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(fd)
                identity = ("file", path, st.st_ino, st.st_size, st.st_mtime_ns)
                return (f"{path} (the loaded image's initrd could not be read: {why})",
                        self._listing(identity, iter(lambda: f.read(CHUNK), b""), MAX_INITRD))
        return "nothing", (f"the loaded crash image's initrd could not be read ({why}) and no distribution's kdump "
                           f"initrd is there ({', '.join(paths) or 'the kernel release is unknown'})")

    def _builtin(self, listing: Listing) -> frozenset[str]:
        """What this host's modules.builtin lists for the releases the initramfs names (else the running one)."""
        releases = listing.versions or {(read_text(self.root, OSRELEASE) or "").strip()}
        names: set[str] = set()
        for release in filter(None, releases):
            for rel in BUILTIN_FILES:
                text = read_text(self.root, rel.format(release=release))
                if text is not None:
                    names.update(module_name(line.strip()) for line in text.splitlines() if line.strip())
        return frozenset(names)


def _kcore_chunks(kcore: Kcore, base: int, size: int) -> Iterator[bytes]:
    """The initrd, a chunk at a time: never more than CHUNK of it in memory from this end."""
    for at in range(0, size, CHUNK):
        yield kcore.read(base + at, min(CHUNK, size - at), "the initrd")
