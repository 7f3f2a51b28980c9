import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


def needs_root() -> pytest.MarkDecorator:
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


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
