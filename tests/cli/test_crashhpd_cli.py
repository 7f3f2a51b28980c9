# SPDX-License-Identifier: GPL-2.0-only
"""The real `crashhpd` console script as a subprocess: exit status 0 valid, 1 invalid, 2 usage or I/O error.

Every error the outside world causes must be one line on stderr, never a traceback.
"""

import json
import os
import pty
import random
import shutil
import struct
import subprocess
from pathlib import Path

import nobody
import pytest
from crashhpd_command import CRASHHPD, crashhpd
from daemonproc import write_config
from faketree import make_tree
from layouts import FIXTURES, NOTES_0_3, VMCOREINFO, fixture_tree, image, note, program_headers, ram


def assert_one_line_error(result: subprocess.CompletedProcess[bytes], status: int, *fragments: str) -> None:
    stderr = result.stderr.decode()
    assert result.returncode == status, stderr
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crashhpd: "), stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def virtio(tmp_path: Path) -> Path:
    return fixture_tree(tmp_path / "root", "virtio-mem")


@pytest.fixture
def header(virtio: Path, tmp_path: Path) -> Path:
    out = tmp_path / "elfcorehdr"
    assert crashhpd("generate", "--root", str(virtio), "-o", str(out)).returncode == 0
    return out


def test_console_script_is_installed():
    assert CRASHHPD.is_file() and os.access(CRASHHPD, os.X_OK)


@pytest.mark.parametrize(("layout", "size", "with_low"), [("kernel", 4096, False), ("kexec-tools", 1024, True)])
def test_generate_writes_the_header_of_the_layout(virtio, tmp_path, layout, size, with_low):
    code, low, high = FIXTURES["virtio-mem"]
    out = tmp_path / "out"
    result = crashhpd("generate", "--root", str(virtio), "--layout", layout, "-o", str(out))
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    expected = [note(*n) for n in NOTES_0_3] + [note(*VMCOREINFO), image(code)]
    expected += [ram(*low[0], offset=0x34100000 - 0x9F000)] if with_low else []  # kexec-tools' backup copy
    expected += [ram(*r) for r in high]
    assert program_headers(data) == expected and len(data) == size
    # 671 MiB + 0x8bee0000 + 1 GiB + 4 x 128 MiB (+ 0x9ec00 below 1 MiB) = 4.34 GiB either way
    assert result.stderr.decode() == (  # the fake tree has no /proc/kcore, and says so, root or not
        f"crashhpd: warning: the direct-map base is unknown (no {virtio}/proc/kcore: a kernel built without "
        "CONFIG_PROC_KCORE): RAM p_vaddr assume 0xffff888000000000, wrong under KASLR; give --page-offset\n"
        f"crashhpd: {size} bytes, {len(expected)} program headers: 4 CPU notes, a VMCOREINFO note, a kernel image, "
        f"{len(expected) - 6} RAM ranges (4.3 GiB)\n")


def test_generate_to_a_pipe_writes_the_same_bytes_as_to_a_file(virtio, header):
    result = crashhpd("generate", "--root", str(virtio))
    assert result.returncode == 0
    assert result.stdout == header.read_bytes()


