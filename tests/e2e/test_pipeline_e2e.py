"""The real pipeline on this machine: the one stable-ABI wheel, built against the build torch,
repaired, audited and smoke-tested under each torch at hand (2.13 and 2.14); plus the failure
modes users hit. Slow (a few minutes), run by .ci/run."""

import platform
import re
import subprocess
import zipfile

import pytest
from wheel.wheelfile import WheelFile

from ci.declaration import matrix
from ci.publish import guard
from ci.stages import audit, repair, smoke
from ci.stages.wheels import WheelInfo
from tests.e2e.conftest import EPOCH
from tests.old_names import members, old_names

pytestmark = pytest.mark.slow


# The newest torch below the floor: a real one, from the registry (several GB once, then cached).
BELOW_FLOOR = "2.9.1"


def final(wheelhouse):
    (wheel,) = wheelhouse.glob("*.whl")
    return wheel


def test_the_final_wheel_is_one_stable_build_and_passes_audit(wheelhouse):
    wheel = final(wheelhouse)
    floor = matrix.torch_floor()
    # the manylinux tag auditwheel reached from this machine's glibc, which the audit proves true of the file
    assert re.fullmatch(rf"torch_segment_ops-0\.1\.0-{matrix.wheel_tag_prefix()}-manylinux_\d+_\d+_"
                        rf"{platform.machine()}\.whl", wheel.name), wheel.name
    assert audit.audit(wheel) == []
    info = WheelInfo.read(wheel)
    assert info.records["stable"] == {"abi": "stable", "floor": floor, "torch": "2.13.0+cpu"}
    assert set(info.records) == {"stable", *(f"cu{major}" for major in matrix.platform("linux-x86_64").cuda)}
    assert str(info.torch_requirement) == f"torch>={floor}"
    assert not (wheelhouse / "per-torch").exists() or not list((wheelhouse / "per-torch").iterdir())  # no merge


@pytest.mark.parametrize("minor", matrix.declaration().local.torch)
def test_the_same_wheel_smoke_under_each_torch(wheelhouse, minor):
    result = smoke.smoke(final(wheelhouse), matrix.declaration().local.python, matrix.torch(minor).pin)
    assert result.ok, result.output
    assert f"torch {matrix.torch(minor).pin}" in result.output and "build stable" in result.output
    # the torch builds on disk: 2.13.0 is a CPU build, 2.14.1 PyPI's CUDA 13.0 build
    cuda = "CUDA build cu13 (nvcc 13.0) loaded, torch uses CUDA 13.0" if "+cu13" in result.output else \
        "no CUDA build loaded (a CPU torch"
    assert cuda in result.output


def test_under_a_torch_older_than_the_floor_the_import_fails_clearly(wheelhouse):
    with smoke.wheel_env(final(wheelhouse), matrix.declaration().local.python, BELOW_FLOOR, registry=True) as env:
        proc = subprocess.run([str(env.python), "-c", "import torch_segment_ops"], capture_output=True, text=True,
                              cwd="/")
    assert proc.returncode == 1, proc.stderr  # an exception, not a crash (a signal gives a negative code)
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ImportError: torch_segment_ops 0.1.0 needs torch>={matrix.torch_floor()}"), last
    assert f"torch {BELOW_FLOOR}" in last and "undefined symbol" not in proc.stderr


def test_audit_rejects_a_wheel_with_grafted_torch(wheelhouse, tmp_path):
    good = final(wheelhouse)
    broken = tmp_path / good.name
    with zipfile.ZipFile(good) as src, WheelFile(broken, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("RECORD"):
                dst.writestr(info, src.read(info))
        libc10 = envs_torch_lib("2.13") / "libc10.so"
        dst.writestr("torch_segment_ops.libs/libc10-5f2a1b3c.so", libc10.read_bytes())
    problems = audit.audit(broken)
    assert "grafted torch/OpenMP library torch_segment_ops.libs/libc10-5f2a1b3c.so" in problems


def envs_torch_lib(minor):
    from ci.util import envs

    return envs.base_env(matrix.declaration().local.python, matrix.torch(minor).pin).site_packages / "torch" / "lib"


def test_builds_are_reproducible(wheelhouse, reproducible_build, tmp_path, monkeypatch):
    """Same commit, same SOURCE_DATE_EPOCH, another source folder: byte-identical wheel, before and
    after the repair. The second build (an early lane) compiled again, never from ccache."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    first = next((wheelhouse / "build").glob("*.whl"))
    again = next(reproducible_build.glob("*.whl"))
    assert again.name == first.name
    assert again.read_bytes() == first.read_bytes()
    repaired = repair.repair(again, tmp_path / "repaired")
    assert repaired.read_bytes() == next(wheelhouse.glob("*.whl")).read_bytes()


def test_no_old_name_in_any_wheel_and_each_names_our_repository(wheelhouse):
    """The rename is complete, and each wheel's metadata lets release-guard prove the name is ours."""
    wheels = [*wheelhouse.glob("*.whl"), *(wheelhouse / "build").glob("*.whl")]
    assert len(wheels) == 2
    for wheel in wheels:
        assert old_names(wheel) == [], wheel.name
        metadata = next(data for name, data in members(wheel).items() if name.endswith(".dist-info/METADATA"))
        named = {guard.repo_key(url) for url in guard.sources(metadata.decode())}
        assert guard.repo_key(guard.project()[1]) in named, wheel.name


def retagged(wheel, tmp_path, platform):
    """The same wheel claiming another platform tag (file name and WHEEL), RECORD rewritten."""
    old = next(iter(WheelInfo.read(wheel).tags)).platform
    out = tmp_path / wheel.name.replace(old, platform)
    with zipfile.ZipFile(wheel) as src, WheelFile(out, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("RECORD"):
                data = src.read(info)
                dst.writestr(info, data.replace(old.encode(), platform.encode()) if info.filename.endswith("/WHEEL")
                             else data)
    return out


def test_audit_rejects_a_tag_that_promises_an_older_glibc_or_another_arch(wheelhouse, tmp_path):
    """Built here against glibc 2.36 (it needs GLIBC_2.32+), the wheel must not claim manylinux_2_28."""
    merged = final(wheelhouse)
    old_glibc = audit.check_elf_platform(WheelInfo.read(retagged(merged, tmp_path, "manylinux_2_28_x86_64")))
    assert old_glibc and all("needs GLIBC_2.3" in p and "promises glibc 2.28" in p for p in old_glibc), old_glibc
    other_arch = audit.check_elf_platform(WheelInfo.read(retagged(merged, tmp_path, "manylinux_2_34_aarch64")))
    assert other_arch and all("is EM_X86_64, but the tag says aarch64" in p for p in other_arch), other_arch
