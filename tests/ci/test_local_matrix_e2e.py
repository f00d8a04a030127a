"""`local --matrix`: one final linux x86_64 wheel with a build for every declared
torch, verified natively in a clean env per (CPython, torch) cell. torch builds
not on local disk come from the registry (CUDA builds, GBs, cached; they run on
the CPU). Slow; run by .ci/run."""

import json
import zipfile

import pytest

from ci import local, matrix, report

pytestmark = pytest.mark.slow
CELLS = matrix.local_matrix_cells()


def test_the_cells_cover_every_torch_on_one_cpython_and_every_cpython_on_the_newest_torch():
    python = matrix.load()["local"]["python"]
    assert {t.minor for py, t in CELLS if py == python} == {t.minor for t in matrix.torches()}
    for py in matrix.load()["local"]["matrix_python"]:
        newest = [t for t in matrix.torches() if py in t.python][-1]
        assert (py, newest) in CELLS


def test_from_registry_only_for_what_is_not_on_disk():
    local = matrix.load()["local"]
    assert not any(matrix.from_registry(local["python"], matrix.torch(m).pin) for m in local["torch"])
    assert matrix.from_registry("3.12", matrix.torch(local["torch"][0]).pin)


@pytest.fixture(scope="module")
def matrix_wheelhouse(tmp_path_factory):
    out = tmp_path_factory.mktemp("matrix")
    print(local.run(out, cells="matrix"))
    return out


def test_every_cell_ran_the_final_wheel_natively(matrix_wheelhouse):
    (merged,) = matrix_wheelhouse.glob("*.whl")
    with zipfile.ZipFile(merged) as zf:
        builds = sorted(n.split("/")[2] for n in zf.namelist() if n.endswith("build.json"))
    assert builds == [f"torch_{t.minor.replace('.', '_')}" for t in matrix.torches()]
    records = json.loads((matrix_wheelhouse / "verification-native-matrix.json").read_text())
    assert sorted((r["python"], r["torch"]) for r in records) == sorted((py, t.minor) for py, t in CELLS)
    assert {(r["method"], r["result"]) for r in records} == {(report.NATIVE, "passed")}
