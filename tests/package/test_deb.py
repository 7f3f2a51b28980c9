# SPDX-License-Identifier: GPL-2.0-only
"""The Debian package: `make deb` builds it, lintian accepts it, and what it installs runs.

The package is never installed on this host: its postinst would enable and start a
service. It is built once per session and unpacked with dpkg-deb; its commands and
its maintainer scripts then run where dpkg would put them, in a private mount
namespace whose /usr and /etc are the unpacked tree laid over this host's, and
whose /run and /var/lib are empty. A real `apt install` runs in a fresh Debian 12 and
a fresh Debian 13 that mmdebstrap builds from the host's mirrors (the last section),
each building the package for itself as the README says, and installs that run under
systemd are the e2e guests' work.
"""

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from layouts import fixture_tree
from repo_paths import REPO, SUPPORT

from crashhpd import cli
from crashhpd.control import client

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
VENV = "/usr/lib/crashhpd"
SITE = f"{VENV}/lib/python3.11/site-packages"
FROM_DEBIAN = {"elftools": "python3-pyelftools", "prometheus_client": "python3-prometheus-client",
               "pyudev": "python3-pyudev", "systemd": "python3-systemd"}
DEV_CRASHHPD = Path(sys.executable).with_name("crashhpd")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("make", "dpkg-buildpackage", "lintian", "unshare")),
    reason="needs root, make, dpkg-buildpackage, lintian and unshare (sh .ci/setup installs them)")


@dataclass(frozen=True)
class Build:
    deb: Path
    tmpdir: Path  # TMPDIR of the build, under which the package tree was laid out
    tree: Path  # the package unpacked


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    out = tmp_path_factory.mktemp("deb")
    tmpdir = tmp_path_factory.mktemp("deb-build-tmpdir")
    result = subprocess.run(["make", "-C", str(REPO), "deb", f"DEB_DIR={out}"],
                            env={**os.environ, "TMPDIR": str(tmpdir)}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (deb,) = out.iterdir()
    tree = tmp_path_factory.mktemp("deb-tree")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True, timeout=60)
    return Build(deb, tmpdir, tree)


def test_setup_installs_every_build_dependency() -> None:
    """On each release: the one alternative of `python3-pydantic (>= 2.6) | python3.11` that release has."""
    control = (REPO / "debian" / "control").read_text()
    (build_depends,) = re.findall(r"^Build-Depends:((?:.*\n)(?:[ \t].*\n)*)", control, re.M)
    needed = [{a.split("(")[0].strip() for a in d.split("|")} for d in build_depends.split(",") if d.strip()]
    setup = (REPO / ".ci" / "setup").read_text()
    listed = {w for value in re.findall(r'^build_packages="([^"]*)"', setup, re.M) for w in value.split()}
    per_release = dict(re.findall(r'^    (\w+|\*)\) +build_packages="\$build_packages ([^"]*)"', setup, re.M))
    assert sorted(per_release) == ["*", "bookworm"] and "debhelper" in listed
    for release, extra in per_release.items():
        unmet = [d for d in needed if d != {"debhelper-compat"} and not d & (listed | set(extra.split()))]
        assert unmet == [], release


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], check=True, capture_output=True, text=True, timeout=60).stdout


# --- what make deb builds ------------------------------------------------------------------------

def test_make_deb_builds_the_file_the_readme_names(build: Build) -> None:
    assert build.deb.name == f"crashhpd_{VERSION}_amd64.deb"
    assert f"apt install ./{build.deb.name}" in (REPO / "README.md").read_text()


def test_lintian_finds_no_error_and_no_warning(build: Build) -> None:
    result = subprocess.run(["lintian", "--display-info", "--fail-on", "error,warning", str(build.deb)],
                            capture_output=True, text=True, timeout=300)
    tags = [line for line in result.stdout.splitlines() if re.match(r"[EWI]: ", line)]
    assert (result.returncode, tags) == (0, [])  # an unused override is an I: tag, and fails this too


def test_every_lintian_override_says_why() -> None:
    blocks = [block for name in ("crashhpd", "bookworm")
              for block in (REPO / "debian" / f"{name}.lintian-overrides").read_text().strip().split("\n\n")]
    for block in blocks:
        lines = block.splitlines()
        assert lines[0].startswith("#") and not lines[-1].startswith("#"), block


