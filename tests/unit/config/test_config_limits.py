# SPDX-License-Identifier: GPL-2.0-only
"""A configuration that validates must be usable: no value that starts fine and fails later, no file that hangs.

Each case used to pass validation and then kill the daemon (at start-up, at
the first update, or on SIGHUP), or make loading itself hang or crawl.
"""

import os
import time
from pathlib import Path

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


def test_a_fifo_as_the_config_is_refused_without_blocking(tmp_path):
    path = tmp_path / "crashhpd.toml"
    os.mkfifo(path)
    started = time.monotonic()
    assert problems(path) == [f"{path} is not a regular file; crashhpd refuses to read it"]
    assert time.monotonic() - started < 5


def test_a_huge_value_is_quoted_briefly(tmp_path):
    path = tmp_path / "crashhpd.toml"
    path.write_text(f'backend = "{"x" * 1_000_000}"\n')
    (problem,) = problems(path)
    assert len(problem) < QUOTE_LIMIT + 300 and "(1000002 characters)" in problem


def test_forty_thousand_unknown_keys_are_reported_in_linear_time(tmp_path):
    def seconds(keys: int) -> float:
        path = tmp_path / f"{keys}.toml"
        path.write_text("[monitor]\n" + "".join(f"k{i} = 1\n" for i in range(keys)))
        started = time.monotonic()
        assert len(problems(path)) == keys
        return time.monotonic() - started

    small, large = seconds(4000), seconds(40_000)
    # quadratic, the large file took 28 s here and 100 times the small one; linear it is about 10 times
    assert large < 30 * max(small, 0.01)

