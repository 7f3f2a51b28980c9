# SPDX-License-Identifier: GPL-2.0-only
"""The virtualenv's real `crashhpd` console script, run as a subprocess: what the CLI and host tests call."""

import subprocess
import sys
from pathlib import Path

CRASHHPD = Path(sys.executable).with_name("crashhpd")


def crashhpd(*args: str, **options: object) -> subprocess.CompletedProcess[bytes]:
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return subprocess.run([str(CRASHHPD), *args], timeout=60, **{**streams, **options})
