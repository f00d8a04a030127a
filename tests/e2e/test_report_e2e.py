"""The verification report over the lanes this test session ran."""

import shutil

import pytest

from ci.declaration import matrix
from ci.lanes import report
from ci.lanes.report import CROSS, NATIVE
from tests.ci.test_report import rows_by_cell


@pytest.mark.slow
def test_the_lanes_of_this_session_are_what_the_report_shows(wheelhouse, macos_wheelhouse, tmp_path):
    for lane in (wheelhouse, macos_wheelhouse):
        for record in lane.glob("verification-*.json"):
            shutil.copy(record, tmp_path / record.name)
    rows = rows_by_cell(report.collect(tmp_path))
    python = matrix.declaration().local.python
    for minor in matrix.declaration().local.torch:
        assert rows["linux-x86_64", python, minor]["method"] == NATIVE
        assert rows["linux-x86_64", python, minor]["result"] == "passed"
    # stable mode: the one macOS build serves every declared torch (cross-built, not run)
    macos = [t for t in matrix.torches()] if matrix.abi() == "stable" else [
        matrix.torch(m) for m in matrix.declaration().local.macos_torch]
    for t in macos:
        assert {rows["macos-arm64", py, t.minor]["method"] for py in t.python} == {CROSS}
    total, native = len(matrix.verify_cells("release")), len(matrix.declaration().local.torch)
    cross = sum(c["platform"] == "macos-arm64" and c["torch"] in {t.minor for t in macos}
                for c in matrix.verify_cells("release"))  # its free-threaded cells too
    assert report.report(tmp_path).splitlines()[0].startswith(
        f"{total} release cells: {native} ran natively, {cross} cross-built")
