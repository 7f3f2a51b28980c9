# SPDX-License-Identifier: GPL-2.0-only
"""The man pages debian/manpage.py writes, read without a package build: every exit status the code can return
and every configuration key is on its page, and man renders each page without a warning.

The statuses are read from the code (its EXIT_*/EX_* constants and the integers its functions return),
never restated here, so a new status without its line on the page fails.
"""

import ast
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
from pydantic import BaseModel
from repo_paths import REPO

from crashhpd import cli, wiring
from crashhpd.config import DROPIN_SUFFIX, Config
from crashhpd.control import client, contract


def load_manpage() -> ModuleType:
    spec = importlib.util.spec_from_file_location("manpage", REPO / "debian" / "manpage.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


manpage = load_manpage()


def statuses(module: ModuleType, prefix: str) -> set[int]:
    """The exit statuses `module` defines: its constants named PREFIX*, and the integers its functions return."""
    named = {value for name, value in vars(module).items() if name.startswith(prefix) and isinstance(value, int)}
    tree = ast.parse(Path(module.__file__ or "").read_text())
    returned = {node.value.value for node in ast.walk(tree) if isinstance(node, ast.Return)
                and isinstance(node.value, ast.Constant) and type(node.value.value) is int}
    return named | returned


def section(page: str, title: str, level: str = ".SH") -> str:
    """The roff between `level title` and the next heading of that level or above."""
    start = page.index(f"{level} {title}\n") + len(f"{level} {title}\n")
    ends = [page.find(f"\n{heading} ", start) for heading in (".SH", level)]
    return page[start:min((e for e in ends if e >= 0), default=len(page))]


def listed(text: str) -> set[int]:
    return {int(code) for code in re.findall(r"^\.TP\n\\fB(\d+)\\fR$", text, re.M)}


def test_crashhpd_lists_every_exit_status_of_run_and_of_generate_and_inspect() -> None:
    page = manpage.page("crashhpd")
    everything = section(page, "EXIT STATUS")
    run = wiring.EX_CONFIG, wiring.EX_UNAVAILABLE, wiring.EX_FATAL
    assert statuses(wiring, "EX_") - listed(section(everything, "run", ".SS")) == set()
    assert set(run) <= statuses(wiring, "EX_")  # the reader finds the constants it is meant to
    assert statuses(cli, "EXIT_") - listed(section(everything, "generate, inspect", ".SS")) == set()
    assert listed(everything) == statuses(wiring, "EX_") | statuses(cli, "EXIT_")  # and nothing the code lacks


def test_crashhpctl_lists_every_exit_status_of_the_contract() -> None:
    page = manpage.page("crashhpctl")
    defined = statuses(contract, "EXIT_") | statuses(client, "EXIT_")
    assert {contract.EXIT_OK, contract.EXIT_FAILED, contract.EXIT_USAGE, contract.EXIT_UNREACHABLE} <= defined
    assert listed(section(page, "EXIT STATUS")) == defined


def toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f'"{value}"' if isinstance(value, str) else str(value)


def tables() -> list[tuple[str, type[BaseModel]]]:
    """("Top level", Config), then ("[name]", model) for each table of the configuration."""
    found: list[tuple[str, type[BaseModel]]] = [("Top level", Config)]
    for name, field in Config.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found.append((f"[{name}]", field.annotation))
    return found


def test_the_config_page_has_every_key_with_its_default() -> None:
    keys = section(manpage.page("crashhpd.toml"), "KEYS")
    for title, model in tables():
        text = section(keys, title, ".SS")
        for key, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                continue
            default = "unset by default" if field.default is None else f"default {toml(field.default)}"
            (entry,) = re.findall(rf"^\\fB{key}\\fR \((.*)\)$", text, re.M)
            assert entry.replace("\\-", "-").endswith(f"; {default}"), (title, key, entry)


def test_the_config_page_says_the_drop_in_rule_and_the_exit_status_of_a_bad_file() -> None:
    page = manpage.page("crashhpd.toml").replace("\\-", "-")
    assert f"crashhpd.toml{DROPIN_SUFFIX}/*.toml" in section(page, "SYNOPSIS")
    description = " ".join(section(page, "DESCRIPTION").split())
    assert "in lexical order" in description and "a later file wins" in description
    assert f"with exit status {wiring.EX_CONFIG}" in description


def test_a_key_the_shipped_file_does_not_explain_stops_the_build() -> None:
    comments = manpage.shipped_comments((REPO / "etc" / "crashhpd.toml").read_text())
    del comments[("kexec", "append")]
    with pytest.raises(SystemExit, match="does not explain kexec.append"):
        manpage.key_entries(Config.model_fields["kexec"].annotation, ("kexec",), comments)


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")
@pytest.mark.parametrize(("name", "section_number"), [("crashhpd", 8), ("crashhpctl", 8), ("crashhpd.toml", 5)])
def test_each_page_renders_without_warnings(tmp_path: Path, name: str, section_number: int) -> None:
    page = tmp_path / f"{name}.{section_number}"
    page.write_text(manpage.page(name))
    result = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": ""})
    assert (result.returncode, result.stderr) == (0, "")
    assert f"{name.upper()}({section_number})" in result.stdout and "SEE ALSO" in result.stdout
