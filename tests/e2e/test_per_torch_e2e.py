"""Per-torch mode end to end, on a second extension (tests/fixtures/aten_ext: one op on the full
ATen C++ API): the same verbs that ship torch-segment-ops build it once per torch minor at hand,
repair, audit, merge and smoke-test it, reading its names from its wheels, never ours. Slow."""

import subprocess
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from ci.declaration import matrix
from ci.stages import audit, build, merge, repair, smoke
from ci.stages.wheels import WheelInfo

pytestmark = pytest.mark.slow
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "aten_ext"
PYTHON = matrix.declaration().local.python
MINORS = matrix.declaration().local.torch  # the torch builds on local disk: 2.13, 2.14


@pytest.fixture(scope="module")
def per_torch(tmp_path_factory):
    """minor -> its repaired per-torch wheel, and the merged wheel."""
    out = tmp_path_factory.mktemp("per-torch")
    wheels = {}
    for minor in MINORS:
        t = matrix.torch(minor)
        built = build.build(minor, out / "build", PYTHON, source=FIXTURE)
        lib_dir = build.torch_base(PYTHON, t.pin).site_packages / "torch" / "lib"
        wheels[minor] = repair.repair(built, out / "repaired", lib_dir=lib_dir)
    return wheels, merge.merge(list(wheels.values()), out / "final")


def test_each_build_is_an_abi3_wheel_for_its_torch_minor_and_passes_audit(per_torch):
    wheels, _ = per_torch
    for minor, wheel in wheels.items():
        info = WheelInfo.read(wheel)
        label = matrix.torch(minor).label
        assert wheel.name == f"aten_ext_fixture-1.2.0+{label}-cp310-abi3-manylinux_2_34_x86_64.whl"
        assert info.package == "aten_ext_fixture" and not info.stable
        assert str(info.torch_requirement) == f"torch=={minor}.*"
        assert audit.audit(wheel) == []


def test_it_really_needs_the_aten_api(per_torch):
    """What makes it per-torch: its library imports ATen C++ symbols (a stable build may not)."""
    wheels, _ = per_torch
    info = WheelInfo.read(next(iter(wheels.values())))
    (library,) = [c for n, c in info.files.items() if n.endswith(".so")]
    assert any("at::" in symbol for symbol in audit.undefined_symbols(library))


def test_the_merged_wheel_holds_every_build_and_passes_audit(per_torch):
    _, merged = per_torch
    info = WheelInfo.read(merged)
    assert merged.name == "aten_ext_fixture-1.2.0-cp310-abi3-manylinux_2_34_x86_64.whl"
    assert sorted(info.builds) == [f"torch_{m.replace('.', '_')}" for m in MINORS]
    assert info.torch_requirement.specifier == SpecifierSet(matrix.requires_torch(MINORS).removeprefix("torch"))
    assert audit.audit(merged) == []


@pytest.mark.parametrize("minor", MINORS)
def test_the_merged_wheel_picks_the_build_of_each_torch(per_torch, minor):
    _, merged = per_torch
    result = smoke.smoke(merged, PYTHON, matrix.torch(minor).pin, check=FIXTURE / "smoke_check.py")
    assert result.ok, result.output
    assert f"build torch_{minor.replace('.', '_')}" in result.output


def test_a_per_torch_wheel_under_another_torch_fails_clearly(per_torch):
    wheels, _ = per_torch
    first, other = MINORS[0], MINORS[1]
    with smoke.wheel_env(wheels[first], PYTHON, matrix.torch(other).pin) as env:
        proc = subprocess.run([str(env.python), "-c", "import aten_ext_fixture"], capture_output=True, text=True,
                              cwd="/")
    assert proc.returncode == 1, proc.stderr  # an exception, not a crash
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ImportError: aten_ext_fixture was built for torch {first}, but torch "
                           f"{matrix.torch(other).pin}"), last
    assert "undefined symbol" not in proc.stderr
