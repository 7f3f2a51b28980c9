# SPDX-License-Identifier: GPL-2.0-only
"""Where the checkout's parts are, found from tests/support/: one place to change if the test folders move."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
SUPPORT = TESTS / "support"
IOMEM_FIXTURES = TESTS / "fixtures" / "iomem"
STANDIN = SUPPORT / "kexec_standin.py"  # plays kexec (tests/support/kexec_standin.py)
