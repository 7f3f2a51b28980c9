# SPDX-License-Identifier: GPL-2.0-only
"""The data path's pure stages (abi/, sysview/, elfcorehdr/) pass `mypy --strict`.

pyproject.toml gives these modules the per-module flags --strict sets, so the plain `.venv/bin/mypy` run
holds them to it too; this runs --strict itself, so a flag the overrides miss lets nothing in.
"""

import subprocess
import sys

from repo_paths import REPO

STRICT = ["crashhpd/abi", "crashhpd/sysview", "crashhpd/elfcorehdr"]


def test_the_pure_stages_pass_mypy_strict(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), *STRICT],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
