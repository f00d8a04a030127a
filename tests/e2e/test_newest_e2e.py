"""`local --newest`: the session's ONE linux x86_64 wheel under the CPythons pyenv lacks here, natively:
Debian sid's CPython 3.14 (torch 2.10 and 2.15) and 3.15 (torch 2.15) in a cached sid rootfs, and a
free-threaded CPython 3.13 built from Debian's source (torch 2.10.0 and 2.12.0, cp313t wheels) with the
GIL disabled. Each cell: the smoke check (every op from 8 Python threads agrees with one) and tests/ops.
Slow; root. Cold: the rootfs (~35 s), the CPython build (~3-8 min), ~2.8 GB of torch wheels."""

import json
import re

import pytest

from ci.declaration import matrix
from ci.lanes import local, newest, report

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(newest.unavailable()), reason=f"newest lane: {newest.unavailable()}")]
CELLS = newest.cells()


@pytest.fixture(scope="module")
def newest_lane(tmp_path_factory, wheelhouse):
    out = tmp_path_factory.mktemp("newest")
    table = local.run(out, cells="newest", final=next(wheelhouse.glob("*.whl")))
    print(table)
    return out, table


def test_the_cells_are_3_14_and_3_15_from_sid_and_3_13t_each_with_its_oldest_and_newest_torch():
    assert [(c.python, c.torch.minor, c.pin) for c in CELLS] == [
        ("3.14", "2.10", "2.10.0"), ("3.14", "2.15", "2.15.0"), ("3.15", "2.15", "2.15.0"),
        ("3.13t", "2.10", "2.10.0"), ("3.13t", "2.12", "2.12.0")]


def test_every_cell_ran_the_op_tests_natively_on_the_same_wheel(newest_lane):
    out, table = newest_lane
    records = json.loads((out / "verification-newest-python.json").read_text())
    assert [(r["python"], r["torch"]) for r in records] == [(c.python, c.torch.minor) for c in CELLS]
    assert all(r["result"].startswith("passed") for r in records), records
    assert {r["method"] for r in records if r["python"].endswith("t")} == {report.FREE_THREADED}
    assert {r["method"] for r in records if not r["python"].endswith("t")} == {report.SID}
    rows = [text for cell, text in local.read_log(out).items() if cell.startswith("op tests")]
    assert len(rows) == len(CELLS)
    for cell, row in zip(CELLS, rows):
        assert f"torch {cell.pin}" in row and f"python {cell.version}." in row and "build stable" in row, row
        assert re.search(r"op tests: \d+ passed", row) and " failed" not in row.splitlines()[0], row
        if cell.free_threaded:
            assert "free-threaded CPython, GIL disabled" in row, row
        assert "threads ok: every op from 8 Python threads" in row, row


def test_the_report_marks_the_cells_as_run_natively(newest_lane):
    out, _ = newest_lane
    rows = {(r["python"], r["torch"]): r for r in report.cells(report.collect(out))
            if r["platform"] == "linux-x86_64"}
    for cell in CELLS:
        assert rows[(cell.python, cell.torch.minor)]["method"] == (
            report.FREE_THREADED if cell.free_threaded else report.SID)
    assert {py for py, _ in rows if py.endswith("t")} == {"3.13t", "3.14t", "3.15t"}
    assert matrix.declaration().local.free_threaded_python == ("3.13",)
