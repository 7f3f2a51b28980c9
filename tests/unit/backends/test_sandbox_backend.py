# SPDX-License-Identifier: GPL-2.0-only
"""The sandbox backend on real files: a real tmpfs for the full disk, real SIGKILLs, a real concurrent reader."""

import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from faketree import BLOCK, NO_KEXEC, QEMU_GUEST, QEMU_HOT_ADD_BASE, hot_added, make_tree

from crashhpd.backends import create
from crashhpd.backends.base import Applied
from crashhpd.backends.sandbox import SEGMENT, STATE, SandboxBackend
from crashhpd.config import validate
from crashhpd.elfcorehdr.build import build_valid
from crashhpd.elfcorehdr.layout import preset
from crashhpd.elfcorehdr.pack import capacity
from crashhpd.errors import BackendError
from crashhpd.safefile import TMP_PREFIX
from crashhpd.sysview.snapshot import read_snapshot

CPUS = 64
CAPACITY = capacity(CPUS)  # 462512: NR_CPUS 64 + 8192 ranges, the seed patch's default
SMALL_CPUS, SMALL_RANGES = 4, 100
SMALL = capacity(SMALL_CPUS, SMALL_RANGES)  # 6000: holds the small header, not the large one
NOBODY = 65534


def header_for(root: Path, iomem: str) -> bytes:
    make_tree(root, iomem)
    return build_valid(read_snapshot(str(root)), preset("kernel")).data  # raises naming every rule it breaks


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The fixture guest as booted: 4 CPUs, 3 RAM ranges, one page."""
    return header_for(tmp_path_factory.mktemp("small"), QEMU_GUEST)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The same guest after 8000 memory blocks were hot-added: 110 pages, nearly the whole segment.

    Its bytes differ from the small header's over a hundred pages, so a segment
    written in place (several page copies, interruptible by SIGKILL) would be
    seen half old, half new.
    """
    # top-level System RAM above the fixture's, one range per block with a hole between them
    iomem = hot_added(QEMU_GUEST, 8000, QEMU_HOT_ADD_BASE, stride=2 * BLOCK)
    return header_for(tmp_path_factory.mktemp("large"), iomem)


@pytest.fixture
def strict_umask() -> Iterator[None]:
    """The daemon may run under umask 077; the modes must not depend on it."""
    old = os.umask(0o077)
    yield
    os.umask(old)


def padded(header: bytes, size: int = CAPACITY) -> bytes:
    return header + bytes(size - len(header))


def state_of(backend: SandboxBackend) -> Applied:
    state = backend.state()
    assert state is not None
    return state


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temporaries(state_dir: Path) -> list[str]:
    return [e for e in os.listdir(state_dir) if e.startswith(TMP_PREFIX)]


def snapshot_files(state_dir: Path) -> dict[str, bytes]:
    return {e: (state_dir / e).read_bytes() for e in sorted(os.listdir(state_dir))}


# --- load, apply, restart ------------------------------------------------------------------


def test_nothing_is_loaded_before_the_first_apply(tmp_path: Path, strict_umask: None) -> None:
    state_dir = tmp_path / "a" / "state"
    backend = SandboxBackend(str(state_dir), CPUS)
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert os.listdir(state_dir) == []
    assert backend.loaded(NO_KEXEC) is None
    assert backend.state() is None
    assert backend.capacity(NO_KEXEC) == CAPACITY == 64 + 56 * (2 + 64 + 8192)
    assert (backend.name, backend.layout) == ("sandbox", "kernel")
    health = backend.health(NO_KEXEC)
    assert health.ok
    assert str(CAPACITY) in health.detail
    assert health.extra["generation"] == 0 and health.extra["sha256"] is None


