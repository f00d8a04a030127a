import pytest

from ci import audit
from ci.wheels import WheelInfo
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
                          text=True, cwd=audit.matrix.MATRIX.parent.parent,
                          env={"PATH": "/usr/bin:/bin", "TORCH_SEGMENT_OPS_USE_CURRENT_ENV": "1"})
    assert "Traceback" not in proc.stderr and proc.returncode == 1
    assert "not an intact wheel (BadZipFile" in proc.stdout
    assert f"{good.name}" in proc.stdout  # audited too (it fails only the external gates missing on PATH here)
