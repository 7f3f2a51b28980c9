# SPDX-License-Identifier: GPL-2.0-only
"""/proc/kallsyms's one reader on real files: one bounded pass for the symbols asked, hostile files refused."""

import os
import tracemalloc

import pytest

from crashhpd.errors import SnapshotError
from crashhpd.sysview.kallsyms import CHUNK, MAX_BYTES, MAX_LINE, read_symbols

NAMES = ("_text", "_end", "kexec_crash_image")


def kallsyms(tmp_path, text: str | bytes) -> str:
    path = tmp_path / "proc/kallsyms"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(tmp_path)


def filler(size: int) -> str:
    """Lines of symbols nobody asks for, `size` bytes in all (at least 40): 40 bytes each, the last longer."""
    count, extra = divmod(size, 40)
    lines = [f"ffffffff{0x81000000 + i:08x} t filler_{i:013d}\n" for i in range(count - 1)]
    return "".join(lines) + f"ffffffff81000000 t {'p' * (20 + extra)}\n"


def test_the_symbols_asked_hidden_ones_as_none_absent_ones_left_out(tmp_path):
    root = kallsyms(tmp_path, "ffffffff9a000000 T _text\n0000000000000000 B kexec_crash_image\n"
                              "ffffffffc0a01000 t _end\t[some_module]\n")
    assert read_symbols(root, NAMES) == {"_text": 0xFFFFFFFF9A000000, "kexec_crash_image": None}


def test_no_kallsyms_is_none(tmp_path):
    assert read_symbols(str(tmp_path), NAMES) is None


def test_the_first_kernel_line_counts_and_a_last_line_needs_no_newline(tmp_path):
    root = kallsyms(tmp_path, "ffffffffc0a01000 t _text\t[mod]\nffffffff9a000000 T _text\nffffffff9b000000 t _text\n"
                              "ffffffff9da00000 B _end")
    assert read_symbols(root, ("_text", "_end")) == {"_text": 0xFFFFFFFF9A000000, "_end": 0xFFFFFFFF9DA00000}


@pytest.mark.parametrize("before", [CHUNK, CHUNK - 16, CHUNK - 20, CHUNK - 23],
                         ids=["at-the-boundary", "address-cut", "name-cut", "newline-cut"])
def test_a_line_across_two_chunks_is_found_whole(tmp_path, before):
    root = kallsyms(tmp_path, filler(before) + "ffffffff9da00000 B _end\n" + filler(100))
    assert read_symbols(root, ("_end", "_text")) == {"_end": 0xFFFFFFFF9DA00000}


def test_the_pass_stops_once_every_name_is_found(tmp_path):
    text = "ffffffff9a000000 T _text\n" + "x" * (2 * MAX_LINE)  # what follows would be refused if read
    assert read_symbols(kallsyms(tmp_path, text), ("_text",)) == {"_text": 0xFFFFFFFF9A000000}
    with pytest.raises(SnapshotError):
        read_symbols(kallsyms(tmp_path, text), ("_text", "_end"))


def test_a_kallsyms_larger_than_the_cap_is_refused(tmp_path):
    root = kallsyms(tmp_path, filler(40000))
    assert read_symbols(root, NAMES, limit=40000) == {}
    with pytest.raises(SnapshotError, match=f"{tmp_path}/proc/kallsyms: more than 39999 bytes, larger than any"):
        read_symbols(root, NAMES, limit=39999)
    assert MAX_BYTES >= 3 * 20_000_000  # room over the largest real kallsyms (10-20 MB)


def test_a_line_longer_than_any_kallsyms_line_is_refused(tmp_path):
    root = kallsyms(tmp_path, filler(400) + "f" * (MAX_LINE + 1))
    with pytest.raises(SnapshotError, match=f"a line of more than {MAX_LINE} bytes at byte 400, longer than any"):
        read_symbols(root, NAMES)
    assert read_symbols(kallsyms(tmp_path, filler(400) + "f" * MAX_LINE), NAMES) == {}


@pytest.mark.parametrize("data", [bytes(range(256)) * 16, b"\xff\xfe" * 1000 + b"\n" + b"\x00 _text\n",
                                  b"ffffffffffffffffff T _text\n", b"ffffffff9a000000 _text\n"],
                         ids=["binary", "invalid-utf8", "17-digits", "no-type"])
def test_garbage_lists_nothing(tmp_path, data):
    assert read_symbols(kallsyms(tmp_path, data), NAMES) == {}


def test_a_directory_or_fifo_is_an_error_without_blocking(tmp_path, deadline):
    path = tmp_path / "proc/kallsyms"
    path.mkdir(parents=True)
    with pytest.raises(SnapshotError, match=f"{path}: Is a directory"):
        read_symbols(str(tmp_path), NAMES)
    path.rmdir()
    os.mkfifo(path)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(SnapshotError, match=f"{path}: not a regular file"):
        read_symbols(str(tmp_path), NAMES)
    assert set(os.listdir("/proc/self/fd")) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 0000")
def test_an_unreadable_kallsyms_says_so(tmp_path):
    root = kallsyms(tmp_path, "ffffffff9a000000 T _text\n")
    (tmp_path / "proc/kallsyms").chmod(0)
    with pytest.raises(SnapshotError, match="permission denied; crashhpd must run as root"):
        read_symbols(root, NAMES)


def test_memory_stays_bounded_by_the_chunk_not_the_file(tmp_path):
    root = kallsyms(tmp_path, filler(16 * CHUNK) + "ffffffff9da00000 B _end\n")
    tracemalloc.start()
    try:
        found = read_symbols(root, ("_end",))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found == {"_end": 0xFFFFFFFF9DA00000}
    assert peak < 6 * CHUNK, f"{peak} bytes at the peak for a {16 * CHUNK}-byte file"