def test_generate_refuses_to_write_binary_to_a_terminal(virtio):
    controller, terminal = pty.openpty()
    try:
        result = crashhpd("generate", "--root", str(virtio), stdout=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    assert_one_line_error(result, 2, "refusing to write a binary header to a terminal; use -o FILE")


@pytest.mark.parametrize(
    ("cpus", "notes"), [("online", [0, 1, 3]), ("present", [0, 1, 2, 3]), ("possible", [0, 1, 2, 3])])
def test_generate_cpus_option(tmp_path, cpus, notes):
    root = fixture_tree(tmp_path / "root", "virtio-mem", possible="0-7", present="0-3", online="0-1,3")
    out = tmp_path / "out"
    assert crashhpd("generate", "--root", str(root), "--cpus", cpus, "-o", str(out)).returncode == 0
    headers = program_headers(out.read_bytes())
    assert headers[: len(notes) + 1] == [note(*NOTES_0_3[c]) for c in notes] + [note(*VMCOREINFO)]


def test_generate_page_offset_option(virtio, tmp_path):
    out = tmp_path / "out"
    result = crashhpd("generate", "--root", str(virtio), "--page-offset", "0xff11000000000000", "-o", str(out))
    assert result.returncode == 0
    _code, _low, high = FIXTURES["virtio-mem"]
    assert program_headers(out.read_bytes())[6:] == [ram(*r, page_offset=0xFF11000000000000) for r in high]


def test_generate_warns_about_online_cpus_without_notes(tmp_path):
    root = fixture_tree(tmp_path / "root", "virtio-mem", possible="0-3", notes={0: (0x13FC17000, 368)})
    result = crashhpd("generate", "--root", str(root), "-o", str(tmp_path / "out"))
    assert result.returncode == 0
    assert "warning: no crash_notes for CPU(s) 1, 2, 3" in result.stderr.decode()


def test_inspect_valid_header_prints_the_table(header):
    result = crashhpd("inspect", str(header))
    assert result.returncode == 0 and result.stderr == b""
    lines = result.stdout.decode().splitlines()
    assert lines[1] == ("NOTE 0x000000013fc17000 0x0000000000000000 0x000000013fc17000 0x00000170 0x00000170     note")
    assert lines[6] == ("LOAD 0x0000000001000000 0xffffffff81000000 0x0000000001000000 0x03a00000 0x03a00000 RWE "
                        "kernel image")
    assert lines[7] == ("LOAD 0x0000000000100000 0xffff888000100000 0x0000000000100000 0x29f00000 0x29f00000 RWE "
                        "RAM 671 MiB")
    assert lines[-1] == "valid"
    assert lines[-2] == "13 program headers in 4096 bytes: 5 notes, 7 RAM ranges (4.3 GiB)"


def test_inspect_json(header, virtio):
    result = crashhpd("inspect", str(header), "--json", "--root", str(virtio))
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert (report["valid"], report["problems"], report["file"]) == (True, [], str(header))
    segments = report["header"]["segments"]
    assert report["header"]["phnum"] == len(segments) == 13 and report["header"]["size"] == 4096
    assert [(s["type"], s["paddr"], s["memsz"]) for s in segments] == [
        ("PT_NOTE" if h[0] == 4 else "PT_LOAD", h[4], h[6]) for h in program_headers(header.read_bytes())]


def test_inspect_against_another_system_names_the_ram_that_is_not_there(header, tmp_path):
    other = make_tree(tmp_path / "other", "00100000-3fffffff : System RAM\n")
    result = crashhpd("inspect", str(header), "--root", str(other))
    assert result.returncode == 1
    assert "RAM 0x100000000-0x13fffffff is not inside a System RAM range" in result.stdout.decode()


def _poke(fmt: str, offset: int, value: int):
    return lambda data: struct.pack_into(fmt, data, offset, value)


def _swap_phdrs(a: int, b: int):
    def swap(data: bytearray) -> None:
        pa, pb = 64 + 56 * a, 64 + 56 * b
        data[pa:pa + 56], data[pb:pb + 56] = data[pb:pb + 56], data[pa:pa + 56]
    return swap


@pytest.mark.parametrize(
    ("corrupt", "rule"),
    [
        (_poke("<H", 18, 3), "e_machine is not EM_X86_64 (62)"),
        (_poke("<H", 16, 2), "e_type is not ET_CORE (4)"),
        (_poke("<H", 52, 52), "e_ehsize 52, expected 64"),
        (_swap_phdrs(0, 5), "PT_NOTE after a PT_LOAD; every note must come first"),
        (_poke("<B", 4095, 1), "bytes after the program headers are not zero padding"),
        (_poke("<Q", 64 + 56 * 6 + 48, 4096), "p_align 4096, expected 0"),  # phdr 6: RAM 0x100000-0x29ffffff
        (_poke("<I", 64 + 56 * 6 + 4, 5), "flags 5, expected 7 (RWX)"),
        (_poke("<Q", 64 + 56 * 6 + 40, 0x1000), "p_filesz 703594496 and p_memsz 4096 must be equal"),
        (_poke("<Q", 64 + 56 * 6 + 8, 0x200000), "p_offset 0x200000 differs from p_paddr"),
        (_swap_phdrs(6, 7), "RAM 0x100000 overlaps or precedes RAM 0x34100000-0xbffdffff"),
    ],
    ids=["machine", "type", "ehsize", "note-after-load", "padding", "align", "flags", "sizes", "offset", "order"],
)
def test_inspect_corrupted_header_names_the_rule(header, tmp_path, corrupt, rule):
    data = bytearray(header.read_bytes())
    corrupt(data)
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(data))
    result = crashhpd("inspect", str(bad))
    assert result.returncode == 1
    out = result.stdout.decode()
    assert "INVALID:" in out and rule in out and "Traceback" not in result.stderr.decode()


