# SPDX-License-Identifier: GPL-2.0-only
"""crashhpd's commands, staged where an unprivileged user can run them, wherever the checkout is.

Tests that run a client as `nobody` cannot use the virtualenv's scripts when
the checkout sits in a directory nobody may enter (root's home is 0700 on
Debian). So this stages, once per test session, a world-readable copy of the
package and of the installed distributions it needs at run time (the ones
its requirements name, as the e2e initramfs takes them), with `crashhpd`,
`crashhpctl` and `python` beside them, in a fresh temporary directory.
"""

import atexit
import functools
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from e2e.initramfs import copy_site_packages

ENTRY_POINTS = {"crashhpd": "crashhpd.cli", "crashhpctl": "crashhpd.control.client"}


@dataclass(frozen=True, slots=True)
class Staged:
    python: str  # runs with the staged packages first on sys.path
    crashhpd: str
    crashhpctl: str


@functools.cache
def staged() -> Staged:
    top = Path(tempfile.mkdtemp(prefix="crashhpd-nobody-"))
    atexit.register(shutil.rmtree, top, True)
    site = top / "site"
    copy_site_packages(site)
    interpreter = os.path.realpath(sys.executable)  # the system's Python the virtualenv was made from
    scripts = {"python": f'#!/bin/sh\nPYTHONPATH={site} exec {interpreter} "$@"\n'}
    for name, module in ENTRY_POINTS.items():
        scripts[name] = (f"#!{interpreter}\nimport sys\nsys.path.insert(0, {str(site)!r})\n"
                         f"from {module} import main\nsys.exit(main())\n")
    for name, text in scripts.items():
        (top / name).write_text(text)
    for path in (top, *top.rglob("*")):
        path.chmod(0o755 if path.is_dir() or path.name in scripts else 0o644)
    return Staged(str(top / "python"), str(top / "crashhpd"), str(top / "crashhpctl"))