def test_load_writes_a_full_zero_padded_segment_and_its_state(tmp_path: Path, small: bytes,
                                                              strict_umask: None) -> None:
    backend = SandboxBackend(str(tmp_path), CPUS)
    before = time.time()
    applied = backend.apply(small, NO_KEXEC)
    after = time.time()

    segment = (tmp_path / SEGMENT).read_bytes()
    assert len(segment) == CAPACITY
    assert segment == padded(small)
    state = json.loads((tmp_path / STATE).read_text())
    assert state["generation"] == 1
    assert state["sha256"] == sha(small)
    assert state["header_size"] == len(small) == 4096
    assert state["capacity"] == CAPACITY
    assert before <= state["applied_at"] <= after
    assert applied == Applied(1, sha(small), len(small), CAPACITY, state["applied_at"])
    assert backend.state() == applied
    assert backend.loaded(NO_KEXEC) == small
    for name in (SEGMENT, STATE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert temporaries(tmp_path) == []


def test_apply_replaces_the_header_and_a_restart_continues_the_generations(tmp_path: Path, small: bytes,
                                                                           large: bytes) -> None:
    backend = SandboxBackend(str(tmp_path), CPUS)
    backend.apply(small, NO_KEXEC)
    second = backend.apply(large, NO_KEXEC)
    assert second.generation == 2
    assert (tmp_path / SEGMENT).read_bytes() == padded(large)

    restarted = SandboxBackend(str(tmp_path), CPUS)
    assert restarted.state() == second
    assert restarted.loaded(NO_KEXEC) == large
    third = restarted.apply(small, NO_KEXEC)
    assert third.generation == 3
    assert (tmp_path / SEGMENT).read_bytes() == padded(small)
    assert json.loads((tmp_path / STATE).read_text())["generation"] == 3
    assert json.loads((tmp_path / STATE).read_text())["sha256"] == sha(small)


def test_health_reports_the_segment_usage(tmp_path: Path, small: bytes) -> None:
    backend = SandboxBackend(str(tmp_path), CPUS)
    backend.apply(small, NO_KEXEC)
    health = backend.health(NO_KEXEC)
    assert health.ok
    assert health.detail == f"segment {CAPACITY} bytes, 4096 used (0.9%)"
    assert health.extra == {"generation": 1, "sha256": sha(small), "capacity_bytes": CAPACITY,
                            "header_bytes": 4096, "path": str(tmp_path / SEGMENT)}
    (tmp_path / SEGMENT).unlink()
    assert not backend.health(NO_KEXEC).ok


def test_stale_temporaries_of_this_backend_are_removed_on_start(tmp_path: Path, small: bytes) -> None:
    SandboxBackend(str(tmp_path), CPUS).apply(small, NO_KEXEC)
    (tmp_path / f"{TMP_PREFIX}{SEGMENT}-deadbeef").write_bytes(b"half a segm")
    (tmp_path / f"{TMP_PREFIX}{STATE}-deadbeef").write_bytes(b"{")
    (tmp_path / "kexec-state.json.tmp").write_bytes(b"another backend's")
    SandboxBackend(str(tmp_path), CPUS)
    assert sorted(os.listdir(tmp_path)) == [SEGMENT, "kexec-state.json.tmp", STATE]


# --- capacity --------------------------------------------------------------------------------


def test_a_header_larger_than_the_segment_is_refused_and_the_old_one_stays(tmp_path: Path, small: bytes,
                                                                           large: bytes) -> None:
    backend = SandboxBackend(str(tmp_path), SMALL_CPUS, SMALL_RANGES)
    applied = backend.apply(small, NO_KEXEC)
    before = snapshot_files(tmp_path)
    with pytest.raises(BackendError) as err:
        backend.apply(large, NO_KEXEC)
    assert f"{len(large)} bytes" in str(err.value) and f"{SMALL}-byte" in str(err.value)
    assert err.value.retry_after is None
    assert snapshot_files(tmp_path) == before
    assert len(before[SEGMENT]) == SMALL
    assert backend.state() == applied
    assert backend.loaded(NO_KEXEC) == small


def test_a_capacity_change_reloads_with_a_segment_of_the_new_size(tmp_path: Path, small: bytes,
                                                                  large: bytes) -> None:
    SandboxBackend(str(tmp_path), SMALL_CPUS, SMALL_RANGES).apply(small, NO_KEXEC)
    bigger = SandboxBackend(str(tmp_path), CPUS)
    assert bigger.capacity(NO_KEXEC) == CAPACITY
    assert state_of(bigger).capacity == SMALL
    assert f"reloads it with {CAPACITY} bytes" in bigger.health(NO_KEXEC).detail
    applied = bigger.apply(large, NO_KEXEC)
    assert (applied.generation, applied.capacity) == (2, CAPACITY)
    assert (tmp_path / SEGMENT).read_bytes() == padded(large)


# --- recovery from what a crash leaves --------------------------------------------------------


def test_state_one_generation_behind_the_segment_is_rebuilt_from_it(tmp_path: Path, small: bytes,
                                                                    large: bytes) -> None:
    """The files as a SIGKILL between the segment's rename and state.json's leaves them."""
    backend = SandboxBackend(str(tmp_path), CPUS)
    backend.apply(small, NO_KEXEC)
    behind = (tmp_path / STATE).read_bytes()
    backend.apply(large, NO_KEXEC)
    (tmp_path / STATE).write_bytes(behind)

    repaired = SandboxBackend(str(tmp_path), CPUS)
    assert repaired.loaded(NO_KEXEC) == large
    state = state_of(repaired)
    assert (state.generation, state.sha256, state.header_size, state.capacity) == (2, sha(large), len(large),
                                                                                   CAPACITY)
    assert state.applied_at == (tmp_path / SEGMENT).stat().st_mtime
    assert json.loads((tmp_path / STATE).read_text())["sha256"] == sha(large)
    assert repaired.apply(small, NO_KEXEC).generation == 3


def test_a_segment_without_state_is_the_first_generation(tmp_path: Path, small: bytes) -> None:
    """A crash between the two renames of the very first apply."""
    SandboxBackend(str(tmp_path), CPUS).apply(small, NO_KEXEC)
    (tmp_path / STATE).unlink()
    backend = SandboxBackend(str(tmp_path), CPUS)
    assert backend.loaded(NO_KEXEC) == small
    assert state_of(backend).generation == 1
    assert json.loads((tmp_path / STATE).read_text())["generation"] == 1


def test_a_removed_segment_is_not_loaded_and_the_generations_go_on(tmp_path: Path, small: bytes) -> None:
    SandboxBackend(str(tmp_path), CPUS).apply(small, NO_KEXEC)
    (tmp_path / SEGMENT).unlink()
    backend = SandboxBackend(str(tmp_path), CPUS)
    assert backend.loaded(NO_KEXEC) is None and backend.state() is None
    assert backend.apply(small, NO_KEXEC).generation == 2


@pytest.mark.parametrize("garbage", [b"not an ELF header", b"\x7fELF" + bytes(60) + b"junk after the header"])
def test_a_segment_that_is_not_one_header_is_refused(tmp_path: Path, garbage: bytes) -> None:
    (tmp_path / SEGMENT).write_bytes(garbage)
    with pytest.raises(BackendError, match="not one complete ELF core header"):
        SandboxBackend(str(tmp_path), CPUS)


def test_an_unreadable_state_is_refused_with_its_path(tmp_path: Path, small: bytes) -> None:
    SandboxBackend(str(tmp_path), CPUS).apply(small, NO_KEXEC)
    (tmp_path / STATE).write_text('{"generation": "three"}')
    with pytest.raises(BackendError, match=f"{tmp_path / STATE}: unreadable"):
        SandboxBackend(str(tmp_path), CPUS)


# --- symlinks and strange files ----------------------------------------------------------------


def test_a_symlinked_state_dir_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(BackendError, match="link is a symlink"):
        SandboxBackend(str(tmp_path / "link"), CPUS)
    assert os.listdir(tmp_path / "real") == []


def test_a_state_dir_swapped_for_a_symlink_after_start_is_refused(tmp_path: Path, small: bytes) -> None:
    state_dir = tmp_path / "state"
    backend = SandboxBackend(str(state_dir), CPUS)
    (tmp_path / "elsewhere").mkdir()
    state_dir.rmdir()
    state_dir.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BackendError, match="state is a symlink"):
        backend.apply(small, NO_KEXEC)
    assert os.listdir(tmp_path / "elsewhere") == []