@pytest.mark.parametrize(
    "content",
    [b"", b"hello, world\n" * 10, b"\x7fELF" + bytes(12), random.Random(7).randbytes(4096),
     b"\x7fELF\x02\x01\x01" + bytes(60)],
    ids=["empty", "text", "short-magic", "random", "ehdr-no-phdrs"],
)
def test_inspect_garbage_file_is_invalid_not_a_crash(tmp_path, content):
    path = tmp_path / "garbage"
    path.write_bytes(content)
    result = crashhpd("inspect", str(path))
    assert result.returncode == 1, result.stderr
    assert "INVALID:" in result.stdout.decode() and "Traceback" not in result.stderr.decode()


def test_inspect_truncated_header_is_invalid(header, tmp_path):
    short = tmp_path / "short"
    short.write_bytes(header.read_bytes()[:300])
    result = crashhpd("inspect", str(short), "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False and report["header"] is None
    assert len(report["problems"]) == 1
    assert report["problems"][0].endswith("program headers end past the 300 bytes of the file")


def test_inspect_truncated_header_problem_is_stated_once(header, tmp_path):
    short = tmp_path / "short"
    short.write_bytes(header.read_bytes()[:300])
    report = json.loads(crashhpd("inspect", str(short), "--json").stdout)
    assert report["problems"] == ["program headers end past the 300 bytes of the file"]


def test_inspect_missing_file(tmp_path):
    assert_one_line_error(crashhpd("inspect", str(tmp_path / "nope")), 2, f"{tmp_path}/nope: No such file or directory")


def test_inspect_a_directory(tmp_path):
    assert_one_line_error(crashhpd("inspect", str(tmp_path)), 2, f"{tmp_path}: Is a directory")


def test_generate_root_without_iomem(tmp_path):
    assert_one_line_error(crashhpd("generate", "--root", str(tmp_path), "-o", str(tmp_path / "out")), 2,
                          f"{tmp_path}/proc/iomem: missing")


def test_generate_malformed_iomem_names_file_and_line(tmp_path):
    root = make_tree(tmp_path / "root", "00001000-0009ffff : System RAM\n00100000-bfffffff System RAM\n")
    assert_one_line_error(crashhpd("generate", "--root", str(root), "-o", str(tmp_path / "out")), 2,
                          f"{root}/proc/iomem:2: not 'START-END : NAME': '00100000-bfffffff System RAM'")


def test_generate_output_in_a_missing_directory(virtio, tmp_path):
    out = tmp_path / "no" / "such" / "dir"
    assert_one_line_error(crashhpd("generate", "--root", str(virtio), "-o", str(out)), 2,
                          f"{out}: No such file or directory")


def test_generate_all_zero_iomem_is_refused_as_a_non_root_view(tmp_path):
    text = "00000000-00000000 : Reserved\n00000000-00000000 : System RAM\n  00000000-00000000 : Kernel code\n"
    root = make_tree(tmp_path / "root", text)
    assert_one_line_error(crashhpd("generate", "--root", str(root)), 2, "every address reads 0", "run as root")


@pytest.mark.root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop to nobody")
def test_generate_as_nobody_on_the_real_proc_is_refused():
    """The kernel shows every /proc/iomem address as 0 to a reader without CAP_SYS_ADMIN."""
    crashhpd_cmd = nobody.staged().crashhpd  # the checkout may be where nobody cannot enter (/root)
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", crashhpd_cmd, "generate"],
                            capture_output=True, timeout=60)
    assert_one_line_error(result, 2, "/proc/iomem: every address reads 0", "run as root")


