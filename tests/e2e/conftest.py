import os

import pytest

from ci.lanes import local

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
def macos_wheelhouse(tmp_path_factory):
    """`python -m ci local --arch macos-arm64` run once per session: cross-built, repaired, audited, merged."""
    out = tmp_path_factory.mktemp("macos")
    print(local.run(out, arch="macos-arm64"))
    return out
