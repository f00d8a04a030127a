import json
import subprocess
from pathlib import Path

import pytest

from ci.stages import audit
from ci.stages.wheels import WheelInfo
from tests.ci.wheel_factory import make_wheel


def problems(path, check):
    return check(WheelInfo.read(path))


def test_consistent_per_torch_wheel_passes(tmp_path):
    wheel = make_wheel(tmp_path)
    assert problems(wheel, audit.check_metadata) == []
    assert problems(wheel, audit.check_tags) == []
    assert problems(wheel, audit.check_libraries) == []
    assert problems(wheel, audit.check_size) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metadata_version": "0.1.0+pt214"}, "METADATA Version"),
        ({"requires": "torch>=2.13"}, "should be torch==2.13.*"),
        ({"requires": None}, "exactly one Requires-Dist on torch"),
        ({"version": "0.1.0+pt214"}, "does not match its build"),
        ({"builds": {}}, "no compiled build"),
        ({"version": "0.1.0", "requires": "torch==2.13.*"}, "should be torch>=2.13,<2.14"),
    ],
)
def test_metadata_problems(tmp_path, kwargs, message):
    found = problems(make_wheel(tmp_path, **kwargs), audit.check_metadata)
    assert any(message in p for p in found), found


@pytest.mark.parametrize(
    "tag, message",
    [
        ("cp311-cp311-manylinux_2_28_x86_64", "expected tag cp310-abi3"),
        ("cp310-abi3-linux_x86_64", "not a repaired"),
    ],
)
def test_tag_problems(tmp_path, tag, message):
    found = problems(make_wheel(tmp_path, tag=tag), audit.check_tags)
    assert any(message in p for p in found), found


def test_expected_platform(tmp_path):
    wheel = WheelInfo.read(make_wheel(tmp_path))
    assert audit.check_tags(wheel, "manylinux_2_28_x86_64") == []
    assert "expected platform manylinux_2_28_aarch64" in audit.check_tags(wheel, "manylinux_2_28_aarch64")[0]


@pytest.mark.parametrize("graft", ["torch_segment_ops.libs/libc10-1a2b3c4d.so",
                                   "torch_segment_ops.libs/libgomp-a34b3233.so.1",
                                   "torch_segment_ops/.dylibs/libomp.dylib"])
def test_grafted_torch_or_openmp_library_is_rejected(tmp_path, graft):
    found = problems(make_wheel(tmp_path, extra={graft: b"x"}), audit.check_libraries)
    assert found == [f"grafted torch/OpenMP library {graft}"]


def test_size_budget(tmp_path):
    import os

    big = make_wheel(tmp_path, extra={"torch_segment_ops/blob.bin": os.urandom(1100 * 1024)})
    assert "over the 1024 KiB budget" in problems(big, audit.check_size)[0]


def test_policy_whitelist_comes_from_auditwheel():
    allowed = audit.allowed_libraries("manylinux_2_28_x86_64")
    assert {"libc.so.6", "libstdc++.so.6", "libm.so.6"} <= allowed and "libc10.so" not in allowed


@pytest.mark.parametrize("extra, message", [
    ("evil.pth", "unexpected file evil.pth"),
    ("torch_segment_ops/_builds/torch_2_13/libextra.so", "unexpected file torch_segment_ops/_builds/torch_2_13/lib"),
    ("torch_segment_ops/sub/_C.so", "unexpected file torch_segment_ops/sub/_C.so"),
    ("other_package/__init__.py", "unexpected file other_package/__init__.py"),
])
def test_only_what_a_wheel_of_ours_contains(tmp_path, extra, message):
    wheel = make_wheel(tmp_path, extra={extra: b"x"})
    assert any(message in p for p in problems(wheel, audit.check_contents)), problems(wheel, audit.check_contents)


def test_a_clean_synthetic_wheel_has_nothing_unexpected(tmp_path):
    assert problems(make_wheel(tmp_path), audit.check_contents) == []


