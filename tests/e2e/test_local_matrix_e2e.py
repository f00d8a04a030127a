"""`local --matrix`: the ONE stable linux x86_64 wheel, built once, verified natively in a clean env
per (CPython, torch) cell by the smoke check and the op test suite: every declared torch from the
floor (2.10) to 2.15 on CPython 3.11, and CPython 3.10/3.12/3.13. torch builds not on local disk
come from the registry (CUDA builds, GBs, cached; they run on the CPU): under those the wheel's build
for their CUDA major is loaded (cu12 under torch 2.10's CUDA 12.8, cu13 under 2.11-2.15; its kernels
registered, not run: no GPU here); a torch of a major without a build would get the clear ImportError
and run on the CPU kernels (TORCH_SEGMENT_OPS_CPU_ONLY=1). Slow."""

import json
import re
import zipfile

import pytest

from ci.declaration import matrix
from ci.lanes import local, report

pytestmark = pytest.mark.slow
CELLS = matrix.local_matrix_cells()


def test_the_cells_cover_every_torch_on_one_cpython_and_every_cpython_on_the_newest_torch():
    python = matrix.declaration().local.python
    assert {t.minor for py, t in CELLS if py == python} == {t.minor for t in matrix.torches()}
    for py in matrix.declaration().local.matrix_python:
        newest = [t for t in matrix.torches() if py in t.python][-1]
        assert (py, newest) in CELLS


def test_from_registry_only_for_what_is_not_on_disk():
    local = matrix.declaration().local
    assert not any(matrix.from_registry(local.python, matrix.torch(m).pin) for m in local.torch)
    assert matrix.from_registry("3.12", matrix.torch(local.torch[0]).pin)


def test_the_cells_start_at_the_floor():
    assert [t.minor for py, t in CELLS if py == matrix.declaration().local.python][0] == matrix.torch_floor()


@pytest.fixture(scope="module")
def matrix_lane(tmp_path_factory, wheelhouse):
    """The matrix lane on the wheel the session's `local` run built (built once per test run)."""
    out = tmp_path_factory.mktemp("matrix")
    table = local.run(out, cells="matrix", final=next(wheelhouse.glob("*.whl")))
    print(table)
    return out, table


def test_every_cell_ran_the_op_tests_on_the_same_wheel_natively(matrix_lane):
    out, table = matrix_lane
    (final,) = out.glob("*.whl")
    with zipfile.ZipFile(final) as zf:
        builds = sorted(n.split("/")[2] for n in zf.namelist() if n.endswith("build.json"))
    assert builds == sorted(["stable", *(f"cu{m}" for m in matrix.platform("linux-x86_64").cuda)])  # built once ...
    records = json.loads((out / "verification-native-matrix.json").read_text())
    assert sorted((r["python"], r["torch"]) for r in records) == sorted((py, t.minor) for py, t in CELLS)
    assert {r["method"] for r in records} == {report.NATIVE}
    assert all(r["result"].startswith("passed") for r in records), records
    for r in records:  # a cell whose torch's CUDA major has no build says that only the CPU kernels ran
        unserved = matrix.torch(r["torch"]).cuda.split(".")[0] not in matrix.platform("linux-x86_64").cuda
        assert ("CPU kernels tested with TORCH_SEGMENT_OPS_CPU_ONLY=1" in r["result"]) == (
            unserved and matrix.from_registry(r["python"], matrix.torch(r["torch"]).pin)), r
    assert len([line for line in table.splitlines() if line.startswith("| op tests")]) == len(CELLS)
    rows = [text for cell, text in local.read_log(out).items() if cell.startswith("op tests")]
    assert len(rows) == len(CELLS)  # ... and the op test suite passed under each (CPython, torch)
    for (python, t), row in zip(CELLS, rows):
        assert f"torch {t.pin}" in row and f"python {python}." in row and "build stable" in row
        assert re.search(r"op tests: \d+ passed", row) and "failed" not in row, row
        if matrix.from_registry(python, t.pin):  # PyPI's default build: a CUDA build of the declared version
            served = t.cuda.split(".")[0] in matrix.platform("linux-x86_64").cuda
            major = t.cuda.split(".")[0]
            assert (f"build stable + cu{major} " in row) if served else \
                (f"torch uses CUDA {t.cuda}, the wheel has CUDA" in row and "import refused" in row), row
