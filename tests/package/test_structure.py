# SPDX-License-Identifier: GPL-2.0-only
"""The package's shape: no import cycle, and every module imports only from its own stage or the ones below.

The stages, lowest first, are the data path's: what the kernel shows
(sysview), the header made of it (elfcorehdr), the configuration, where a
header goes (backends), the loop (service), the socket to it (control), then
wiring and the command line, which may import anything. errors, log and the
package itself (its version) are the base every stage stands on.
"""


import pytest
from import_graph import closure, cycles, graph, modules
from repo_paths import REPO

PACKAGE = REPO / "crashhpd"

STAGES = [  # lowest first; a module's stage is its folder's, or its own name for the top-level modules
    ("base", {"crashhpd", "crashhpd.errors", "crashhpd.abi", "crashhpd.log",
              "crashhpd.safefile"}),
    ("sysview", {"crashhpd.sysview"}),
    ("elfcorehdr", {"crashhpd.elfcorehdr"}),
    ("config", {"crashhpd.config"}),
    ("backends", {"crashhpd.backends"}),
    ("service", {"crashhpd.service"}),
    ("control", {"crashhpd.control"}),
    ("wiring", {"crashhpd.wiring"}),
    ("cli", {"crashhpd.cli"}),
]
RANK = {prefix: rank for rank, (_, prefixes) in enumerate(STAGES) for prefix in prefixes}


def stage(module: str) -> int:
    """The rank of the stage `module` belongs to: its folder's, else its own; KeyError for one in no stage."""
    return RANK[".".join(module.split(".")[:2])]


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    return graph(PACKAGE)


def test_the_package_has_no_import_cycle(edges):
    assert cycles(edges) == []


def test_every_module_belongs_to_a_stage():
    unplaced = []
    for name in modules(PACKAGE):
        try:
            stage(name)
        except KeyError:
            unplaced.append(name)
    assert unplaced == [], "a new folder or top-level module needs its place in STAGES"


def test_no_module_imports_from_a_stage_above_its_own(edges):
    upward = sorted(f"{m} ({STAGES[stage(m)][0]}) imports {d} ({STAGES[stage(d)][0]})"
                    for m, deps in edges.items() for d in deps if stage(d) > stage(m))
    assert upward == []


# the flat modules beside the stage folders, each a concern that cuts across them; anything else lives in a folder
FLAT = {"cli", "config", "errors", "log", "safefile", "wiring"}  # entry points, configuration, errors, logging,
# the safe writer, wiring
MODULE_LINES, LOOP_LINES = 500, 450  # a module a maintainer reads whole; the loop reads as the loop only


def test_only_the_cross_cutting_modules_sit_flat_in_the_package():
    flat = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    assert flat <= FLAT, f"{sorted(flat - FLAT)} belong in a stage's folder"


def test_no_module_is_too_long_to_read_whole():
    lines = {str(path.relative_to(PACKAGE)): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in lines.items() if n > MODULE_LINES} == {}
    assert lines["service/daemon.py"] < LOOP_LINES


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("sysview", ["service", "control", "backends", "wiring", "elfcorehdr", "config"]),
    ("elfcorehdr", ["backends", "service", "control", "wiring"]),
    ("backends", ["service", "control", "wiring"]),
    ("service", ["control", "wiring"]),
    ("control", ["wiring"]),
])
def test_the_layering_by_name(edges, folder, forbidden):
    """The same rule, spelled out for the stages the daemon is built from."""
    found = sorted(f"{m} imports {d}" for m, deps in edges.items() if m.startswith(f"crashhpd.{folder}")
                   for d in deps if any(d == f"crashhpd.{f}" or d.startswith(f"crashhpd.{f}.") for f in forbidden))
    assert found == []


# crashhpctl's side of the control contract: it runs where only the standard library is installed
CLIENT_SIDE = {"crashhpd.control.client", "crashhpd.control.render"}
CONTRACT = "crashhpd.control.contract"


def test_crashhpctl_imports_the_contract_and_nothing_of_the_daemon(edges):
    """The client side may import the contract and the package itself (its version); the contract, nothing."""
    allowed = CLIENT_SIDE | {CONTRACT, "crashhpd"}
    found = sorted(f"{m} imports {d}" for m in CLIENT_SIDE for d in edges[m] if d not in allowed)
    found += sorted(f"{CONTRACT} imports {d}" for d in edges[CONTRACT])
    found += sorted(f"{m} imports {d}" for m, deps in edges.items() if m not in CLIENT_SIDE
                    for d in deps if d in CLIENT_SIDE)  # nor does the daemon's side lean on the client's
    assert found == []


def test_crashhpctl_imports_no_third_party_package():
    own, _stdlib, third_party = closure(PACKAGE, "crashhpd.control.client")
    assert third_party == set()
    assert own == CLIENT_SIDE | {CONTRACT, "crashhpd", "crashhpd.control"}
    # the same reading of the daemon's side finds what it needs: the closure does see third-party imports
    assert "pyudev" in closure(PACKAGE, "crashhpd.wiring")[2]


def test_every_source_file_says_its_license():
    import subprocess

    tracked = subprocess.run(["git", "ls-files", "*.py", ".ci/*", "Makefile", "systemd/*", "udev/*.rules"],
                             capture_output=True, text=True, cwd=REPO, check=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout: nothing tells which files are the project's")
    def head(name: str) -> str:
        return "".join((REPO / name).read_text().splitlines(True)[:2])

    missing = [name for name in tracked if "SPDX-License-Identifier: GPL-2.0-only" not in head(name)]
    assert missing == []
