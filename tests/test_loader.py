"""The loader picks the build for the running torch, or fails with a clear ImportError."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torch_segment_ops
from torch_segment_ops import _loader

ROOT = Path(__file__).resolve().parent.parent


def make_builds(tmp_path, versions):
    for version in versions:
        build = tmp_path / f"torch_{version.replace('.', '_')}"
        build.mkdir()
        (build / "build.json").write_text(json.dumps({"torch": version}))
        (build / "_C.abi3.so").write_bytes(b"")
    return _loader.find_builds(tmp_path)


def test_selects_matching_minor(tmp_path):
    builds = make_builds(tmp_path, ["2.12.1", "2.13.0+cpu", "2.14.1"])
    assert _loader.select(builds, "2.13.1+cu128").torch_version == "2.13.0+cpu"
    assert _loader.select(builds, "2.14.0").library.name == "_C.abi3.so"


def test_mismatch_names_both_versions_and_the_fix(tmp_path):
    builds = make_builds(tmp_path, ["2.13.0", "2.14.1"])
    with pytest.raises(ImportError) as error:
        _loader.select(builds, "2.15.0", "0.1.0")
    message = str(error.value)
    assert "built for torch 2.13, 2.14" in message and "torch 2.15.0 is installed" in message
    assert "pip install 'torch==2.14.*'" in message


def test_no_builds_at_all(tmp_path):
    with pytest.raises(ImportError, match="no compiled build"):
        _loader.select(_loader.find_builds(tmp_path), "2.13.0")


def test_tests_use_the_installed_package():
    assert ROOT not in Path(torch_segment_ops.__file__).resolve().parents
    assert "site-packages" in torch_segment_ops.__file__


def test_import_with_mismatched_build_record(tmp_path):
    """A copy of the installed package whose record claims another torch."""
    copy = tmp_path / "torch_segment_ops"
    shutil.copytree(Path(torch_segment_ops.__file__).parent, copy)
    for record in copy.glob("_builds/*/build.json"):
        record.write_text(json.dumps({"torch": "2.99.0"}))
    result = subprocess.run(
        [sys.executable, "-c", "import torch_segment_ops"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "ImportError: torch_segment_ops" in result.stderr
    assert f"built for torch 2.99, but torch {torch.__version__} is installed" in result.stderr
    assert "undefined symbol" not in result.stderr


@pytest.mark.parametrize("folder, record", [
    *(("torch_2_13", r) for r in ["{not json", "[]", '{"other": 1}', '{"torch": 213}', '{"torch": "latest"}', ""]),
    *(("stable", r) for r in ['{"abi": "stable", "torch": "2.13.0"}', '{"abi": "stable", "floor": "x"}',
                              '{"abi": "other", "torch": "2.13.0"}'])])
def test_a_corrupt_build_record_is_a_clear_import_error(tmp_path, folder, record):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "build.json").write_text(record)
    with pytest.raises(ImportError, match=f"corrupt build record .*{folder}/build.json.*reinstall torch-segment-ops"):
        _loader.find_builds(tmp_path)


@pytest.mark.parametrize("record", ["[" * 100_000 + "]" * 100_000, '{"torch": ' * 50_000 + "1" + "}" * 50_000,
                                    "\udcff", '{"torch": "2.13.0", "abi": ["stable"]}'])
def test_any_unreadable_record_is_the_import_error(tmp_path, record):
    """Deep nesting (RecursionError in json), undecodable bytes, unhashable values: still the ImportError."""
    (tmp_path / "torch_2_13").mkdir()
    (tmp_path / "torch_2_13" / "build.json").write_bytes(record.encode("utf-8", "surrogateescape"))
    with pytest.raises(ImportError, match="corrupt build record .*torch_2_13/build.json"):
        _loader.find_builds(tmp_path)


@pytest.mark.parametrize("folder", ["__pycache__", ".hidden", "_private", "stable", "cu13", "torch_2_13",
                                    "torch_2_13_0+cpu"])
def test_the_loader_and_the_audit_agree_on_what_a_build_folder_is(tmp_path, folder):
    from ci.declaration import names

    make_stable(tmp_path, name=folder)
    loaded = [b.directory.name for b in _loader.find_builds(tmp_path)]
    audited = bool(names.BUILD_RECORD.match(f"torch_segment_ops/_builds/{folder}/build.json"))
    assert (loaded == [folder]) == audited


def test_two_builds_for_one_torch_minor_is_a_clear_import_error(tmp_path):
    make_builds(tmp_path, ["2.13.0"])
    (tmp_path / "torch_2_13_again").mkdir()
    (tmp_path / "torch_2_13_again" / "build.json").write_text(json.dumps({"torch": "2.13.1"}))
    with pytest.raises(ImportError, match=r"two builds for torch 2.13 \(torch_2_13_0, torch_2_13_again\)"):
        _loader.find_builds(tmp_path)


def make_stable(tmp_path, floor="2.10", name="stable"):
    build = tmp_path / name
    build.mkdir()
    (build / "build.json").write_text(json.dumps({"abi": "stable", "floor": floor, "torch": "2.13.0+cpu"}))
    (build / "_C.so").write_bytes(b"")
    return build


@pytest.mark.parametrize("torch_version", ["2.10.0", "2.13.0+cpu", "2.15.0+cu132", "2.99.0", "3.0.0a0+git1234"])
def test_a_stable_build_serves_every_torch_from_its_floor(tmp_path, torch_version):
    make_stable(tmp_path)
    assert _loader.select(_loader.find_builds(tmp_path), torch_version).library.name == "_C.so"


def test_under_a_torch_older_than_the_floor_the_error_names_both(tmp_path):
    make_stable(tmp_path)
    with pytest.raises(ImportError) as error:
        _loader.select(_loader.find_builds(tmp_path), "2.9.1+cu128", "0.1.0")
    message = str(error.value)
    assert "needs torch>=2.10" in message and "torch 2.9.1+cu128 is installed" in message
    assert "pip install 'torch>=2.10'" in message


def test_a_per_torch_build_of_the_running_minor_wins_over_the_stable_one(tmp_path):
    make_stable(tmp_path)
    make_builds(tmp_path, ["2.13.0"])
    builds = _loader.find_builds(tmp_path)
    assert _loader.select(builds, "2.13.1").directory.name == "torch_2_13_0"
    assert _loader.select(builds, "2.14.0").directory.name == "stable"


def test_a_missing_build_record_is_a_clear_import_error(tmp_path):
    (tmp_path / "stable").mkdir()
    (tmp_path / "stable" / "_C.so").write_bytes(b"")
    with pytest.raises(ImportError, match=r"missing or corrupt build record .*stable/build.json \(FileNotFoundError"):
        _loader.find_builds(tmp_path)


def test_import_with_a_floor_above_the_running_torch(tmp_path):
    """A copy of the installed package whose stable record claims a floor above the running torch."""
    copy = tmp_path / "torch_segment_ops"
    shutil.copytree(Path(torch_segment_ops.__file__).parent, copy)
    (record,) = copy.glob("_builds/*/build.json")
    record.write_text(json.dumps({"abi": "stable", "floor": "2.99", "torch": "2.99.0"}))
    result = subprocess.run([sys.executable, "-c", "import torch_segment_ops"], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 1
    assert "needs torch>=2.99 (it is built on LibTorch's stable ABI" in result.stderr
    assert f"torch {torch.__version__} is installed" in result.stderr


def make_cuda(tmp_path, major="13", cuda="13.0", cuda_torch="2.11"):
    build = tmp_path / f"cu{major}"
    build.mkdir()
    (build / "build.json").write_text(json.dumps({"abi": "stable", "floor": "2.10", "torch": "2.13.0+cpu",
                                                  "cuda": cuda, "cuda_torch": cuda_torch}))
    (build / "_C.so").write_bytes(b"")
    return build


@pytest.mark.parametrize("torch_version, torch_cuda, expected", [
    ("2.14.1+cu130", "13.0", "cu13"), ("2.15.0+cu132", "13.2", "cu13"), ("2.11.0+cu126", "12.6", "cu12"),
    ("2.13.0+cpu", None, None)])
def test_the_cuda_build_is_the_one_of_torchs_cuda_major(tmp_path, torch_version, torch_cuda, expected):
    make_stable(tmp_path)
    make_cuda(tmp_path)
    make_cuda(tmp_path, "12", "12.8", "2.10")
    builds = _loader.find_builds(tmp_path)
    assert _loader.select(builds, torch_version).directory.name == "stable"  # the CPU build, always
    cuda = _loader.select_cuda(builds, torch_version, torch_cuda)
    assert (cuda.directory.name if cuda else None) == expected


def test_a_cuda_major_without_a_build_is_a_clear_import_error_naming_what_to_install(tmp_path):
    make_stable(tmp_path)
    make_cuda(tmp_path)
    with pytest.raises(ImportError) as error:
        _loader.select_cuda(_loader.find_builds(tmp_path), "2.10.0+cu128", "12.8", "0.1.0")
    message = str(error.value)
    assert "has CUDA kernels for CUDA 13 (PyPI's default Linux torch from 2.11 on)" in message
    assert "torch 2.10.0+cu128 uses CUDA 12.8" in message and "pip install 'torch>=2.11'" in message
    assert "CPU-only torch" in message and "TORCH_SEGMENT_OPS_CPU_ONLY=1" in message


def test_a_package_without_cuda_builds_serves_a_cuda_torch_on_the_cpu(tmp_path):
    """A source build without a CUDA toolkit, or macOS: CUDA tensors get the ops' clear error instead."""
    make_stable(tmp_path)
    assert _loader.select_cuda(_loader.find_builds(tmp_path), "2.14.1+cu130", "13.0") is None


