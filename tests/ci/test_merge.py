import zipfile

import pytest

from ci.errors import PipelineError
from ci.stages import audit, merge
from ci.stages.wheels import WheelInfo
from tests.ci.wheel_factory import make_wheel


def per_torch(tmp_path, minor, patch="0", **changes):
    folder = tmp_path / minor
    folder.mkdir()
    label = "pt" + minor.replace(".", "")
    return make_wheel(folder, version=f"0.1.0+{label}", torch=f"{minor}.{patch}", requires=f"torch=={minor}.*",
                      **changes)


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
    with pytest.raises(PipelineError, match="does not match"):
        merge.merge([a, b], tmp_path / "out")
    dup = tmp_path / "dup"
    dup.mkdir()
    c = make_wheel(dup, builds={"torch_2_13_b": "2.13.1"})
    with pytest.raises(PipelineError, match="same torch minor"):
        merge.merge([a, c], tmp_path / "out")


def test_refuses_stable_wheels(tmp_path):
    stable = make_wheel(tmp_path, version="0.1.0", requires="torch>=2.10", tag="py3-none-manylinux_2_28_x86_64",
                        builds={}, extra={"torch_segment_ops/_builds/stable/build.json":
                                          b'{"abi": "stable", "floor": "2.10", "torch": "2.13.0"}',
                                          "torch_segment_ops/_builds/stable/_C.so": b"library"})
    with pytest.raises(PipelineError, match="holds a stable-ABI build, which is final"):
        merge.merge([stable, per_torch(tmp_path, "2.14")], tmp_path / "out")


def test_refuses_different_package_code(tmp_path):
    a = per_torch(tmp_path, "2.13")
    b = per_torch(tmp_path, "2.14", "1", extra={"torch_segment_ops/__init__.py": b"# another commit\n"})
    with pytest.raises(PipelineError, match="differs"):
        merge.merge([a, b], tmp_path / "out")


def raw_wheel(path, entries):
    """A wheel-shaped zip written without WheelFile, so it can hold what WheelFile would refuse."""
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


def test_refuses_a_file_that_only_one_input_has(tmp_path):
    a = per_torch(tmp_path, "2.13")
    b = per_torch(tmp_path, "2.14", "1", extra={"torch_segment_ops/extra.py": b"# only here\n"})
    with pytest.raises(PipelineError, match="extra.py is in only one of"):
        merge.merge([a, b], tmp_path / "out")


def test_refuses_metadata_that_differs_beyond_version_and_torch(tmp_path):
    a = per_torch(tmp_path, "2.13")
    b = per_torch(tmp_path, "2.14", "1", headers=["Requires-Dist: evil-package"])
    with pytest.raises(PipelineError, match="metadata of .* differs"):
        merge.merge([a, b], tmp_path / "out")


@pytest.mark.parametrize("entry, problem", [
    ("../outside.py", "unsafe path '../outside.py'"), ("/abs.py", "unsafe path '/abs.py'"),
    ("torch_segment_ops\\\\win.py", "unsafe path"), ("LINK", "symlink 'torch_segment_ops/link.py'"),
    ("DUP", "duplicate entry"),
])
def test_refuses_unsafe_or_duplicate_entries(tmp_path, entry, problem):
    good = per_torch(tmp_path, "2.13")
    with zipfile.ZipFile(good) as zf:
        entries = [(info, zf.read(info)) for info in zf.infolist()]
    if entry == "LINK":
        link = zipfile.ZipInfo("torch_segment_ops/link.py")
        link.external_attr = (0o120777 << 16)
        entries.append((link, b"/etc/passwd"))
    elif entry == "DUP":
        entries.append((zipfile.ZipInfo("torch_segment_ops/__init__.py"), b"# shadow\n"))
    else:
        entries.append((zipfile.ZipInfo(entry), b"x = 1\n"))
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = raw_wheel(bad_dir / good.name, entries)
    with pytest.raises(PipelineError, match=problem.replace("\\\\", "\\\\\\\\")):
        merge.merge([good, bad], tmp_path / "out")


def test_refuses_a_wheel_whose_files_do_not_match_record(tmp_path):
    good = per_torch(tmp_path, "2.13")
    with zipfile.ZipFile(good) as zf:
        entries = [(info, zf.read(info) if not info.filename.endswith("__init__.py") else b"# tampered\n")
                   for info in zf.infolist()]
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    with pytest.raises(PipelineError, match="is not an intact wheel"):
        merge.merge([raw_wheel(bad_dir / good.name, entries)], tmp_path / "out")