def test_a_broken_wheel_is_reported_and_the_next_one_still_audited(tmp_path):
    import subprocess
    import sys

    broken = tmp_path / "torch_segment_ops-0.1.0+pt213-cp310-abi3-manylinux_2_28_x86_64.whl"
    broken.write_bytes(b"not a zip")
    other = tmp_path / "other"
    other.mkdir()
    good = make_wheel(other)
    proc = subprocess.run([sys.executable, "-m", "ci", "audit", str(broken), str(good)], capture_output=True,
                          text=True, cwd=audit.envs.ROOT,
                          env={"PATH": "/usr/bin:/bin", "TORCH_SEGMENT_OPS_USE_CURRENT_ENV": "1"})
    assert "Traceback" not in proc.stderr and proc.returncode == 4
    assert "not an intact wheel (BadZipFile" in proc.stdout
    assert f"{good.name}" in proc.stdout  # audited too (it fails only the external gates missing on PATH here)


STABLE_TAG = "py3-none-manylinux_2_28_x86_64"


def stable_wheel(tmp_path, source: str, name: str = "lib") -> Path:
    """A stable-ABI wheel whose library is compiled from `source` (undefined symbols are left for the loader)."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "lib.cpp").write_text(source)
    subprocess.run(["g++", "-shared", "-fPIC", "-g0", "-s", "-o", str(folder / "_C.so"), str(folder / "lib.cpp")],
                   check=True)
    record = json.dumps({"abi": "stable", "floor": "2.10", "torch": "2.13.0"}).encode()
    return make_wheel(folder, version="0.1.0", requires="torch>=2.10", tag=STABLE_TAG, builds={}, extra={
        "torch_segment_ops/_builds/stable/build.json": record,
        "torch_segment_ops/_builds/stable/_C.so": (folder / "_C.so").read_bytes()})


def test_stable_abi_gate(tmp_path):
    """A stable-mode library may call torch's C shim only: a libtorch/c10/ATen C++ symbol or (under a
    py3-none tag) a CPython symbol is refused, named."""
    shim_only = stable_wheel(tmp_path, 'extern "C" int aoti_torch_abi_version(); int f() { return '
                                       'aoti_torch_abi_version(); }', "ok")
    assert audit.check_stable_abi(WheelInfo.read(shim_only)) == []
    assert audit.check_tags(WheelInfo.read(shim_only)) == [] and audit.check_metadata(WheelInfo.read(shim_only)) == []
    cxx = stable_wheel(tmp_path, "namespace c10 { int get_num_threads(); } int f() { return c10::get_num_threads(); }",
                       "cxx")
    assert audit.check_stable_abi(WheelInfo.read(cxx)) == [
        "torch_segment_ops/_builds/stable/_C.so imports c10::get_num_threads(): a C++ symbol of libtorch/c10/ATen, "
        "not the stable ABI"]
    python = stable_wheel(tmp_path, 'extern "C" void* PyList_New(long); void* f() { return PyList_New(0); }', "py")
    assert audit.check_stable_abi(WheelInfo.read(python)) == [
        "torch_segment_ops/_builds/stable/_C.so imports the CPython symbol PyList_New, but the tag promises any "
        "interpreter"]


def test_stable_wheel_requires_torch_from_its_floor_without_a_cap(tmp_path):
    wheel = stable_wheel(tmp_path, "int f() { return 0; }")
    capped = make_wheel(tmp_path, version="0.1.0", requires="torch>=2.10,<2.16", tag=STABLE_TAG, builds={},
                        extra={name: data for name, data in WheelInfo.read(wheel).files.items() if "_builds" in name})
    assert audit.check_metadata(WheelInfo.read(capped)) == [
        "Requires-Dist torch<2.16,>=2.10 should be torch>=2.10"]
    abi3 = make_wheel(tmp_path, version="0.1.0", requires="torch>=2.10", builds={},
                      extra={name: data for name, data in WheelInfo.read(wheel).files.items() if "_builds" in name})
    assert audit.check_tags(WheelInfo.read(abi3)) == ["expected tag py3-none, got cp310-abi3"]