@pytest.mark.parametrize("record", [
    {"abi": "stable", "floor": "2.10", "torch": "2.13.0", "cuda": "13"},  # not major.minor
    {"abi": "stable", "floor": "2.10", "torch": "2.13.0", "cuda": 13.0},
    {"abi": "stable", "floor": "2.10", "torch": "2.13.0", "cuda": "13.0"},  # no cuda_torch
    {"torch": "2.13.0", "cuda": "13.0", "cuda_torch": "2.11"}])  # CUDA builds are stable builds
def test_a_corrupt_cuda_record_is_a_clear_import_error(tmp_path, record):
    (tmp_path / "cu13").mkdir()
    (tmp_path / "cu13" / "build.json").write_text(json.dumps(record))
    with pytest.raises(ImportError, match="corrupt build record .*cu13/build.json"):
        _loader.find_builds(tmp_path)


def test_two_builds_for_one_cuda_major_is_a_clear_import_error(tmp_path):
    make_cuda(tmp_path)
    (tmp_path / "cu13_again").mkdir()
    (tmp_path / "cu13_again" / "build.json").write_text((tmp_path / "cu13" / "build.json").read_text())
    with pytest.raises(ImportError, match=r"two builds for torch cuda 13 \(cu13, cu13_again\)"):
        _loader.find_builds(tmp_path)
