import pytest

from ci import audit, merge
from ci.wheels import WheelInfo
from tests.ci.wheel_factory import make_wheel


def per_torch(tmp_path, minor, patch="0"):
    folder = tmp_path / minor
    folder.mkdir()
    label = "pt" + minor.replace(".", "")
    return make_wheel(folder, version=f"0.1.0+{label}", torch=f"{minor}.{patch}", requires=f"torch=={minor}.*")


def test_merge_layout_version_and_requirement(tmp_path):
    wheels = [per_torch(tmp_path, "2.14", "1"), per_torch(tmp_path, "2.13")]
    merged = WheelInfo.read(merge.merge(wheels, tmp_path / "out"))  # reading verifies RECORD hashes
    assert merged.path.name == "torch_segment_ops-0.1.0-cp310-abi3-manylinux_2_28_x86_64.whl"
    assert merged.builds == {"torch_2_13": "2.13.0", "torch_2_14": "2.14.1"}
    assert str(merged.torch_requirement) == "torch<2.15,>=2.13"
    assert merged.dist_info == "torch_segment_ops-0.1.0.dist-info"
    assert "A description." in merged.files["torch_segment_ops-0.1.0.dist-info/METADATA"].decode()
    assert audit.check_metadata(merged) == []
    names = list(merged.files)
    assert names[-1].endswith("RECORD") and all(".dist-info/" in n for n in names[names.index(
        "torch_segment_ops-0.1.0.dist-info/METADATA"):])


def test_merge_is_deterministic(tmp_path):
    wheels = [per_torch(tmp_path, "2.13"), per_torch(tmp_path, "2.14")]
    first = merge.merge(wheels, tmp_path / "a").read_bytes()
    assert merge.merge(list(reversed(wheels)), tmp_path / "b").read_bytes() == first


def test_refuses_mismatched_inputs(tmp_path):
    a = per_torch(tmp_path, "2.13")
    other = tmp_path / "other"
    other.mkdir()
    b = make_wheel(other, version="0.2.0+pt214", torch="2.14.1", requires="torch==2.14.*")
    with pytest.raises(SystemExit, match="does not match"):
        merge.merge([a, b], tmp_path / "out")
    dup = tmp_path / "dup"
    dup.mkdir()
    c = make_wheel(dup, builds={"torch_2_13_b": "2.13.1"})
    with pytest.raises(SystemExit, match="same torch minor"):
        merge.merge([a, c], tmp_path / "out")


def test_refuses_different_package_code(tmp_path):
    a = per_torch(tmp_path, "2.13")
    other = tmp_path / "other"
    other.mkdir()
    b = make_wheel(other, version="0.1.0+pt214", torch="2.14.1", requires="torch==2.14.*",
                   extra={"torch_segment_ops/__init__.py": b"# another commit\n"})
    with pytest.raises(SystemExit, match="differs"):
        merge.merge([a, b], tmp_path / "out")