@pytest.mark.parametrize("name", [SEGMENT, STATE])
def test_a_symlinked_file_is_refused_at_start(tmp_path: Path, name: str) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / name).symlink_to(outside)
    with pytest.raises(BackendError, match=f"{name} is a symlink"):
        SandboxBackend(str(state_dir), CPUS)
    assert outside.read_bytes() == b"precious"


@pytest.mark.parametrize("name", [SEGMENT, STATE])
def test_a_symlink_planted_after_start_is_refused_at_apply(tmp_path: Path, small: bytes, large: bytes,
                                                           name: str) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"precious")
    state_dir = tmp_path / "state"
    backend = SandboxBackend(str(state_dir), CPUS)
    backend.apply(small, NO_KEXEC)
    (state_dir / name).unlink()
    (state_dir / name).symlink_to(outside)
    with pytest.raises(BackendError, match=f"{name} is a symlink"):
        backend.apply(large, NO_KEXEC)
    assert outside.read_bytes() == b"precious"
    assert temporaries(state_dir) == []
    assert backend.loaded(NO_KEXEC) == small


def test_a_directory_in_place_of_the_segment_is_refused(tmp_path: Path) -> None:
    (tmp_path / SEGMENT).mkdir()
    with pytest.raises(BackendError, match="not a regular file"):
        SandboxBackend(str(tmp_path), CPUS)