def listing(build: Build) -> dict[str, str]:
    """`dpkg-deb -c` as path -> link target ('' for anything else)."""
    found = {}
    for line in dpkg_deb("-c", str(build.deb)).splitlines():
        name = line.split(None, 5)[5]
        path, _, target = name.partition(" -> ")
        found[path.removeprefix(".").rstrip("/") or "/"] = target
    return found


def test_the_package_holds_the_commands_unit_config_udev_files_and_man_pages(build: Build) -> None:
    files = listing(build)
    expected = {
        "/usr/bin/crashhpd": "../lib/crashhpd/bin/crashhpd",
        "/usr/bin/crashhpctl": "../lib/crashhpd/bin/crashhpctl",
        f"{VENV}/bin/crashhpd": "", f"{VENV}/bin/crashhpctl": "", f"{VENV}/pyvenv.cfg": "",
        f"{VENV}/bin/python": "python3.11", f"{VENV}/bin/python3.11": "../../../bin/python3.11",
        "/etc/crashhpd/crashhpd.toml": "",
        "/usr/share/doc/crashhpd/udev/README.md": "",
        "/usr/share/doc/crashhpd/copyright": "",
        "/usr/share/man/man8/crashhpd.8.gz": "", "/usr/share/man/man8/crashhpctl.8.gz": "",
        "/usr/share/man/man5/crashhpd.toml.5.gz": "",
    }
    expected |= {f"/usr/share/crashhpd/udev/{p.name}": "" for p in (REPO / "udev").glob("*.rules")}
    assert {path: files.get(path) for path in expected} == expected
    docs = [f"/usr/share/doc/crashhpd/{p.relative_to(REPO)}"
            for p in [REPO / "README.md", *(REPO / "docs").glob("*.md")]]
    assert len(docs) > 1 and [d for d in docs if d not in files and f"{d}.gz" not in files] == []
    units = [p for p in files if p.endswith("/systemd/system/crashhpd.service")]
    assert units in (["/lib/systemd/system/crashhpd.service"], ["/usr/lib/systemd/system/crashhpd.service"])
    assert [p for p in files if p.startswith("/etc/")] == ["/etc/crashhpd", "/etc/crashhpd/crashhpd.toml"]
    assert not [p for p in files if "__pycache__" in p or p.endswith(".pyc")]  # postinst compiles


def test_the_config_is_the_only_conffile(build: Build) -> None:
    assert dpkg_deb("--info", str(build.deb), "conffiles").split() == ["/etc/crashhpd/crashhpd.toml"]


def test_the_shipped_files_are_the_trees(build: Build) -> None:
    (unit,) = build.tree.glob("*lib/systemd/system/crashhpd.service")
    assert unit.read_bytes() == (REPO / "systemd" / "crashhpd.service").read_bytes()
    assert (build.tree / "etc/crashhpd/crashhpd.toml").read_bytes() == (REPO / "etc" / "crashhpd.toml").read_bytes()
    for name in ["README.md"]:
        assert (build.tree / "usr/share/doc/crashhpd/udev" / name).read_bytes() == (REPO / "udev" / name).read_bytes()
    for rules in (REPO / "udev").glob("*.rules"):
        assert (build.tree / "usr/share/crashhpd/udev" / rules.name).read_bytes() == rules.read_bytes()


def test_debian_provides_what_it_has_and_the_virtualenv_the_rest(build: Build) -> None:
    fields = dict(line.split(": ", 1) for line in dpkg_deb("-f", str(build.deb), "Version", "Depends").splitlines())
    assert fields["Version"] == VERSION
    depends = [d.strip() for d in fields["Depends"].split(",")]
    for package in ["python3.11", "python3-pyelftools (>= 0.29)", "python3-prometheus-client (>= 0.16)",
                    "python3-pyudev (>= 0.24)", "python3-systemd (>= 235)"]:
        assert package in depends
    assert not [d for d in depends if d.startswith("python3-pydantic")]  # bookworm's is 1.10
    site = build.tree / SITE.lstrip("/")
    assert sorted(p.name.split("-")[0] for p in site.glob("*.dist-info")) == [
        "annotated_types", "crashhpd", "pydantic", "pydantic_core", "typing_extensions", "typing_inspection"]
    for module in FROM_DEBIAN:
        assert os.path.normpath(f"{SITE}/{os.readlink(site / module)}") == f"/usr/lib/python3/dist-packages/{module}"


