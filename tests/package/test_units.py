# SPDX-License-Identifier: GPL-2.0-only
"""The shipped systemd unit and udev overrides, checked by systemd's tools and against a real kdump-tools package."""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from repo_paths import REPO

UNIT = REPO / "systemd" / "crashhpd.service"
UDEV = REPO / "udev"
OVERRIDES = ["50-kdump-tools.rules", "70-kdump.rules", "98-kexec.rules"]
DOWNLOAD_CACHE = Path(tempfile.gettempdir()) / "crashhpd-test-cache" / "kdump-tools"

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def directives(text: str) -> dict[str, list[str]]:
    """`Key=value` lines of a unit file by key (a key may repeat)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@pytest.fixture(scope="module")
def verifiable_unit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unit with ExecStart and ExecStopPost at this venv's crashhpd: `verify` insists the binary exists."""
    binary = Path(sys.executable).parent / "crashhpd"
    if not binary.exists():
        pytest.skip(f"no crashhpd console script beside {sys.executable}")
    text = UNIT.read_text()
    assert "ExecStart=/usr/bin/crashhpd run\n" in text
    unit = tmp_path_factory.mktemp("unit") / UNIT.name
    unit.write_text(text.replace("=/usr/bin/crashhpd ", f"={binary} "))
    return unit


# --- systemd/crashhpd.service -----------------------------------------------------------------

@needs_analyze
def test_systemd_analyze_verify_accepts_the_unit_without_warnings(verifiable_unit: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", str(verifiable_unit)],
                            capture_output=True, text=True, timeout=60)
    about_us = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert (result.returncode, about_us) == (0, [])


def test_service_settings() -> None:
    unit = directives(UNIT.read_text())
    expected = {
        "Type": "notify", "NotifyAccess": "main", "ExecStart": "/usr/bin/crashhpd run",
        "ExecReload": "/bin/kill -HUP $MAINPID", "WatchdogSec": "90s", "Restart": "on-failure",
        "RestartPreventExitStatus": "78", "StateDirectory": "crashhpd", "RuntimeDirectory": "crashhpd",
        "RuntimeDirectoryMode": "0755", "ConfigurationDirectory": "crashhpd", "UMask": "0022",
        "WantedBy": "multi-user.target",
    }
    assert {key: unit.get(key) for key in expected} == {key: [value] for key, value in expected.items()}
    assert "TimeoutStopSec" in unit
    for dependency in ("Wants", "After"):
        assert unit[dependency] == ["kdump-tools.service kdump.service"]
    assert "Requires" not in unit  # a machine without the other distribution's kdump service must still start us


def test_capabilities_are_kexec_plus_what_reading_the_kernel_needs() -> None:
    (bounding,) = directives(UNIT.read_text())["CapabilityBoundingSet"]
    assert set(bounding.split()) == {"CAP_SYS_BOOT", "CAP_SYS_ADMIN", "CAP_SYSLOG", "CAP_SYS_RAWIO", "CAP_CHOWN",
                                     "CAP_NET_ADMIN"}


@pytest.mark.parametrize(("setting", "why"), [
    ("PrivateNetwork", "kernel uevents reach only the host network namespace"),
    ("PrivateDevices", "drops CAP_SYS_RAWIO, needed to open /proc/kcore"),
    ("ProtectKernelTunables", "makes /proc/kallsyms and /proc/kcore inaccessible"),
    ("ProtectKernelLogs", "drops CAP_SYSLOG, needed for real /proc/kallsyms addresses"),
    ("ProcSubset", "pid would hide /proc/iomem, /proc/kallsyms and /proc/kcore"),
])
def test_settings_that_would_hide_what_crashhpd_reads_are_absent(setting: str, why: str) -> None:
    assert setting not in directives(UNIT.read_text()), why


def test_every_service_setting_after_the_directories_says_why() -> None:
    lines = UNIT.read_text().splitlines()
    start = next(n for n, line in enumerate(lines) if line.startswith("CapabilityBoundingSet="))
    end = lines.index("[Install]")
    for n in range(start, end):
        if lines[n] and not lines[n].startswith("#"):
            assert lines[n - 1].startswith("# "), f"no comment above {lines[n]!r}"


