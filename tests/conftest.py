import os
import subprocess
import sys
import threading
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


# Lanes that keep about one core busy (emulation, cross-compiling) start in their own process when the
# test run starts, and their fixtures wait for them. Their own process and a copy of the environment
# taken at the start: no test's monkeypatching reaches them.
EARLY_LANES = {  # name -> (the test file using it, `python -m ci local` arguments)
    "aarch64": ("test_aarch64_e2e.py", ["--arch", "aarch64"]),
    "macos": ("test_macos_e2e.py", ["--arch", "macos-arm64"]),
}


class EarlyLanes:
    def __init__(self, names: list[str], tmp_path_factory):
        self.runs = {name: (tmp_path_factory.mktemp(name), threading.Event()) for name in names}
        self.results: dict[str, tuple[int, str]] = {}
        self.current = None
        from ci.cli import USE_CURRENT_ENV

        environ = dict(os.environ, **{USE_CURRENT_ENV: "1"})  # pytest runs in the dev env already

        def run_all():  # one after the other: each keeps about one core busy
            for name, (out, done) in self.runs.items():
                log = out.parent / f"{name}.log"
                try:
                    with log.open("w") as sink:
                        self.current = subprocess.Popen([sys.executable, "-m", "ci", "local", *EARLY_LANES[name][1],
                                                         "--out", str(out)], cwd=ROOT, env=environ, stdout=sink,
                                                        stderr=subprocess.STDOUT)
                        self.results[name] = (self.current.wait(), log.read_text())
                except Exception as error:  # its fixture fails with this instead of waiting forever
                    self.results[name] = (-1, repr(error))
                finally:
                    done.set()

        threading.Thread(target=run_all, daemon=True).start()

    def result(self, name: str):
        """(out folder, the lane's table) once it is done; fails the test with its output if it failed."""
        out, done = self.runs[name]
        done.wait()
        code, output = self.results[name]
        if code != 0:
            pytest.fail(f"`python -m ci local {' '.join(EARLY_LANES[name][1])}` exited {code}:\n{output[-6000:]}")
        return out, output

    def stop(self):
        if self.current and self.current.poll() is None:
            self.current.terminate()
            self.current.wait()


@pytest.fixture(scope="session", autouse=True)
def early_lanes(request, tmp_path_factory):
    from ci.lanes import aarch64

    used = {item.path.name for item in request.session.items}
    names = [name for name, (test_file, _) in EARLY_LANES.items() if test_file in used]
    if "aarch64" in names and aarch64.unavailable():
        names.remove("aarch64")  # its fixture skips with the reason
    lanes = EarlyLanes(names, tmp_path_factory)
    yield lanes
    lanes.stop()
