import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Appended (not prepended) so `import ci` and `import tests...` work while
# `import torch_segment_ops` still resolves to the installed copy first.
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))


def pytest_collection_modifyitems(items):
    """Everything under tests/e2e builds or installs real wheels: slow (`-m "not slow"` leaves it out).
    The tests waiting for an early lane (below) run last, in the lanes' order: their lanes run meanwhile."""
    for item in items:
        if "e2e" in item.path.parts:
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: max((i for i, name in enumerate(EARLY_LANES) if name in item.fixturenames),
                                    default=-1))  # stable: every other order kept


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


# Lanes that take minutes and need nothing from the test process start in a process of their own
# (`python -m ci ...`) once the run's tests are known, one after the other, and their fixtures
# (tests/e2e/conftest.py) wait for them: the tests that need none run meanwhile. A copy of the
# environment taken at the start: no test's monkeypatching reaches them.
EARLY_LANES = {  # the fixture waiting for it -> `python -m ci` arguments (and --out), in the order they run
    "cibuildwheel_lane": ["local", "--cibuildwheel"],  # first: the longest, and the replay reuses its wheel
    "release_replay": ["replay", "release.yml"],  # after it: one docker daemon on our folder at a time
    "next_torch_replay": ["replay", "next-torch.yml"],
    "aarch64_lane": ["local", "--arch", "aarch64"],
    "macos_lane": ["local", "--arch", "macos-arm64"],
    # last: the wheel built again without ccache, in the minutes when the tests leave a core idle
    "reproducible_build": ["build", "--torch", "{build_torch}"],
}
LANES = pytest.StashKey()


def unavailable(name: str) -> str | None:
    from ci.lanes import aarch64, container

    docker = container.missing  # the replay runs its build cells in the container lane
    return {"cibuildwheel_lane": docker, "release_replay": docker, "next_torch_replay": docker,
            "aarch64_lane": aarch64.unavailable}.get(name, lambda: None)()


def lane_args(name: str) -> list[str]:
    from ci.declaration import matrix

    return [a.format(build_torch=matrix.build_torch().minor) for a in EARLY_LANES[name]]


def reproducible_environ() -> dict[str, str]:
    """The reproducible-build lane: the session wheel's SOURCE_DATE_EPOCH, and compiled, never from
    ccache (the session's wheel may hold objects an earlier run compiled)."""
    from tests.e2e.conftest import EPOCH

    return {"SOURCE_DATE_EPOCH": EPOCH, "CCACHE_DISABLE": "1"}


class EarlyLanes:
    def __init__(self, names: list[str]):
        from ci.cli import USE_CURRENT_ENV
        from ci.stages import build

        self.folder = Path(tempfile.mkdtemp(prefix="torch-segment-ops-lanes-"))
        self.share = self.folder / "shared-builds"  # cibuildwheel runs shared with the replay's (build.shared)
        self.share.mkdir()
        self.skipped = {name: why for name in names if (why := unavailable(name))}
        self.runs = {name: (self.folder / name, threading.Event()) for name in names if name not in self.skipped}
        self.results: dict[str, tuple[int, str]] = {}
        self.times: dict[str, tuple[float, float]] = {}  # seconds since the lanes started: (start, end)
        self.waits: dict[str, float] = {}  # seconds the tests waited for each lane
        began = time.monotonic()
        self.current, self.stopping, self.lock = None, False, threading.Lock()
        environ = dict(os.environ, **{USE_CURRENT_ENV: "1", build.SHARE_VARIABLE: str(self.share)})
        own_environ = {"reproducible_build": reproducible_environ()}

        def run_all():
            for name, (out, done) in self.runs.items():
                log = self.folder / f"{name}.log"
                start = time.monotonic() - began
                try:
                    with log.open("w") as sink, self.lock:
                        if self.stopping:
                            raise RuntimeError("the test run ended first")
                        command = [sys.executable, "-m", "ci", *lane_args(name), "--out", str(out)]
                        self.current = subprocess.Popen(command, cwd=ROOT, env={**environ, **own_environ.get(name, {})},
                                                        stdout=sink, stderr=subprocess.STDOUT)
                    self.results[name] = (self.current.wait(), log.read_text())
                except Exception as error:  # its fixture fails with this instead of waiting forever
                    self.results[name] = (-1, repr(error))
                finally:
                    self.times[name] = (start, time.monotonic() - began)
                    done.set()

        threading.Thread(target=run_all, daemon=True).start()

    def result(self, name: str):
        """(out folder, the lane's output) once it is done; skips when the lane cannot run here, fails the
        test with its output if it failed."""
        if name in self.skipped:
            pytest.skip(f"{name}: {self.skipped[name]}")
        out, done = self.runs[name]
        waiting = time.monotonic()
        done.wait()
        self.waits.setdefault(name, time.monotonic() - waiting)
        code, output = self.results[name]
        if code != 0:
            pytest.fail(f"`python -m ci {' '.join(lane_args(name))}` exited {code}:\n{output[-6000:]}")
        return out, output

    def stop(self):
        """A lane still running (the run ended early, e.g. -x) is interrupted as Ctrl-C would: it undoes its
        mounts and stops its docker daemon."""
        with self.lock:
            self.stopping = True
        if self.current and self.current.poll() is None:
            self.current.send_signal(signal.SIGINT)
            try:
                self.current.wait(timeout=300)
            except subprocess.TimeoutExpired:
                self.current.kill()
                self.current.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def pytest_collection_finish(session):
    if session.config.option.collectonly:
        return
    needed = [name for name in EARLY_LANES if any(name in item.fixturenames for item in session.items)]
    session.config.stash[LANES] = EarlyLanes(needed)


def pytest_terminal_summary(terminalreporter, config):
    """When each early lane ran: whether the run waited for them or they for it."""
    lanes = config.stash.get(LANES, None)
    if lanes and lanes.times:
        terminalreporter.write_sep("-", "early lanes (own processes, one after the other)")
        for name, (start, end) in lanes.times.items():
            code = lanes.results.get(name, (None,))[0]
            waited = f", the tests waited {lanes.waits[name]:.0f} s for it" if name in lanes.waits else ""
            terminalreporter.write_line(f"{name}: {start:.0f}-{end:.0f} s after the tests were collected, "
                                        f"exit code {code}{waited}")


def pytest_sessionfinish(session):
    lanes = session.config.stash.get(LANES, None)
    if lanes:
        lanes.stop()


@pytest.fixture(scope="session")
def early_lanes(request) -> EarlyLanes:
    return request.config.stash[LANES]