@needs_analyze
def test_systemd_analyze_security_sees_the_hardening(verifiable_unit: Path) -> None:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--json=short", str(verifiable_unit)],
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0 and "offline" in result.stderr:
        pytest.skip(f"systemd-analyze security cannot run offline here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    checks = {check["json_field"]: check["set"] for check in json.loads(result.stdout)}
    hardened = ["NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "ProtectKernelModules",
                "ProtectControlGroups", "ProtectClock", "ProtectHostname", "RestrictRealtime", "RestrictSUIDSGID",
                "LockPersonality", "MemoryDenyWriteExecute", "SystemCallArchitectures", "NotifyAccess",
                "RestrictAddressFamilies_AF_INET_INET6", "RestrictAddressFamilies_AF_PACKET",
                "RestrictAddressFamilies_OTHER", "CapabilityBoundingSet_CAP_SYS_MODULE",
                "CapabilityBoundingSet_CAP_SYS_PTRACE", "CapabilityBoundingSet_CAP_DAC_FOWNER_IPC_OWNER",
                "CapabilityBoundingSet_CAP_SET_UID_GID_PCAP", "CapabilityBoundingSet_CAP_SYS_TIME"]
    hardened += [f"RestrictNamespaces_{kind}" for kind in ("user", "pid", "net", "uts", "mnt", "cgroup", "ipc")]
    assert {name: checks.get(name) for name in hardened} == dict.fromkeys(hardened, True)
    deliberately_open = ["PrivateNetwork", "PrivateDevices", "ProtectKernelTunables", "ProtectKernelLogs"]
    assert {name: checks.get(name) for name in deliberately_open} == dict.fromkeys(deliberately_open, False)


# --- udev/ ------------------------------------------------------------------------------------

def rule_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_one_comment_only_override_per_distribution_rule() -> None:
    assert sorted(p.name for p in UDEV.glob("*.rules")) == OVERRIDES
    for name in OVERRIDES:
        text = (UDEV / name).read_text()
        assert rule_lines(text) == [], f"{name} must not add rules"
        assert "disable" in text and "crashhpd" in text, f"{name} must say what it disables and why"


def test_readme_tells_how_to_install_and_remove() -> None:
    readme = (UDEV / "README.md").read_text()
    assert "install -m 0644 udev/*.rules /etc/udev/rules.d/ && udevadm control --reload" in readme
    (remove,) = [line for line in readme.splitlines() if line.strip().startswith("rm -f")]
    assert remove.split()[2:] == [f"/etc/udev/rules.d/{name}" for name in OVERRIDES]
    assert "restores the distribution's behaviour" in readme


def apt_download(package: str, into: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["apt-get", "download", package], cwd=into, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def kdump_tools_deb() -> Path:
    """The real Debian package, downloaded once into a cache that survives test runs."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("needs apt-get and dpkg-deb (Debian)")
    DOWNLOAD_CACHE.mkdir(parents=True, exist_ok=True)
    cached = sorted(DOWNLOAD_CACHE.glob("kdump-tools_*.deb"))
    if cached:
        return cached[-1]
    result = apt_download("kdump-tools", DOWNLOAD_CACHE)
    if result.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300)
        result = apt_download("kdump-tools", DOWNLOAD_CACHE)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"cannot download kdump-tools from the Debian archive: {last}")
    return sorted(DOWNLOAD_CACHE.glob("kdump-tools_*.deb"))[-1]


@pytest.fixture(scope="module")
def packaged_rules(kdump_tools_deb: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("kdump-tools")
    subprocess.run(["dpkg-deb", "-x", str(kdump_tools_deb), str(root)], check=True, timeout=60)
    return [p for d in ("lib/udev/rules.d", "usr/lib/udev/rules.d") for p in sorted((root / d).glob("*.rules"))]


def test_debian_override_has_the_name_of_the_rule_kdump_tools_installs(packaged_rules: list[Path]) -> None:
    assert [p.name for p in packaged_rules] == ["50-kdump-tools.rules"]
    (packaged,) = packaged_rules
    assert "kdump-config" in packaged.read_text()  # the per-event reload our file turns off
    assert rule_lines(packaged.read_text()), "the packaged file has rules; an empty one would prove nothing"
    assert rule_lines((UDEV / packaged.name).read_text()) == []


def test_running_installs_what_running_needs_and_no_developer_tool():
    """`sh .ci/setup run` takes run_packages and the package without its [test] extra; `test` takes the rest."""
    import re

    setup = (REPO / ".ci/setup").read_text()
    run = set(re.search(r'^run_packages="([^"]+)"', setup, re.M).group(1).split())
    tests = re.search(r'^test_packages="([^"]+)"', setup, re.M).group(1).split()
    assert run.isdisjoint({"mmdebstrap", "lintian", "debhelper", "e2fsprogs", "make", "prometheus"})
    assert {"$run_packages", "$build_packages", "mmdebstrap", "lintian"} <= set(tests)  # debhelper: the build
    assert 'run) apt_packages=$run_packages ;;' in setup
    assert 'if [ "$job" = run ]; then extras=""' in setup  # pytest, ruff and mypy are the [test] extra
    assert 'if [ "$job" != run ] && [ ! -x "$venv/bin/promtool" ]' in setup


def _words(script: str, variable: str) -> set[str]:
    import re

    return set(re.search(rf'{variable}="([^"]+)"', script).group(1).split())


def test_the_bash_completions_offer_exactly_the_commands_the_parsers_have():
    """bash itself loads them (a syntax error fails here), and their command lists are the parsers'."""
    from crashhpd.cli import _parser
    from crashhpd.control import client, contract

    def choices(parser: object) -> set[str]:
        return next(set(a.choices) for a in parser._actions if getattr(a, "choices", None))  # type: ignore[attr-defined]

    for name, expected in (("crashhpctl", set(contract.OPS)), ("crashhpd", choices(_parser()))):
        path = REPO / "etc/bash-completion" / name
        loaded = subprocess.run(["bash", "-c", f"source {path} && complete -p {name}"], capture_output=True,
                                text=True, timeout=10)
        assert loaded.returncode == 0 and f"-F _{name} {name}" in loaded.stdout, loaded.stderr
        assert _words(path.read_text(), "commands") == expected
    assert choices(client._parser()) == set(contract.OPS)


def test_the_shipped_overrides_say_where_crashhpd_places_them():
    """Placed in /run/udev/rules.d while crashhpd keeps the header current: never said to live in /etc."""
    for rules in sorted((REPO / "udev").glob("*.rules")):
        head = rules.read_text().split("\n#\n", 1)[0]
        assert "Placed by crashhpd in /run/udev/rules.d/" in head and "/etc/udev" not in head, rules.name
