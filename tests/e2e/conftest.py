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
def macos_wheelhouse(early_lanes, tmp_path_factory):
    """`python -m ci local --arch macos-arm64` run once per session: cross-built, repaired, audited, merged
    (started with the run when test_macos_e2e.py is in it, else here)."""
    if "macos" in early_lanes.runs:
        out, table = early_lanes.result("macos")
    else:
        out = tmp_path_factory.mktemp("macos")
        table = local.run(out, arch="macos-arm64")
    print(table)
    return out


@pytest.fixture(scope="session", autouse=True)
def shared_builds(tmp_path_factory):
    """One cibuildwheel run per set of inputs in this test run: the replay's build cell reuses the wheel
    the container lane built from the same tree and settings (and says so)."""
    folder = tmp_path_factory.mktemp("shared-builds")
    before = os.environ.get(build.SHARE_VARIABLE)
    os.environ[build.SHARE_VARIABLE] = str(folder)
    yield folder
    if before is None:
        os.environ.pop(build.SHARE_VARIABLE)
    else:
        os.environ[build.SHARE_VARIABLE] = before
