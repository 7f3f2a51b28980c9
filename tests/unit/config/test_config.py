# SPDX-License-Identifier: GPL-2.0-only
"""Configuration: real TOML files in a temporary directory, loaded the way the daemon loads them."""

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError
from repo_paths import REPO

from crashhpd import config
from crashhpd.config import Config, load
from crashhpd.errors import ConfigError

SHIPPED = REPO / "etc" / "crashhpd.toml"
SETTING = re.compile(r"^#(?=[a-z_]+ = )")  # `#key = value`: a commented-out setting, not prose


def dotted_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every leaf key of the configuration, as `table.key`."""
    keys = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys += dotted_keys(field.annotation, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def toml_setting(key: str, value: str) -> str:
    table, _, name = key.rpartition(".")
    return f"[{table}]\n{name} = {value}\n" if table else f"{name} = {value}\n"


def uncommented_text() -> str:
    """The shipped file with every setting switched on."""
    return "".join(SETTING.sub("", line) for line in SHIPPED.read_text().splitlines(keepends=True))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(path: Path | None, root_override: str | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(None if path is None else str(path), root_override)
    assert str(info.value) == "; ".join(info.value.problems)
    return info.value.problems


@pytest.fixture
def main(tmp_path: Path) -> Path:
    return tmp_path / "crashhpd.toml"


def dropin(main: Path, name: str, text: str) -> Path:
    return write(Path(f"{main}.d") / name, text)


# --- defaults ---------------------------------------------------------------------------


def test_defaults_are_the_documented_ones():
    c = Config()
    # "auto": the package protects a host from its first start, with no configuration file at all
    assert (c.root, c.backend, c.layout, c.cpus, c.page_offset) == ("/", "auto", None, "online", None)
    assert (c.monitor.source, c.monitor.receive_buffer_bytes) == ("auto", 8388608)
    assert (c.debounce.quiet_ms, c.debounce.max_delay_ms) == (200, 2000)
    assert (c.sandbox.state_dir, c.sandbox.max_cpus, c.sandbox.max_memory_ranges) == ("/var/lib/crashhpd", None, 8192)
    assert (c.control.socket, c.control.group, c.control.timeout_ms, c.control.max_request_bytes) == (
        "/run/crashhpd/control.sock", "root", 2000, 65536)
    assert c.metrics.textfile_dir is None
    assert c.log.level == "info"
    k = c.kexec
    assert (k.binary, k.kernel, k.initrd, k.cmdline, k.append) == (None, None, None, None, None)
    assert (k.file_load, k.timeout_s, k.dry_run, k.hotplug) == (False, 60, False, False)
    assert c.sources == ()


def test_defaults_pass_their_own_validation():
    assert Config.model_validate(Config().model_dump()) == Config()


def test_config_is_frozen():
    c = Config()
    with pytest.raises(ValidationError):
        c.debounce.quiet_ms = 1  # type: ignore[misc]
    with pytest.raises(ValidationError):
        c.backend = "kexec"  # type: ignore[misc]


# --- files and drop-ins -------------------------------------------------------------------


def test_main_file_and_dropins_merge_in_lexical_order(main: Path):
    write(main, '[debounce]\nquiet_ms = 100\nmax_delay_ms = 5000\n[log]\nlevel = "debug"\n')
    a = dropin(main, "10-a.toml", '[debounce]\nquiet_ms = 250\n[monitor]\nsource = "kernel"\n')
    b = dropin(main, "20-b.toml", "[debounce]\nquiet_ms = 300\n")
    c = dropin(main, "9-c.toml", "[debounce]\nquiet_ms = 400\n")  # "9-" sorts after "20-": lexical, not numeric
    for ignored in (".hidden.toml", "30-x.toml.dpkg-old", "40-notes.txt"):
        dropin(main, ignored, "this is not TOML")
    cfg = load(str(main))
    assert cfg.sources == (str(main), str(a), str(b), str(c))
    assert cfg.debounce.quiet_ms == 400
    assert cfg.debounce.max_delay_ms == 5000  # the table was merged, not replaced
    assert cfg.monitor.source == "kernel"
    assert cfg.monitor.receive_buffer_bytes == 8388608
    assert cfg.log.level == "debug"


def test_a_later_file_fixes_an_earlier_bad_value(main: Path):
    write(main, "[debounce]\nquiet_ms = 0\n")
    dropin(main, "50-fix.toml", "[debounce]\nquiet_ms = 150\n")
    assert load(str(main)).debounce.quiet_ms == 150


def test_config_option_reads_that_file_and_its_own_dropins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # a default file with drop-ins that --config must ignore; the host's own /etc is left alone
    default = write(tmp_path / "etc" / "crashhpd.toml", 'backend = "kexec"\n')
    dropin(default, "10-default.toml", "[sandbox]\nmax_cpus = 4\n")
    monkeypatch.setattr(config, "DEFAULT_PATH", str(default))
    other = write(tmp_path / "other.toml", 'cpus = "possible"\n')
    extra = dropin(other, "10-other.toml", "[sandbox]\nmax_memory_ranges = 16\n")
    cfg = load(str(other))
    assert cfg.sources == (str(other), str(extra))
    sandbox = cfg.sandbox
    assert (cfg.backend, cfg.cpus, sandbox.max_cpus, sandbox.max_memory_ranges) == ("auto", "possible", None, 16)


def test_missing_default_file_means_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # the real /etc/crashhpd belongs to the host; point the default path at an empty directory instead
    monkeypatch.setattr(config, "DEFAULT_PATH", str(tmp_path / "crashhpd.toml"))
    cfg = load()
    assert cfg == Config()
    assert cfg.sources == ()


def test_dropins_apply_even_without_the_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # a package may ship a drop-in on a host whose admin never wrote the main file
    default = tmp_path / "crashhpd.toml"
    monkeypatch.setattr(config, "DEFAULT_PATH", str(default))
    snippet = dropin(default, "50-pkg.toml", '[log]\nlevel = "warning"\n')
    cfg = load()
    assert cfg.log.level == "warning"
    assert cfg.sources == (str(snippet),)


def test_missing_explicit_file_is_an_error_naming_it(main: Path):
    assert problems(main) == [f"{main}: No such file or directory"]


def test_unreadable_files_and_directories_are_named(main: Path):
    main.mkdir()
    assert problems(main) == [f"{main}: Is a directory"]
    other = write(main.parent / "other.toml", "")
    write(Path(f"{other}.d"), "")
    assert problems(other) == [f"{other}.d: Not a directory"]


# --- invalid values: each key, with the file that set it ------------------------------------

BAD = {
    "root": '"relative/root"',
    "backend": '"kexec-tools"',
    "layout": '"kexec"',
    "cpus": '"notes"',
    "page_offset": "0x1000",
    "monitor.source": '"netlink"',
    "monitor.receive_buffer_bytes": "65535",
    "debounce.quiet_ms": "0",
    "debounce.pace": '"sometimes"',
    "debounce.max_delay_ms": "-1",
    "state_dir": '"var/lib/crashhpd"',
    "sandbox.state_dir": '"var/lib/crashhpd"',
    "sandbox.max_cpus": "0",
    "sandbox.max_memory_ranges": "0",
    "control.socket": '"control.sock"',
    "control.group": '"wheel users"',
    "control.timeout_ms": "0",
    "control.max_request_bytes": "0",
    "metrics.textfile_dir": '"textfile"',
    "log.level": '"verbose"',
    "udev.takeover": '"yes"',
    "kernel.recover": '"yes"',
    "udev.rules": '"udev"',
    "udev.runtime_dir": '"run/udev/rules.d"',
    "kexec.binary": '"sbin/kexec"',
    "kexec.kernel": '"vmlinuz"',
    "kexec.initrd": "42",
    "kexec.cmdline": '["quiet"]',
    "kexec.append": "true",
    "kexec.file_load": '"yes"',
    "kexec.timeout_s": "0",
    "kexec.dry_run": "1",
    "kexec.hotplug": '"false"',
    "kexec.complete_cmdline": '"yes"',
}


def test_every_key_has_a_bad_value_case():
    assert sorted(BAD) == sorted(dotted_keys())


@pytest.mark.parametrize("key", sorted(BAD))
def test_bad_value_names_the_key_and_the_file_that_set_it(main: Path, key: str):
    write(main, uncommented_text())  # every key set to a good value first: the blame must move to the drop-in
    bad = dropin(main, "50-bad.toml", toml_setting(key, BAD[key]))
    [problem] = problems(main)
    assert problem.startswith(f"{bad}: {key}: ")


@pytest.mark.parametrize(("key", "value", "why"), [
    ("debounce.quiet_ms", '"200"', "Input should be a valid integer"),
    ("debounce.quiet_ms", "200.0", "Input should be a valid integer"),
    ("sandbox.max_cpus", "true", "Input should be a valid integer"),
    ("kexec.timeout_s", "inf", "Input should be a finite number"),
    ("page_offset", "0x1_0000_0000_0000_0000", "must be a kernel address"),
    ("monitor", "5", "must be a table"),
])
def test_values_are_not_coerced_across_types(main: Path, key: str, value: str, why: str):
    write(main, toml_setting(key, value))
    [problem] = problems(main)
    assert problem.startswith(f"{main}: {key}: {why}")


def test_max_delay_below_quiet_names_both_keys_and_both_files(main: Path):
    write(main, "[debounce]\nquiet_ms = 5000\n")
    late = dropin(main, "10-delay.toml", "[debounce]\nmax_delay_ms = 1000\n")
    assert problems(main) == [
        (f"{late}: debounce.max_delay_ms: max_delay_ms (1000) must be at least quiet_ms (5000)"
         f" (debounce.quiet_ms from {main})")]


def test_quiet_above_the_default_max_delay_says_the_other_is_the_default(main: Path):
    write(main, "[debounce]\nquiet_ms = 5000\n")
    assert problems(main) == [
        (f"{main}: debounce.quiet_ms: max_delay_ms (2000) must be at least quiet_ms (5000)"
         " (debounce.max_delay_ms from the default)")]


def test_segment_too_large_for_elf_names_both_keys(main: Path):
    write(main, "[sandbox]\nmax_cpus = 57341\n")  # 2 + 57341 + 8192 = 65535 > 65534
    [problem] = problems(main)
    assert problem.startswith(f"{main}: sandbox.max_cpus: ")
    assert "max_memory_ranges (8192)" in problem and "sandbox.max_memory_ranges from the default" in problem
    write(main, "[sandbox]\nmax_cpus = 57340\n")
    assert load(str(main)).sandbox.max_cpus == 57340


def test_state_dir_defaults_to_var_lib_crashhpd_in_both_spellings():
    assert (Config().state_dir, Config().sandbox.state_dir) == ("/var/lib/crashhpd", "/var/lib/crashhpd")


@pytest.mark.parametrize("text", [
    'state_dir = "/srv/crashhpd"\n',
    '[sandbox]\nstate_dir = "/srv/crashhpd"\n',  # the older spelling
    'state_dir = "/srv/crashhpd"\n[sandbox]\nstate_dir = "/srv/crashhpd"\n',
])
def test_state_dir_set_in_either_spelling_is_the_one_in_force(main: Path, text: str):
    cfg = load(str(write(main, text)))
    assert (cfg.state_dir, cfg.sandbox.state_dir) == ("/srv/crashhpd", "/srv/crashhpd")


@pytest.mark.parametrize("in_one_file", [False, True])
def test_state_dir_and_its_older_spelling_differing_name_both_keys_and_their_files(main: Path, in_one_file: bool):
    top, older = 'state_dir = "/srv/new"\n', '[sandbox]\nstate_dir = "/srv/old"\n'
    write(main, top + older if in_one_file else top)
    where = "" if in_one_file else f" (sandbox.state_dir from {dropin(main, '10-old.toml', older)})"
    assert problems(main) == [f"{main}: state_dir: state_dir (/srv/new) and sandbox.state_dir (/srv/old), "
                              f"its older spelling, differ; set only state_dir{where}"]


def test_every_problem_in_every_file_is_reported(main: Path):
    write(main, 'backend = "nope"\n[debounce]\nquiet_ms = -5\n[control]\nsocket = "x"\n')
    late = dropin(main, "20-late.toml", '[log]\nlevel = "loud"\n[kexec]\ntimeout_s = -1\n')
    found = problems(main)
    assert [p.split(": ")[:2] for p in found] == [
        [str(main), "backend"], [str(main), "debounce.quiet_ms"], [str(main), "control.socket"],
        [str(late), "log.level"], [str(late), "kexec.timeout_s"]]


@pytest.mark.parametrize(("text", "key"), [
    ("bogus = 1\n", "bogus"),
    ("[bogus]\nx = 1\n", "bogus"),
    ("[debounce]\nquiet = 100\n", "debounce.quiet"),
    ("[kexec.extra]\nx = 1\n", "kexec.extra"),
])
def test_unknown_keys_are_rejected_and_named(main: Path, text: str, key: str):
    bad = dropin(main, "10-typo.toml", text)
    write(main, "")
    [problem] = problems(main)
    assert problem.startswith(f"{bad}: {key}: unknown key")


def test_unknown_key_suggests_the_close_one(main: Path):
    write(main, "[monitor]\nrecieve_buffer_bytes = 1048576\n")
    assert problems(main) == [
        f"{main}: monitor.recieve_buffer_bytes: unknown key (did you mean monitor.receive_buffer_bytes?)"]


def test_an_unknown_table_filled_by_two_files_names_both(main: Path):
    write(main, "[bogus]\na = 1\n")
    late = dropin(main, "10-more.toml", "[bogus]\nb = 2\n")
    assert problems(main) == [f"{main}, {late}: bogus: unknown key"]


def test_a_table_replaced_by_a_value_blames_the_later_file(main: Path):
    write(main, '[monitor]\nsource = "udev"\n')
    late = dropin(main, "10-x.toml", "monitor = 5\n")
    assert problems(main) == [f"{late}: monitor: must be a table (got 5)"]


def test_syntax_error_names_the_file_and_line_and_other_files_are_still_checked(main: Path):
    write(main, "[debounce]\nquiet_ms = 100\nmax_delay_ms =\n")
    bad = dropin(main, "10-bad.toml", '[log]\nlevel = "chatty"\n')
    broken, invalid = problems(main)
    assert broken.startswith(f"{main}: ") and "line 3" in broken
    assert invalid.startswith(f"{bad}: log.level: ")


def test_text_that_is_not_utf8_names_the_file(main: Path):
    main.write_bytes(b'[log]\nlevel = "\xff"\n')
    assert problems(main) == [f"{main}: not UTF-8 text (byte 15)"]


# --- --root ---------------------------------------------------------------------------------


def test_root_override_wins_over_the_file(main: Path, tmp_path: Path):
    write(main, 'root = "/srv/tree"\n')
    assert load(str(main)).root == "/srv/tree"
    assert load(str(main), root_override=str(tmp_path)).root == str(tmp_path)


def test_bad_root_override_is_blamed_on_the_option(main: Path):
    write(main, 'root = "/srv/tree"\n')
    assert problems(main, root_override="tree") == ["--root: root: must be an absolute path (got 'tree')"]


# --- the shipped file -----------------------------------------------------------------------


def test_shipped_file_means_exactly_the_defaults():
    cfg = load(str(SHIPPED))
    assert cfg.model_dump() == Config().model_dump()
    assert cfg.sources == (str(SHIPPED),)


def flatten(table: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in table.items():
        out |= flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value}
    return out


def test_shipped_file_documents_every_key_with_its_default_or_a_valid_example():
    documented = flatten(tomllib.loads(uncommented_text()))
    assert sorted(documented) == sorted(dotted_keys())
    defaults = flatten(Config().model_dump())
    assert {k: v for k, v in documented.items() if defaults[k] is not None} == \
        {k: v for k, v in defaults.items() if v is not None}
    Config.model_validate(tomllib.loads(uncommented_text()))  # the examples of unset keys are valid values


def test_shipped_file_explains_every_key():
    lines = SHIPPED.read_text().splitlines()
    for i, line in enumerate(lines):
        if SETTING.match(line):
            assert lines[i - 1].startswith("# "), f"no explanation above {line!r}"