@pytest.mark.parametrize(
    "args",
    [[], ["generate", "--layout", "bogus"], ["generate", "--cpus", "all"], ["inspect"], ["frobnicate"],
     ["generate", "--page-offset", "zz"]],
    ids=["nothing", "layout", "cpus", "inspect-no-file", "command", "page-offset"],
)
def test_usage_errors_exit_2_without_traceback(args):
    result = crashhpd(*args)
    assert result.returncode == 2
    stderr = result.stderr.decode()
    last = stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr and last.startswith("crashhpd") and ": error: " in last


def test_generate_iomem_address_beyond_64_bits_is_one_line(tmp_path):
    iomem = "00100000-3fffffff : System RAM\n10000000000000000-10000000000000fff : System RAM\n"
    root = make_tree(tmp_path / "root", iomem)
    assert_one_line_error(crashhpd("generate", "--root", str(root), "-o", str(tmp_path / "out")), 2, "proc/iomem:2")


def test_generate_negative_crash_notes_is_one_line(tmp_path):
    root = fixture_tree(tmp_path / "root", "virtio-mem", extra={"sys/devices/system/cpu/cpu0/crash_notes": "-1000\n"})
    assert_one_line_error(crashhpd("generate", "--root", str(root), "-o", str(tmp_path / "out")), 2, "crash_notes")


def test_generate_page_offset_out_of_range_is_one_line(virtio, tmp_path):
    assert_one_line_error(crashhpd("generate", "--root", str(virtio), "--page-offset", "0xffffffffffffffff",
                                   "-o", str(tmp_path / "out")), 2, "page")


def test_a_reader_that_leaves_early_costs_no_message(tmp_path):
    # 4000 RAM ranges: inspect prints far more than a pipe buffer, so it writes into a closed pipe
    iomem = "".join(f"{(2 * n + 1) << 20:x}-{((2 * n + 2) << 20) - 1:x} : System RAM\n" for n in range(4000))
    root = make_tree(tmp_path / "root", iomem)
    header = tmp_path / "header"
    assert crashhpd("generate", "--root", str(root), "-o", str(header)).returncode == 0
    reader = subprocess.Popen(["head", "-c", "100"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    result = crashhpd("inspect", str(header), stdout=reader.stdin)
    reader.stdin.close()
    reader.wait()
    assert result.returncode == 2
    assert result.stderr == b"", result.stderr.decode()


def test_invalid_config_exits_78_naming_the_key(tmp_path):
    bad = write_config(tmp_path / "bad.toml", {"debounce": {"max_delay_ms": "soon"}, "bogus": 1})
    proc = subprocess.run([CRASHHPD, "run", "--config", str(bad)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 78
    assert "debounce.max_delay_ms" in proc.stderr and "bogus" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unknown_direct_map_base_is_said_not_silently_assumed(virtio, tmp_path):
    """Without a readable /proc/kcore the base is the non-KASLR default, which is wrong under KASLR."""
    result = crashhpd("generate", "--root", str(virtio), "-o", str(tmp_path / "h"))
    assert result.returncode == 0 and "the direct-map base is unknown" in result.stderr.decode()
    told = crashhpd("generate", "--root", str(virtio), "--page-offset", "0xffff9a0000000000", "-o", str(tmp_path / "h"))
    assert "direct-map base is unknown" not in told.stderr.decode()
    inspected = crashhpd("inspect", str(tmp_path / "h"), "--root", str(virtio), "--json")
    assert json.loads(inspected.stdout)["direct_map_base_known"] is False
    assert "cannot be checked" in inspected.stderr.decode()


def test_generate_writes_its_file_0600_whatever_was_there(virtio, tmp_path):
    """The header holds the KASLR'd kernel address and the RAM map: as secret as /proc/kallsyms."""
    out = tmp_path / "header"
    out.write_bytes(b"old")
    out.chmod(0o644)  # the negative control: a file that was readable by all before
    assert crashhpd("generate", "--root", str(virtio), "-o", str(out)).returncode == 0
    assert out.stat().st_mode & 0o777 == 0o600 and out.read_bytes()[:4] == b"\x7fELF"
