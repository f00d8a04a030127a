import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Appended (not prepended) so `import ci` and `import tests...` work while
# `import torch_segment_ops` still resolves to the installed copy first.
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))


def pytest_collection_modifyitems(items):
    """Everything under tests/e2e builds or installs real wheels: slow (`-m "not slow"` leaves it out)."""
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def loopback():
    """loopback(folder=None, host="127.0.0.1") -> a started tests.loopback.Loopback, closed after the test."""
    from tests.loopback import Loopback

    started = []

    def start(folder=None, host="127.0.0.1"):
        started.append(Loopback(folder, host))
        return started[-1]

    yield start
    for server in started:
        server.close()
