# SPDX-License-Identifier: GPL-2.0-only
"""crashhpd.safefile on real files: symlinks, FIFOs and devices planted where it reads and writes, other owners."""

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from crashhpd import safefile
from crashhpd.safefile import TMP_PREFIX, SafeDir, UnsafeFileError, describe

NOBODY = 65534
FIXED_HEX = "0123456789ab"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


@pytest.fixture
def own(tmp_path: Path) -> Path:
    """A directory as SafeDir creates it: ours, 0700."""
    SafeDir(str(tmp_path / "own")).close()
    return tmp_path / "own"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    target = tmp_path / "outside"
    target.write_bytes(b"precious")
    return target


@pytest.fixture
def fixed_temporaries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Temporaries with a name known in advance, so a test can plant something there first."""
    monkeypatch.setattr(safefile.secrets, "token_hex", lambda _n: FIXED_HEX)


def write(directory: Path, name: str, data: bytes, mode: int = 0o600) -> None:
    with SafeDir(str(directory)) as d:
        d.write(name, data, mode)


def read(directory: Path, name: str, limit: int = 100) -> bytes | None:
    with SafeDir(str(directory)) as d:
        return d.read(name, limit)


# --- the directory -----------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o077], indirect=True)
def test_a_missing_directory_is_created_with_the_mode_given_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    for mode in (0o700, 0o750):
        path = tmp_path / f"a{mode:o}" / "b"
        with SafeDir(str(path), mode) as d:
            assert d.path == str(path)
        assert path.is_dir() and mode_of(path) == mode


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.joinpath("d").mkdir(mode=0o755)
    SafeDir(str(tmp_path / "d")).close()
    assert mode_of(tmp_path / "d") == 0o755


@pytest.mark.parametrize("shared", [False, True])
def test_a_symlinked_directory_is_refused_and_names_the_path(tmp_path: Path, shared: bool) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(UnsafeFileError) as info:
        SafeDir(str(tmp_path / "link"), shared=shared)
    assert str(info.value) == f"{tmp_path}/link is a symlink; crashhpd refuses to follow it"
    assert listing(tmp_path / "real") == []


def test_symlinked_ancestors_are_followed(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "var-run").symlink_to(tmp_path / "run")  # Debian's /var/run -> /run
    write(tmp_path / "var-run" / "crashhpd", "x", b"data")
    assert (tmp_path / "run" / "crashhpd" / "x").read_bytes() == b"data"


@pytest.mark.root
def test_a_directory_of_another_owner_is_refused(own: Path) -> None:
    os.chown(own, NOBODY, -1)
    with pytest.raises(UnsafeFileError) as info:
        SafeDir(str(own))
    assert str(info.value) == (f"{own} is owned by uid {NOBODY}, not 0; "
                               "crashhpd refuses a directory another user controls")


@pytest.mark.parametrize("mode", [0o770, 0o702, 0o1777])
def test_a_directory_others_can_write_is_refused(own: Path, mode: int) -> None:
    os.chmod(own, mode)
    with pytest.raises(UnsafeFileError) as info:
        SafeDir(str(own))
    assert str(info.value) == f"{own} is writable by group or others (mode {mode:04o}); crashhpd refuses it"


def test_a_shared_directory_is_never_created(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        SafeDir(str(tmp_path / "missing"), shared=True)
    assert not (tmp_path / "missing").exists()


@pytest.mark.root
@pytest.mark.parametrize("mode", [0o755, 0o775, 0o1777])
def test_a_shared_directory_may_be_another_users_and_group_writable(own: Path, mode: int) -> None:
    os.chown(own, NOBODY, NOBODY)
    os.chmod(own, mode)
    with SafeDir(str(own), shared=True) as d:
        d.write("crashhpd.prom", b"x 1\n", 0o644)
    assert mode_of(own / "crashhpd.prom") == 0o644


def test_a_shared_directory_anyone_may_replace_files_in_is_refused(own: Path) -> None:
    os.chmod(own, 0o777)
    with pytest.raises(UnsafeFileError, match=r"writable by everyone without the sticky bit \(mode 0777\)"):
        SafeDir(str(own), shared=True)


def test_a_file_in_place_of_the_directory_is_an_os_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        SafeDir(str(tmp_path / "file"))


# --- writing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o077], indirect=True)
@pytest.mark.parametrize("mode", [0o600, 0o644])
def test_write_replaces_the_file_whole_with_the_mode_given(own: Path, umask: int, mode: int) -> None:
    (own / "f").write_bytes(b"old")
    os.chmod(own / "f", 0o666)
    write(own, "f", b"new" * 100_000, mode)
    assert (own / "f").read_bytes() == b"new" * 100_000
    assert mode_of(own / "f") == mode
    assert listing(own) == ["f"]


def test_a_symlink_at_the_name_is_refused_and_its_target_untouched(own: Path, outside: Path) -> None:
    (own / "f").symlink_to(outside)
    with pytest.raises(UnsafeFileError, match=f"^{own}/f is a symlink; crashhpd refuses to follow it$"):
        write(own, "f", b"new")
    assert outside.read_bytes() == b"precious"
    assert listing(own) == ["f"]


def test_a_fifo_or_directory_at_the_name_is_refused(own: Path, deadline: None) -> None:
    os.mkfifo(own / "fifo")
    (own / "dir").mkdir()
    for name in ("fifo", "dir"):
        with pytest.raises(UnsafeFileError, match=f"{own}/{name} is not a regular file; crashhpd refuses to replace"):
            write(own, name, b"new")
    assert listing(own) == ["dir", "fifo"]


def test_a_symlink_planted_at_the_temporary_name_is_not_followed(own: Path, outside: Path,
                                                                 fixed_temporaries: None) -> None:
    (own / "f").write_bytes(b"old")
    planted = own / f"{TMP_PREFIX}f-{FIXED_HEX}"
    planted.symlink_to(outside)
    with pytest.raises(FileExistsError) as info:
        write(own, "f", b"new")
    assert info.value.filename == f"{own}/f"  # the file a reader knows, not the temporary
    assert outside.read_bytes() == b"precious"
    assert (own / "f").read_bytes() == b"old"
    assert planted.is_symlink()


def test_a_fifo_at_a_fixed_temporary_name_does_not_matter(own: Path, deadline: None) -> None:
    os.mkfifo(own / "f.tmp")  # where a writer with a fixed temporary name would open, and hang
    write(own, "f", b"new")
    assert (own / "f").read_bytes() == b"new"
    assert stat.S_ISFIFO(os.lstat(own / "f.tmp").st_mode)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(own: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (own / "f").write_bytes(b"old")

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(safefile.os, "fsync", failing_fsync)
    with pytest.raises(OSError) as info:
        write(own, "f", b"new")
    monkeypatch.undo()
    assert describe(info.value, str(own)) == f"{own}/f: Input/output error"
    assert (own / "f").read_bytes() == b"old"
    assert listing(own) == ["f"]


def test_staged_files_replace_nothing_until_committed_in_order(own: Path) -> None:
    (own / "a").write_bytes(b"old a")
    with SafeDir(str(own)) as d:
        first, second = d.stage("a", b"new a", 0o600), d.stage("b", b"new b", 0o600)
        assert (own / "a").read_bytes() == b"old a" and not (own / "b").exists()
        d.commit(first, sync=False)
        assert (own / "a").read_bytes() == b"new a" and not (own / "b").exists()
        d.sync()
        d.discard(second)
    assert listing(own) == ["a"]


def test_remove_temporaries_removes_only_those_of_the_names_given(own: Path) -> None:
    names = [f"{TMP_PREFIX}a-1f2e", f"{TMP_PREFIX}b-3c4d", f"{TMP_PREFIX}kexec-a-5e6f", "a.tmp", "a"]
    for name in names:
        (own / name).write_bytes(b"")
    with SafeDir(str(own)) as d:
        d.remove_temporaries(("a", "b"))
    assert listing(own) == sorted(["a", "a.tmp", f"{TMP_PREFIX}kexec-a-5e6f"])


# --- reading -----------------------------------------------------------------------------------


def test_read_returns_the_file_or_none(own: Path) -> None:
    assert read(own, "f") is None
    (own / "f").write_bytes(b"x" * 100)
    assert read(own, "f", limit=100) == b"x" * 100


def test_a_file_larger_than_the_limit_is_refused(own: Path) -> None:
    (own / "f").write_bytes(b"x" * 101)
    with pytest.raises(UnsafeFileError, match=f"^{own}/f is larger than 100 bytes; crashhpd refuses to read it$"):
        read(own, "f", limit=100)


def test_a_file_growing_past_the_limit_is_refused_after_limit_plus_one_bytes(own: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """What fstat said is stale by the time of the read: the file grew. Reading stops one byte past the limit."""
    (own / "f").write_bytes(b"x" * 10_000_000)
    real_fstat, real_read = os.fstat, os.read
    got: list[int] = []

    def stale_fstat(fd: int) -> os.stat_result:
        st = list(real_fstat(fd))
        st[stat.ST_SIZE] = 0
        return os.stat_result(st)

    def counting_read(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        got.append(len(data))
        return data

    monkeypatch.setattr(safefile.os, "fstat", stale_fstat)
    monkeypatch.setattr(safefile.os, "read", counting_read)
    with pytest.raises(UnsafeFileError, match="larger than 3000000 bytes"):
        read(own, "f", limit=3_000_000)
    monkeypatch.undo()
    assert sum(got) == 3_000_001


def test_a_fifo_is_refused_without_blocking(own: Path, deadline: None) -> None:
    os.mkfifo(own / "f")
    with pytest.raises(UnsafeFileError, match=f"^{own}/f is not a regular file; crashhpd refuses to read it$"):
        read(own, "f")


def test_a_symlink_to_dev_zero_is_refused_without_reading_it(own: Path, deadline: None) -> None:
    (own / "f").symlink_to("/dev/zero")
    with pytest.raises(UnsafeFileError, match=f"^{own}/f is a symlink; crashhpd refuses to follow it$"):
        read(own, "f", limit=1 << 40)


@pytest.mark.root
def test_a_device_is_refused(own: Path, deadline: None) -> None:
    os.mknod(own / "zero", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers
    with pytest.raises(UnsafeFileError, match="zero is not a regular file"):
        read(own, "zero", limit=1 << 40)


def test_a_symlink_swapped_in_after_the_check_is_refused(own: Path, outside: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the lstat and the open: O_NOFOLLOW refuses what the check by name did not see."""
    (own / "f").write_bytes(b"ours")
    real_open = os.open

    def swapping_open(name: str, flags: int, *args: object, **kwargs: object) -> int:
        if name == "f":
            (own / "f").unlink()
            (own / "f").symlink_to(outside)
        return real_open(name, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(safefile.os, "open", swapping_open)
    with pytest.raises(UnsafeFileError, match="f is a symlink"):
        read(own, "f")