def test_a_fifo_in_place_of_the_state_is_refused_without_blocking(tmp_path: Path, deadline: None) -> None:
    os.mkfifo(tmp_path / STATE)
    with pytest.raises(BackendError, match=f"^{tmp_path / STATE} is not a regular file; crashhpd refuses to read it$"):
        SandboxBackend(str(tmp_path), CPUS)


@pytest.mark.parametrize(("mode", "owner", "why"), [
    (0o700, NOBODY, f"is owned by uid {NOBODY}, not 0; crashhpd refuses a directory another user controls"),
    (0o770, 0, "is writable by group or others (mode 0770); crashhpd refuses it"),
    (0o757, 0, "is writable by group or others (mode 0757); crashhpd refuses it"),
])
def test_a_state_dir_someone_else_controls_is_refused(tmp_path: Path, small: bytes, mode: int, owner: int,
                                                      why: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("another owner needs root")
    state_dir = tmp_path / "state"
    backend = SandboxBackend(str(state_dir), CPUS)
    os.chown(state_dir, owner, -1)
    os.chmod(state_dir, mode)
    for attempt in (lambda: backend.apply(small, NO_KEXEC), lambda: SandboxBackend(str(state_dir), CPUS)):
        with pytest.raises(BackendError) as err:
            attempt()
        assert str(err.value) == f"{state_dir} {why}"
    assert os.listdir(state_dir) == []


@pytest.mark.parametrize("backend", ["sandbox", "kexec"])
@pytest.mark.parametrize("key", ["state_dir", "sandbox.state_dir"])
def test_every_backend_keeps_its_files_in_the_state_dir(tmp_path: Path, backend: str, key: str) -> None:
    """The top-level key and its older spelling under [sandbox] are one setting, for every backend."""
    state_dir = tmp_path / "state"
    table, _, name = key.rpartition(".")
    setting = {table: {name: str(state_dir)}} if table else {name: str(state_dir)}
    cfg = validate([("main", {"backend": backend, "sandbox": {"max_cpus": 4}}), ("drop-in", setting)])
    created = create(cfg, read_snapshot(str(make_tree(tmp_path / "root", QEMU_GUEST))))
    assert created.name == backend
    assert state_dir.is_dir() and stat.S_IMODE(state_dir.stat().st_mode) == 0o700


# --- a full disk: a real tmpfs --------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: room for the state directory, not for much more."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = tmp_path / "fs"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)],
                             check=False, capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mountpoint
    subprocess.run(["umount", str(mountpoint)], check=True)


def fill(fs: Path, leave: int) -> None:
    """Take every free block of the filesystem but `leave` bytes."""
    vfs = os.statvfs(fs)
    size = vfs.f_bavail * vfs.f_frsize - leave
    with open(fs / "filler", "wb") as f:
        f.write(bytes(size))
    assert os.statvfs(fs).f_bavail * os.statvfs(fs).f_frsize == leave


@pytest.mark.root
@pytest.mark.parametrize("room", ["none", "segment-only"])
def test_a_full_disk_is_an_error_and_the_old_header_stays(tiny_fs: Path, small: bytes, large: bytes,
                                                          room: str) -> None:
    state_dir = tiny_fs / "state"
    backend = SandboxBackend(str(state_dir), CPUS)
    applied = backend.apply(small, NO_KEXEC)
    before = snapshot_files(state_dir)
    # "segment-only": the new segment fits, its state.json does not
    fill(tiny_fs, 0 if room == "none" else os.stat(state_dir / SEGMENT).st_blocks * 512)

    with pytest.raises(BackendError, match="No space left on device") as first:
        backend.apply(large, NO_KEXEC)
    with pytest.raises(BackendError, match="No space left on device") as second:
        backend.apply(large, NO_KEXEC)
    # tried again on the daemon's timer until space returns, backed off
    assert (first.value.retry_after, second.value.retry_after) == (1.0, 2.0)
    assert snapshot_files(state_dir) == before
    assert temporaries(state_dir) == []
    assert backend.state() == applied
    assert backend.loaded(NO_KEXEC) == small

    (tiny_fs / "filler").unlink()
    assert backend.apply(large, NO_KEXEC).generation == 2
    assert (state_dir / SEGMENT).read_bytes() == padded(large)


# --- SIGKILL at any instant, and a reader while applies run ------------------------------


def fork_writer(state_dir: Path, headers: tuple[bytes, bytes], first: int, applies: int | None,
                ready: int | None = None) -> int:
    """A child process that alternates the two headers, forever or `applies` times, then exits 0; it writes a
    byte to the fd `ready` once it is about to write its first."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        backend = SandboxBackend(str(state_dir), CPUS)
        if ready is not None:
            os.write(ready, b".")
        k = first
        while applies is None or k < first + applies:
            backend.apply(headers[k % 2], NO_KEXEC)
            k += 1
        code = 0
    except Exception:
        traceback.print_exc()
    finally:
        os._exit(code)


def which(segment: bytes, headers: tuple[bytes, bytes]) -> bytes:
    """The header a segment holds, asserting it is exactly one of the two, zero padded to the capacity."""
    assert len(segment) == CAPACITY
    matches = [h for h in headers if segment == padded(h)]
    assert len(matches) == 1, f"torn segment: starts {segment[:64].hex()}"
    return matches[0]


def test_sigkill_at_random_instants_never_leaves_a_torn_segment(tmp_path: Path, small: bytes,
                                                                large: bytes) -> None:
    headers = (small, large)
    SandboxBackend(str(tmp_path), CPUS).apply(small, NO_KEXEC)
    rng = random.Random(20240611)
    generation = 1
    mid_apply = behind = 0
    seen: set[bytes] = set()
    ready_read, ready_write = os.pipe()
    for trial in range(300):
        pid = fork_writer(tmp_path, headers, trial, None, ready_write)
        os.read(ready_read, 1)  # the instant is random from when the writer runs, not from the fork: under load
        time.sleep(rng.uniform(0, 0.008))  # a child may wait longer than that to be scheduled at all
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "the writer died on its own"

        held = which((tmp_path / SEGMENT).read_bytes(), headers)
        seen.add(held)
        mid_apply += bool(temporaries(tmp_path))
        behind += json.loads((tmp_path / STATE).read_text())["sha256"] != sha(held)

        fresh = SandboxBackend(str(tmp_path), CPUS)
        state = state_of(fresh)
        assert fresh.loaded(NO_KEXEC) == held
        assert (state.sha256, state.header_size, state.capacity) == (sha(held), len(held), CAPACITY)
        assert json.loads((tmp_path / STATE).read_text())["sha256"] == sha(held)
        assert temporaries(tmp_path) == []
        assert state.generation >= generation
        generation = state.generation
    os.close(ready_read)
    os.close(ready_write)
    assert seen == set(headers)
    assert mid_apply > 0, "no kill landed while an apply was writing; the test proves nothing"
    print(f"300 kills: {mid_apply} left a temporary, {behind} left state.json behind; generation {generation}")


def test_a_concurrent_reader_never_sees_a_torn_segment(tmp_path: Path, small: bytes, large: bytes) -> None:
    headers = (small, large)
    SandboxBackend(str(tmp_path), CPUS).apply(small, NO_KEXEC)
    pid = fork_writer(tmp_path, headers, 1, 400)
    reads = 0
    seen: set[bytes] = set()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        seen.add(which((tmp_path / SEGMENT).read_bytes(), headers))
        reads += 1
        if done:
            break
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert seen == set(headers), f"{reads} reads saw only one header; the writer did not overlap them"
    assert state_of(SandboxBackend(str(tmp_path), CPUS)).generation == 401
