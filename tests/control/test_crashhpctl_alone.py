# SPDX-License-Identifier: GPL-2.0-only
"""crashhpctl run by a Python that has the standard library and crashhpd's own package, nothing else.

A fresh virtualenv without pip and without the system's site packages, the
checkout's package on its PYTHONPATH: pydantic, pyelftools, pyudev and systemd cannot
be imported there, so these tests fail as soon as the client leans on the
daemon's side. The daemon is the real one, from the test virtualenv.
"""

import signal
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from control_env import env  # noqa: F401  (a fixture)
from daemonproc import wait_for
from repo_paths import REPO

from crashhpd.control import contract


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The command that runs crashhpctl with the standard library alone."""
    home = tmp_path_factory.mktemp("bare-venv")
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(home)
    (home / "path").mkdir()
    (home / "path" / "crashhpd").symlink_to(REPO / "crashhpd")  # the package alone: not the checkout's other folders
    return [str(home / "bin" / "python"), "-m", "crashhpd.control.client"]


def run(command: list[str], *args: str) -> subprocess.CompletedProcess:
    path = Path(command[0]).parents[1] / "path"
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=30, cwd="/",
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(path)})


def test_the_bare_python_has_crashhpd_but_none_of_its_dependencies(bare):
    python = [bare[0], "-c"]
    for module in ("pydantic", "elftools", "pyudev", "systemd", "crashhpd.config", "crashhpd.control.handlers"):
        proc = run(python, f"import {module}")
        assert proc.returncode == 1 and "ModuleNotFoundError" in proc.stderr, (module, proc.stderr)
    proc = run(python, "import sys; before = set(sys.modules); import crashhpd.control.client; "
                       "print(sorted({m.split('.')[0] for m in set(sys.modules) - before} - sys.stdlib_module_names))")
    assert (proc.returncode, proc.stdout) == (0, "['crashhpd']\n"), proc.stderr


def test_help_and_a_missing_daemon_need_no_dependency(bare, tmp_path):
    proc = run(bare, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: crashhpctl ") and proc.stderr == ""
    proc = run(bare, "--socket", str(tmp_path / "none.sock"), "status")
    assert proc.returncode == contract.EXIT_UNREACHABLE and proc.stderr.count("\n") == 1


@pytest.mark.root
def test_the_bare_crashhpctl_talks_to_a_real_daemon(bare, env):
    d = env.start()
    proc = run(bare, "--socket", str(env.socket), "status")
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr  # answered: the sandbox is NOT protected
    rows = {line[:15].strip(): line[15:] for line in proc.stdout.splitlines() if line[0] != " "}
    assert rows["crashhpd"].startswith(f"0.1.0, pid {d.proc.pid}, up ")
    assert (rows["generation"], rows["CPUs"], rows["RAM"]) == ("1, in sync", "4", "7 ranges, 4.34 GiB")
    proc = run(bare, "--socket", str(env.socket), "header")
    assert proc.returncode == 0 and "13 program headers: 5 notes, 7 RAM ranges (4.34 GiB)" in proc.stdout
    assert proc.stdout == subprocess.run([str(Path(sys.executable).with_name("crashhpctl")), "--socket",
                                          str(env.socket), "header"], capture_output=True, text=True).stdout
    proc = run(bare, "--socket", str(env.socket), "reconcile")
    assert proc.returncode == 0 and proc.stdout.startswith("nothing to apply: generation 1 already matches")


@pytest.mark.root
def test_a_bad_drop_in_the_daemon_refused_is_one_warning_and_the_daemon_is_still_reached(bare, env):
    d = env.start()
    main = env.config()  # what the daemon runs with: [control] socket is env.socket
    dropins = main.with_name(main.name + contract.DROPIN_SUFFIX)
    dropins.mkdir()
    (dropins / "50-typo.toml").write_text("[control\nsocket = '/run/elsewhere.sock'\n")
    (dropins / "60-number.toml").write_text("[control]\nsocket = 5\n")
    d.signal(signal.SIGHUP)
    wait_for(lambda: "config not reloaded" in d.stderr(), 10, "the daemon to refuse the drop-ins")

    proc = run(bare, "--config", str(main), "status")
    assert proc.returncode == 1 and "1, in sync" in proc.stdout  # reached; 1: the sandbox is NOT protected
    warning, = proc.stderr.splitlines()
    assert warning.startswith(f"crashhpctl: warning: {dropins / '50-typo.toml'}: not a TOML file: ")
    assert f"; {dropins / '60-number.toml'}: control.socket: must be an absolute path (got 5); " in warning
    assert warning.endswith(f"; using {env.socket}")
