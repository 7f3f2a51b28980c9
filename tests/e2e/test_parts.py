# SPDX-License-Identifier: GPL-2.0-only
"""The e2e plumbing on its own: the skip reason for an unreachable registry, and the archives' contents."""

import gzip
import subprocess
from pathlib import Path

import pytest

from . import apt_sources, initramfs, parts

DEB822 = """\
Types: deb deb-src
# a comment
URIs: http://127.0.0.1:9/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://127.0.0.1:9/debian-security/
Suites: bookworm-security
Components: main

Types: deb
Enabled: no
URIs: http://127.0.0.1:10/debian
Suites: bookworm
Components: main
"""


def test_an_unreachable_registry_is_a_skip_reason_not_an_error(tmp_path: Path) -> None:
    dead_mirror = f"deb [signed-by={parts.KEYRING}] http://127.0.0.1:9/debian bookworm main\n"
    with pytest.raises(parts.PartsUnavailable, match="cannot be reached"):
        parts._update(tmp_path, dead_mirror)
    assert not (tmp_path / "apt/updated").exists()  # the next run tries again


def test_the_mirrors_come_from_the_hosts_deb822_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d/other.list").write_text("deb https://127.0.0.1:11/apt stable main\n")
    found = apt_sources.mirrors("bookworm", tmp_path)
    assert found == apt_sources.Mirrors("http://127.0.0.1:9/debian", "http://127.0.0.1:9/debian-security")
    assert parts.source_list(found).splitlines() == [
        f"deb [signed-by={parts.KEYRING}] http://127.0.0.1:9/debian bookworm main",
        f"deb [signed-by={parts.KEYRING}] http://127.0.0.1:9/debian bookworm-updates main",
        f"deb [signed-by={parts.KEYRING}] http://127.0.0.1:9/debian-security bookworm-security main",
        f"deb [signed-by={parts.KEYRING}] http://127.0.0.1:9/debian bookworm-backports main",
    ]


def test_another_release_comes_from_the_mirror_of_the_hosts_own(tmp_path: Path) -> None:
    """The Debian 13 guest on a Debian 12 host: no entry names trixie, the host's own mirror serves it."""
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(DEB822)
    (tmp_path / "os-release").write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\n')
    own = apt_sources.own_codename(tmp_path / "os-release")
    assert own == "bookworm"
    assert apt_sources.mirrors("trixie", tmp_path) is None  # without the host's own release, nothing serves it
    found = apt_sources.mirrors("trixie", tmp_path, fallback=own)
    assert parts.source_list(found, "trixie").splitlines() == [
        f"deb [signed-by={parts.KEYRING}] http://127.0.0.1:9/debian trixie main",
        f"deb [signed-by={parts.KEYRING}] http://127.0.0.1:9/debian trixie-updates main",
        f"deb [signed-by={parts.KEYRING}] http://127.0.0.1:9/debian-security trixie-security main",
        f"deb [signed-by={parts.KEYRING}] http://127.0.0.1:9/debian trixie-backports main",
    ]
    assert apt_sources.own_codename(tmp_path / "no-such-file") is None


def test_the_mirrors_come_from_the_hosts_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text(
        "# deb http://127.0.0.1:12/debian bookworm main\n"
        "deb-src http://127.0.0.1:13/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://127.0.0.1:14/debian/ bookworm main non-free-firmware\n")
    assert apt_sources.mirrors("bookworm", tmp_path) == apt_sources.Mirrors("http://127.0.0.1:14/debian", None)


def test_a_host_without_a_debian_mirror_is_a_skip_reason_naming_where_it_looked(tmp_path: Path) -> None:
    (tmp_path / "sources.list").write_text("deb https://127.0.0.1:11/apt stable main\n")
    with pytest.raises(parts.PartsUnavailable, match=r"no Debian mirror serving bookworm .*sources\.list\.d"):
        parts.source_list(apt_sources.mirrors("bookworm", tmp_path))


def test_a_missing_package_is_an_error_not_a_skip() -> None:
    with pytest.raises(parts.PartsError, match="no-such-package"):
        parts.unpacked(parts.Group("missing", ("crashhpd-e2e-no-such-package",)))


def _listing(archive: Path, busybox: Path) -> set[str]:
    """The member names, as busybox's own cpio reads them: an independent reader of the format."""
    data = gzip.decompress(archive.read_bytes())
    listed = subprocess.run([str(busybox), "cpio", "-t"], input=data, capture_output=True, check=True)
    return set(listed.stdout.decode().split())


def test_the_kdump_archive_holds_what_the_kdump_kernel_runs_and_no_more(archives: initramfs.Archives) -> None:
    busybox = parts.guest() / "bin/busybox"
    full, kdump = _listing(archives.full, busybox), _listing(archives.kdump, busybox)
    needed = {"init", "bin/busybox", "usr/bin/python3.11", "lib64/ld-linux-x86-64.so.2",
              "usr/lib/crashhpd-e2e/agent.py", "usr/lib/python3/dist-packages/crashhpd/elfcorehdr/validate.py",
              "usr/lib/python3/dist-packages/elftools/elf/elffile.py"}
    assert needed <= kdump
    assert kdump < full
    first_kernel_only = {"sbin/kexec", "usr/lib/python3/dist-packages/pydantic/main.py", "usr/bin/crashhpd"}
    assert first_kernel_only <= full and not first_kernel_only & kdump