def test_nothing_in_the_package_names_the_build_tree(build: Build) -> None:
    traces = [str(build.tmpdir).encode(), str(REPO).encode(), b"/debian/crashhpd/"]
    found = [f"{path.relative_to(build.tree)}: {trace.decode()}"
             for path in build.tree.rglob("*") if path.is_file() and not path.is_symlink()
             for trace in traces if trace in path.read_bytes()]
    assert found == []
    for script in ("crashhpd", "crashhpctl"):
        assert (build.tree / VENV.lstrip("/") / "bin" / script).read_text().startswith(f"#!{VENV}/bin/python\n")
    cfg = (build.tree / VENV.lstrip("/") / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false\n" in cfg and f"-m venv {VENV}\n" in cfg


def options_of(parser: argparse.ArgumentParser) -> list[str]:
    """Every option string and subcommand name of an argparse parser, its subcommands' included."""
    found = []
    for action in parser._actions:
        found += action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [name, *options_of(sub)]
    return found


@pytest.mark.parametrize(("name", "parser"), [("crashhpd", cli._parser), ("crashhpctl", client._parser)])
def test_each_man_page_has_every_option_and_renders_without_warnings(build: Build, name, parser) -> None:
    page = build.tree / f"usr/share/man/man8/{name}.8.gz"
    text = gzip.decompress(page.read_bytes()).decode().replace("\\-", "-")
    assert text.startswith(f".TH {name.upper()} 8 ")
    assert [o for o in options_of(parser()) if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", text)] == []
    files = listing(build)
    assert [p for p in re.findall(r"/usr/share/\S+?(?=\\f|\s)", text) if p.rstrip("/") not in files] == []
    if shutil.which("man"):
        result = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True,
                                env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": ""}, timeout=60)
        assert (result.returncode, result.stderr) == (0, "")
        assert "SYNOPSIS" in result.stdout and "FILES" in result.stdout


# --- the package where dpkg puts it ---------------------------------------------------------------

PREAMBLE = """
tree=$1 scratch=$2; shift 2
mount -t tmpfs tmpfs "$scratch"
for d in usr etc; do
    mkdir "$scratch/$d.upper" "$scratch/$d.work"
    mount -t overlay overlay -o "lowerdir=$tree/$d:/$d,upperdir=$scratch/$d.upper,workdir=$scratch/$d.work" "/$d"
done
for d in /run /var/lib; do
    mount -t tmpfs tmpfs "$d"
    [ -z "$(ls -A "$d")" ] || { echo "$d is not the fresh tmpfs" >&2; exit 99; }
done
"""


def installed(build: Build, scratch: Path, script: str, *args: str,
              timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """`script` (sh) run as if the package were installed; this host's /run and /var/lib are out of its reach."""
    scratch.mkdir(exist_ok=True)
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-euc", PREAMBLE + script, "sh",
                           str(build.tree), str(scratch), *args], cwd="/", capture_output=True, text=True,
                          timeout=timeout)


def run_installed(build: Build, scratch: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return installed(build, scratch, 'exec "$@"', *argv)


@pytest.fixture
def scratch(tmp_path: Path, build: Build) -> Path:
    probe = installed(build, tmp_path / "probe", "true")
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace with overlayfs here: {probe.stderr.strip()}")
    return tmp_path / "scratch"


def test_the_commands_run_from_where_dpkg_puts_them(build: Build, scratch: Path) -> None:
    assert run_installed(build, scratch, "crashhpd", "--version").stdout == f"crashhpd {VERSION}\n"
    for command in ("crashhpd", "crashhpctl"):
        result = run_installed(build, scratch, command, "--help")
        assert (result.returncode, result.stderr) == (0, "") and result.stdout.startswith(f"usage: {command} ")
    unreachable = run_installed(build, scratch, "crashhpctl", "status")  # the shipped config, no daemon
    assert unreachable.returncode == client.EXIT_UNREACHABLE and "/run/crashhpd/control.sock" in unreachable.stderr


def test_the_packaged_crashhpd_builds_and_checks_the_same_header(build: Build, scratch: Path, tmp_path: Path) -> None:
    root = fixture_tree(tmp_path / "root", "virtio-mem")
    packaged, dev = tmp_path / "packaged.hdr", tmp_path / "dev.hdr"
    result = run_installed(build, scratch, "crashhpd", "generate", "--root", str(root), "-o", str(packaged))
    assert result.returncode == 0, result.stderr
    subprocess.run([str(DEV_CRASHHPD), "generate", "--root", str(root), "-o", str(dev)], check=True, timeout=60)
    assert packaged.read_bytes() == dev.read_bytes()
    inspect = ["inspect", "--json", "--root", str(root), str(packaged)]
    result = run_installed(build, scratch, "crashhpd", *inspect)  # pyelftools 0.29 reads it back, as 0.31+ does
    assert result.returncode == 0, result.stderr
    dev_result = subprocess.run([str(DEV_CRASHHPD), *inspect], capture_output=True, text=True, timeout=60)
    assert json.loads(result.stdout) == json.loads(dev_result.stdout)
    assert json.loads(result.stdout)["valid"] is True


def test_an_invalid_config_stops_the_packaged_daemon_with_78(build: Build, scratch: Path, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('backend = "sandbox"\nbakend = "kexec"\n')
    result = run_installed(build, scratch, "crashhpd", "run", "--config", str(config))
    assert result.returncode == 78
    assert "bakend: unknown key (did you mean backend?)" in result.stderr and "Traceback" not in result.stderr


def test_the_virtualenv_uses_debians_modules_and_its_own_pydantic(build: Build, scratch: Path) -> None:
    code = ("import json, os, sys, pydantic, " + ", ".join(FROM_DEBIAN) + ", prometheus_client.core, systemd.journal\n"
            "print(json.dumps({'prefix': sys.prefix, 'pydantic': [pydantic.VERSION, pydantic.__file__],"
            + "".join(f"'{m}': os.path.realpath({m}.__file__)," for m in FROM_DEBIAN) + "}))")
    result = run_installed(build, scratch, f"{VENV}/bin/python", "-I", "-c", code)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["prefix"] == VENV
    assert found["pydantic"][0].startswith("2.") and found["pydantic"][1].startswith(f"{SITE}/pydantic/")
    for module, package in FROM_DEBIAN.items():
        files = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, timeout=60).stdout.split()
        assert found[module] in files


MAINTAINER_SCRIPTS = """
control=$1 log=$2; shift 2
mkdir "$scratch/stubs" /run/systemd /run/systemd/system
for tool in deb-systemd-helper deb-systemd-invoke systemctl; do
    printf '#!/bin/sh\\necho "%s $*" >> %s\\n' "$tool" "$log" > "$scratch/stubs/$tool"
    chmod +x "$scratch/stubs/$tool"
done
export PATH="$scratch/stubs:$PATH"
pyc() { echo "$1 $(find /usr/lib/crashhpd -name '*.pyc' | wc -l)"; }

sh "$control/postinst" configure
pyc installed
/usr/lib/crashhpd/bin/python -I -v -c 'import crashhpd.cli' 2>&1 | grep -c '/cli.cpython-311.pyc matches ' || true
mkdir -p /var/lib/crashhpd /run/crashhpd /etc/crashhpd/crashhpd.toml.d
touch /var/lib/crashhpd/sandbox.hdr /run/crashhpd/control.sock /etc/crashhpd/crashhpd.toml.d/50-admin.toml
sh "$control/prerm" remove
pyc removed
sh "$control/postrm" remove
echo "after remove: $(ls -d /var/lib/crashhpd /run/crashhpd 2>/dev/null | tr '\\n' ' ')"
sh "$control/postrm" purge
echo "after purge: $(ls -d /var/lib/crashhpd /run/crashhpd /etc/crashhpd/crashhpd.toml.d/* 2>/dev/null | tr '\\n' ' ')"
"""


def test_maintainer_scripts_compile_enable_start_stop_and_purge(build: Build, scratch: Path, tmp_path: Path) -> None:
    control, log = tmp_path / "control", tmp_path / "systemd.log"
    subprocess.run(["dpkg-deb", "-e", str(build.deb), str(control)], check=True, timeout=60)
    result = installed(build, scratch, MAINTAINER_SCRIPTS, str(control), str(log), timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    installed_pycs = int(lines[0].removeprefix("installed "))
    assert installed_pycs > 100  # crashhpd's and pydantic's
    assert lines[1:] == ["1", "removed 0", "after remove: /var/lib/crashhpd ",
                         "after purge: /etc/crashhpd/crashhpd.toml.d/50-admin.toml "]
    calls = [line for line in log.read_text().splitlines() if line.split()[1] in ("enable", "start", "stop", "purge")]
    assert calls == ["deb-systemd-helper enable crashhpd.service", "deb-systemd-invoke start crashhpd.service",
                     "deb-systemd-invoke stop crashhpd.service", "deb-systemd-helper purge crashhpd.service"]


# --- on a fresh Debian 12 and 13, installed as the README says ----------------------------------

FRESH_INSTALL = SUPPORT / "fresh_install.sh"
FRESH_TIMEOUT_S = 1500
# each release: where pydantic 2 comes from, which the package built there depends on
PYDANTIC = {"bookworm": "bundled", "trixie": "python3-pydantic"}
ADMIN_DROP_IN = "/etc/crashhpd/crashhpd.toml.d/50-admin.toml"
LOCAL_CAS = Path("/usr/local/share/ca-certificates")  # where Debian keeps the CAs an admin trusts


@dataclass(frozen=True)
class Fresh:
    """What tests/support/fresh_install.sh saw inside the fresh system: each step's output, exit status, listings."""

    out: Path
    codename: str

    def rc(self, step: str) -> int:
        return int((self.out / f"{step}.rc").read_text())

    def text(self, name: str) -> str:
        return (self.out / name).read_text()

    def lines(self, name: str) -> list[str]:
        return self.text(name).splitlines()


def readme_install_command() -> str:
    """The one command of the README's "Installing as a service" (a section of its "Install", at any level)."""
    section = re.split(r"^#+ Installing as a service\n", (REPO / "README.md").read_text(), maxsplit=1, flags=re.M)[1]
    section = re.split(r"^#", section, maxsplit=1, flags=re.M)[0]  # up to the next heading
    return next(line.strip() for line in section.splitlines() if line.startswith("    "))


def test_the_readme_installs_with_one_command_that_builds_and_installs_the_package() -> None:
    assert readme_install_command() == f"sh .ci/setup deb && apt install ./crashhpd_{VERSION}_amd64.deb"


@pytest.fixture(scope="module", params=sorted(PYDANTIC))
def fresh(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Fresh:
    """Debian 12 or 13 as a minimal install has it (priority important, so systemd and apt, no Python), built by
    mmdebstrap from the host's own mirrors, with this tree copied in as a clone would have it; in it,
    tests/support/fresh_install.sh runs the README's install command (build dependencies, the build, `apt install`),
    uses what it installed and purges it. Skipped only when the registry cannot be reached.
    """
    from e2e import parts  # the e2e suite's Debian plumbing: the host's mirrors, mmdebstrap

    codename = request.param
    work = tmp_path_factory.mktemp(f"fresh-{codename}")
    root, source, command = work / "root", work / "crashhpd.tar", work / "install-command"
    # tar's --exclude-vcs-ignores skips no `dir/` pattern of .gitignore: the virtualenv and the tests' cache by name
    subprocess.run(["tar", "-C", str(REPO), "--exclude-vcs", "--exclude-vcs-ignores", "--exclude=./.venv",
                    "--exclude=./.cache", "-cf", str(source), "."], check=True, timeout=120)
    command.write_text(readme_install_command() + "\n")
    # The fresh system is on this host's network: it trusts the CAs this host's admin added (a proxy's, say)
    # as it uses this host's mirrors. ca-certificates, once the build pulls it in, bundles them.
    trust = [f'mkdir -p "$1{LOCAL_CAS}"', f"sync-in {LOCAL_CAS} {LOCAL_CAS}"] if any(LOCAL_CAS.rglob("*.crt")) else []
    try:
        parts.mmdebstrap(root, work / "mmdebstrap.log", "important", (), [
            *trust,
            f"upload {source} /root/crashhpd.tar",
            'mkdir "$1/root/crashhpd" && tar -C "$1/root/crashhpd" -xf "$1/root/crashhpd.tar"',
            f"upload {command} /root/install-command",
            f"upload {FRESH_INSTALL} /root/fresh_install.sh",
            'chroot "$1" sh /root/fresh_install.sh',
        ], FRESH_TIMEOUT_S, codename)
    except parts.PartsUnavailable as err:
        pytest.skip(str(err))
    out = shutil.copytree(root / "root/out", work / "out")
    shutil.rmtree(root)  # some 300 MB: only what the script wrote is kept
    return Fresh(out, codename)


def test_apt_installs_the_deb_on_a_fresh_debian_with_the_dependencies_it_resolves_itself(fresh: Fresh) -> None:
    before = set(fresh.lines("packages-before"))
    from_debian = set(FROM_DEBIAN.values()) | ({PYDANTIC[fresh.codename]} - {"bundled"})
    assert "systemd" in before and from_debian & before == set(), "not the fresh system this test is about"
    assert fresh.rc("install") == 0, fresh.text("install.out")[-3000:] + fresh.text("install.err")
    for package in sorted(from_debian):
        assert f"Setting up {package} " in fresh.text("install.out"), package
    assert f"Setting up crashhpd ({VERSION})" in fresh.text("install.out")


def test_the_package_built_there_takes_pydantic_2_from_debian_where_it_has_it(fresh: Fresh) -> None:
    """Debian 13's python3-pydantic is 2.x: a dependency, linked into the virtualenv; Debian 12's is 1.10:
    bundled, for its python3.11 (so that package cannot install on 13: "Depends: python3.11")."""
    depends = [d.strip().split()[0] for d in fresh.text("depends.out").split(",")]
    assert fresh.rc("python") == 0, fresh.text("python.err")
    python, pydantic, where, real = json.loads(fresh.text("python.out"))
    assert pydantic.startswith("2."), pydantic
    if PYDANTIC[fresh.codename] == "bundled":
        assert "python3.11" in depends and "python3-pydantic" not in depends and python.startswith("3.11.")
        assert where == real == f"{SITE}/pydantic/__init__.py"
    else:
        assert "python3-pydantic" in depends and "python3.11" not in depends and not python.startswith("3.11.")
        assert re.fullmatch(rf"{VENV}/lib/python3\.\d+/site-packages/pydantic/__init__\.py", where), where
        assert real == "/usr/lib/python3/dist-packages/pydantic/__init__.py"  # the package's link to Debian's
        assert os.path.dirname(where) in fresh.lines("owned.out")


def test_lintian_of_that_release_finds_no_error_and_no_warning(fresh: Fresh) -> None:
    assert fresh.rc("lintian-install") == 0, fresh.text("lintian-install.err")
    tags = [line for line in fresh.lines("lintian.out") if re.match(r"[EWI]: ", line)]
    assert (fresh.rc("lintian"), tags) == (0, []), fresh.text("lintian.err")


def test_the_freshly_installed_service_is_enabled_and_its_commands_work(fresh: Fresh) -> None:
    assert (fresh.rc("enabled"), fresh.text("enabled.out")) == (0, "enabled\n")
    assert (fresh.rc("version"), fresh.text("version.out")) == (0, f"crashhpd {VERSION}\n")
    assert fresh.rc("ctl-help") == 0 and fresh.text("ctl-help.out").startswith("usage: crashhpctl ")
    # this host's own kernel, read through the fresh system's /proc: the header its packaged crashhpd built
    assert fresh.rc("generate") == 0, fresh.text("generate.err")
    assert fresh.rc("inspect") == 0, fresh.text("inspect.err")
    assert json.loads(fresh.text("inspect.out"))["valid"] is True


def test_the_installed_daemon_with_no_configuration_is_auto_and_says_what_that_chose(fresh: Fresh) -> None:
    """No file in /etc/crashhpd: the embedded default, `auto`, which on this kexec-less build host picks
    the kexec backend and says, truthfully, that nothing is protected here."""
    status = json.loads(fresh.text("status-json.out"))
    assert (status["backend_setting"], status["backend"]) == ("auto", "kexec"), fresh.text("daemon.err")
    assert fresh.rc("status") == 1 and fresh.rc("status-json") == 1 and status["protected"] is False
    rows = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in fresh.lines("status.out") if line[:1] != " "}
    assert rows["backend"].startswith("kexec (chosen by auto) ")
    assert rows["protected"].startswith("NO: ") and fresh.rc("daemon") == 0, fresh.text("daemon.err")


def test_apt_purge_leaves_nothing_but_what_the_admin_wrote(fresh: Fresh) -> None:
    assert fresh.rc("purge") == 0, fresh.text("purge.err")
    before, after = set(fresh.lines("files-before")), set(fresh.lines("files-after"))
    shipped = set(fresh.lines("owned.out")) - before  # what the package brought, not shared directories
    assert len(shipped) > 100 and "/usr/bin/crashhpd" in shipped and "/etc/crashhpd/crashhpd.toml" in shipped
    admins = {ADMIN_DROP_IN, *(str(p) for p in Path(ADMIN_DROP_IN).parents if str(p) not in ("/", "/etc"))}
    assert shipped & after <= admins
    assert sorted(p for p in after - before if "crashhpd" in p) == sorted(admins)
