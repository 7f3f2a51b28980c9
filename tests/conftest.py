# SPDX-License-Identifier: GPL-2.0-only
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# tests/support holds the helpers every folder imports; tests/ itself, the e2e package some of them use
sys.path[:0] = [str(Path(__file__).parent / "support"), str(Path(__file__).parent)]

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked `root` is skipped, saying so, when the run is not root: `-m "not root"` leaves them out."""
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.skip("marked root: needs root and the real /proc and /sys (deselect with -m 'not root')")


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fails a test that blocks (on a FIFO opened for reading, say) instead of hanging the whole run."""
    def expired(signum: int, frame: object) -> None:
        pytest.fail("blocked for 10 s")  # a BaseException: no `except OSError` under test swallows it

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
