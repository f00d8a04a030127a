import os

import pytest

from ci.lanes import local
from ci.stages import build

EPOCH = "1700000000"


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory):
    """The real pipeline (`python -m ci local`) run once per test session: per-torch
    wheels for the torch builds at hand, repaired, audited, merged, smoke-tested."""
    out = tmp_path_factory.mktemp("wheelhouse")
    before = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
    try:
        table = local.run(out)  # raises PipelineError with the table if any stage fails
    finally:
        if before is None:
            os.environ.pop("SOURCE_DATE_EPOCH")
        else:
            os.environ["SOURCE_DATE_EPOCH"] = before
    print(table)
    return out


@pytest.fixture(scope="session")
def cibuildwheel_lane(early_lanes):
    """`python -m ci local --cibuildwheel` (tests/conftest.py: started with the run): (out, its output)."""
    return early_lanes.result("cibuildwheel_lane")


@pytest.fixture(scope="session")
def release_replay(early_lanes):
    """`python -m ci replay release.yml` (started with the run, after the container lane): (out, its output)."""
    return early_lanes.result("release_replay")


@pytest.fixture(scope="session")
def next_torch_replay(early_lanes):
    """`python -m ci replay next-torch.yml` (started with the run): (out, its output)."""
    return early_lanes.result("next_torch_replay")


@pytest.fixture(scope="session")
def aarch64_lane(early_lanes):
    """`python -m ci local --arch aarch64` (started with the run): (out, its table)."""
    return early_lanes.result("aarch64_lane")


@pytest.fixture(scope="session")
def macos_lane(early_lanes):
    """`python -m ci local --arch macos-arm64` (started with the run): (out, its table)."""
    return early_lanes.result("macos_lane")


@pytest.fixture(scope="session")
def reproducible_build(early_lanes):
    """`python -m ci build --torch <build torch>` again (started with the run; see tests/conftest.py): its
    folder."""
    return early_lanes.result("reproducible_build")[0]


@pytest.fixture(scope="session")
def macos_wheelhouse(macos_lane):
    """The macOS lane's folder: cross-built, repaired, audited, merged."""
    out, table = macos_lane
    print(table)
    return out


@pytest.fixture(scope="session", autouse=True)
def shared_builds(early_lanes):
    """One cibuildwheel run per set of inputs in this test run: the replay's build cell reuses the wheel
    the container lane built from the same tree and settings (and says so)."""
    before = os.environ.get(build.SHARE_VARIABLE)
    os.environ[build.SHARE_VARIABLE] = str(early_lanes.share)
    yield early_lanes.share
    if before is None:
        os.environ.pop(build.SHARE_VARIABLE)
    else:
        os.environ[build.SHARE_VARIABLE] = before
