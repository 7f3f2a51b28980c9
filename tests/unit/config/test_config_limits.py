# SPDX-License-Identifier: GPL-2.0-only
"""A configuration that validates must be usable: no value that starts fine and fails later, no file that hangs.

Each case used to pass validation and then kill the daemon (at start-up, at
the first update, or on SIGHUP), or make loading itself hang or crawl.
"""

import os
import sys
from pathlib import Path
from types import FrameType

import pytest

from crashhpd import config
from crashhpd.errors import QUOTE_LIMIT, ConfigError


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as err:
        config.load(str(path))
    return err.value.problems


@pytest.mark.parametrize(("table", "key", "value"), [
    (None, "root", '"/srv\\u0000/root"'),
    ("control", "socket", '"/run/crashhpd/\\u0000.sock"'),
    ("kexec", "cmdline", '"quiet\\u0000 init=/bin/sh"'),
    ("kexec", "binary", '"kexec\\u0000"'),
])
def test_a_nul_in_a_string_is_refused(tmp_path, table, key, value):
    path = tmp_path / "crashhpd.toml"
    path.write_text((f"[{table}]\n" if table else "") + f"{key} = {value}\n")
    (problem,) = problems(path)
    assert f"{(table + '.') if table else ''}{key}: must not contain a NUL character" in problem


@pytest.mark.parametrize(("table", "key", "value"), [
    ("debounce", "quiet_ms", 10**12),  # select() refused a timeout that large: OverflowError at the first event
    ("debounce", "max_delay_ms", 10**12),
    ("control", "timeout_ms", 10**15),
    ("control", "max_request_bytes", 10**12),
    ("kexec", "timeout_s", 1e12),
])
def test_time_and_size_values_are_bounded(tmp_path, table, key, value):
    path = tmp_path / "crashhpd.toml"
    path.write_text(f"[{table}]\n{key} = {value}\n")
    assert any(f"{table}.{key}: Input should be less than or equal to" in p for p in problems(path))


def test_the_bounds_themselves_are_accepted(tmp_path):
    path = tmp_path / "crashhpd.toml"
    path.write_text(f"[debounce]\nquiet_ms = {config.MAX_DELAY_MS}\nmax_delay_ms = {config.MAX_DELAY_MS}\n"
                    f"[kexec]\ntimeout_s = {config.MAX_KEXEC_TIMEOUT_S}\n")
    cfg = config.load(str(path))
    assert cfg.debounce.max_delay_ms == config.MAX_DELAY_MS and cfg.kexec.timeout_s == config.MAX_KEXEC_TIMEOUT_S


def test_deeply_nested_toml_is_a_config_error_not_a_recursion_error(tmp_path):
    path = tmp_path / "crashhpd.toml"
    path.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert problems(path) == [f"{path}: arrays or tables nested too deeply"]


def test_a_file_over_a_mebibyte_is_refused_unread(tmp_path):
    path = tmp_path / "crashhpd.toml"
    path.write_text("# padding\n" * 200_000)
    assert problems(path) == [f"{path} is larger than {config.MAX_FILE_BYTES} bytes; crashhpd refuses to read it"]


def test_a_fifo_as_the_config_is_refused_without_blocking(tmp_path, deadline):
    path = tmp_path / "crashhpd.toml"
    os.mkfifo(path)  # opened for reading, it would block until a writer came: `deadline` fails the test then
    assert problems(path) == [f"{path} is not a regular file; crashhpd refuses to read it"]


def test_a_huge_value_is_quoted_briefly(tmp_path):
    path = tmp_path / "crashhpd.toml"
    path.write_text(f'backend = "{"x" * 1_000_000}"\n')
    (problem,) = problems(path)
    assert len(problem) < QUOTE_LIMIT + 300 and "(1000002 characters)" in problem


def unknown_keys(tmp_path: Path, keys: int) -> Path:
    path = tmp_path / f"{keys}.toml"
    path.write_text("[monitor]\n" + "".join(f"k{i} = 1\n" for i in range(keys)))
    return path


def lines_run(path: Path) -> int:
    """Lines of crashhpd/config.py run while loading `path`: its work, counted the same on any machine."""
    count = 0

    def line(frame: FrameType, event: str, arg: object) -> object:
        nonlocal count
        count += event == "line"
        return line

    def call(frame: FrameType, event: str, arg: object) -> object:
        return line if frame.f_code.co_filename == config.__file__ else None

    before = sys.gettrace()
    sys.settrace(call)
    try:
        problems(path)
    finally:
        sys.settrace(before)
    return count


def test_forty_thousand_unknown_keys_are_reported_in_linear_time(tmp_path):
    """Quadratic, merging rescanned every origin per key: 40,000 keys took 28 s, 100 times the work of 4,000.
    The work is counted here (ten times the keys, about ten times the lines run); the time is
    tests/bench/config_unknown_keys.py's."""
    assert len(problems(unknown_keys(tmp_path, 40_000))) == 40_000
    small, large = lines_run(unknown_keys(tmp_path, 1000)), lines_run(unknown_keys(tmp_path, 10_000))
    assert large < 20 * small, (small, large)


def test_deep_dotted_keys_are_a_config_error_not_a_recursion_error(tmp_path):
    """tomllib builds 2000 nested tables from one dotted key without recursing; merging them would recurse."""
    path = tmp_path / "crashhpd.toml"
    path.write_text("a." * 2000 + "b = 1\n")
    assert problems(path) == [f"{path}: arrays or tables nested too deeply (more than {config.MAX_DEPTH} levels)"]
    path.write_text("a." * (config.MAX_DEPTH - 1) + "b = 1\n")  # as deep as allowed: an unknown key, no more
    assert problems(path) == [f"{path}: a: unknown key"]


def test_the_files_together_are_bounded_not_only_each(tmp_path):
    path = tmp_path / "crashhpd.toml"
    path.write_text('backend = "sandbox"\n')
    dropins = tmp_path / "crashhpd.toml.d"
    dropins.mkdir()
    padding = "# padding\n" * (config.MAX_FILE_BYTES // 10 // 3)  # each file a third of the bound
    for n in range(5):
        (dropins / f"{n}.toml").write_text(padding)
    found = problems(path)
    assert found == [f"{dropins / '2.toml'}: the configuration files together exceed {config.MAX_TOTAL_BYTES} "
                     "bytes; crashhpd refuses to read further"]
    for n in range(2, 5):  # negative control: within the bound, the same files load
        (dropins / f"{n}.toml").unlink()
    assert config.load(str(path)).backend == "sandbox"
