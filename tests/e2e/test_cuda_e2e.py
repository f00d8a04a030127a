"""The CUDA builds inside the real linux x86_64 wheel (`python -m ci local`; cu12 built with Debian's
nvcc 12.4, cu13 with the registry's nvcc 13.0): their records, and the audit gates on it and on
tampered copies of it. No GPU here: the
kernels are compiled and loaded under torch's CUDA builds (test_pipeline_e2e, the matrix lane), and
run only by the GPU check (`python -m ci gpu-check`, tests/gpu). Slow; run by .ci/run."""

import subprocess
import zipfile

import pytest
from wheel.wheelfile import WheelFile

from ci.declaration import matrix
from ci.stages import audit, cuda
from ci.stages.wheels import WheelInfo

pytestmark = pytest.mark.slow
MAJORS = matrix.platform("linux-x86_64").cuda
CU = "torch_segment_ops/_builds/cu13"


def final(wheelhouse):
    (wheel,) = wheelhouse.glob("*.whl")
    return wheel


def rewrite(wheel, out, change):
    """A copy of wheel with files replaced (name -> bytes) or removed (name -> None); RECORD is rewritten."""
    target = out / wheel.name
    with zipfile.ZipFile(wheel) as src, WheelFile(target, "w") as dst:
        for info in src.infolist():
            if info.filename.endswith(".dist-info/RECORD") or change.get(info.filename, b"") is None:
                continue
            dst.writestr(info.filename, change.get(info.filename, src.read(info.filename)))
        for name, data in change.items():
            if data is not None and name not in src.namelist():
                dst.writestr(name, data)
    return WheelInfo.read(target)


def test_the_wheel_holds_the_cpu_build_and_one_cuda_build_per_declared_major(wheelhouse):
    info = WheelInfo.read(final(wheelhouse))
    assert set(info.records) == {"stable", *(f"cu{major}" for major in MAJORS)} and MAJORS == ("12", "13")
    for major in MAJORS:
        spec, record = matrix.cuda(major), info.records[f"cu{major}"]
        assert record["cuda"] == cuda.toolkit_version(major) and record["cuda_torch"] == spec.torch
        assert record["floor"] == matrix.torch_floor() and record["archs"] == list(spec.elf_archs)
        assert record["ptx"] == "compute_" + spec.ptx.replace(".", "")
    assert audit.check_cuda(info) == [] and audit.check_libraries(info) == [] and audit.check_stable_abi(info) == []
    budget = matrix.declaration().package.max_cuda_wheel_kib
    assert info.size < budget * 1024 and audit.check_size(info) == []


@pytest.mark.parametrize("major", MAJORS)
def test_the_fatbin_holds_the_declared_architectures(wheelhouse, major):
    library = WheelInfo.read(final(wheelhouse)).files[f"torch_segment_ops/_builds/cu{major}/_C.so"]
    spec = matrix.cuda(major)
    assert audit.fatbin_listing(library, "elf") == list(spec.elf_archs)
    assert audit.fatbin_listing(library, "ptx") == ["sm_" + spec.ptx.replace(".", "")]


@pytest.mark.parametrize("major", MAJORS)
def test_the_cuda_build_links_only_the_cuda_runtime_of_its_major(wheelhouse, major):
    elf = audit.elf_files(WheelInfo.read(final(wheelhouse)))[f"torch_segment_ops/_builds/cu{major}/_C.so"]
    assert [lib for lib in audit.needed(elf) if audit.is_cuda_library(lib)] == [f"libcudart.so.{major}"]


def test_a_build_of_one_major_cannot_pose_as_the_other(wheelhouse, tmp_path):
    cu12 = WheelInfo.read(final(wheelhouse)).files["torch_segment_ops/_builds/cu12/_C.so"]
    swapped = rewrite(final(wheelhouse), tmp_path, {f"{CU}/_C.so": cu12})
    problems = audit.check_cuda(swapped) + audit.check_libraries(swapped)
    assert f"{CU}/_C.so needs libcudart.so.12: a CUDA 13 build may link only libcudart.so.13" in problems
    assert any(p.startswith("cu13: machine code for ['sm_50'") for p in problems)


def test_audit_refuses_a_fatbin_without_the_declared_architectures(wheelhouse, tmp_path):
    info = WheelInfo.read(final(wheelhouse))
    cpu_library = info.files["torch_segment_ops/_builds/stable/_C.so"]
    no_fatbin = rewrite(final(wheelhouse), tmp_path, {f"{CU}/_C.so": cpu_library})
    assert audit.check_cuda(no_fatbin) == [
        f"cu13: machine code for no architecture, declared {list(matrix.cuda('13').elf_archs)}",
        "cu13: PTX for no architecture, declared sm_120"]


def test_audit_refuses_a_record_that_does_not_match_the_declaration(wheelhouse, tmp_path):
    info = WheelInfo.read(final(wheelhouse))
    record = info.files[f"{CU}/build.json"].replace(b'"sm_75",', b"")
    assert "build.json archs" in audit.check_cuda(rewrite(final(wheelhouse), tmp_path, {f"{CU}/build.json": record}))[0]


def test_audit_refuses_a_wheel_missing_a_declared_cuda_build(wheelhouse, tmp_path):
    stripped = rewrite(final(wheelhouse), tmp_path, {f"{CU}/_C.so": None, f"{CU}/build.json": None})
    assert audit.check_cuda(stripped) == ["no CUDA 13 build (ci/declaration/matrix.toml declares it for linux-x86_64)"]


def test_audit_refuses_grafted_or_extra_cuda_libraries(wheelhouse, tmp_path):
    library = WheelInfo.read(final(wheelhouse)).files[f"{CU}/_C.so"]
    (tmp_path / "a").mkdir()  # a real ELF file under the name auditwheel would give a grafted CUDA runtime
    grafted = rewrite(final(wheelhouse), tmp_path / "a", {"torch_segment_ops.libs/libcudart-0123abcd.so.13": library})
    assert "grafted CUDA library torch_segment_ops.libs/libcudart-0123abcd.so.13" in audit.check_libraries(grafted)
    patched = tmp_path / "patched.so"
    patched.write_bytes(library)
    subprocess.run(["patchelf", "--add-needed", "libcublas.so.13", str(patched)], check=True)
    (tmp_path / "b").mkdir()
    extra = rewrite(final(wheelhouse), tmp_path / "b", {f"{CU}/_C.so": patched.read_bytes()})
    assert audit.check_libraries(extra) == [
        f"{CU}/_C.so needs libcublas.so.13: a CUDA 13 build may link only libcudart.so.13"]
