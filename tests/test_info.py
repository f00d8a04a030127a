"""`python -m torch_segment_ops.info`: the builds, which load and why, each GPU's coverage; exit 0 even
when the import fails."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torch_segment_ops
from torch_segment_ops import _loader, info

ARCHS = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]


@pytest.mark.parametrize("capability, expected", [
    ((8, 6), "machine code sm_86"), ((8, 9), "machine code sm_86"), ((9, 0), "machine code sm_90"),
    ((12, 1), "machine code sm_120"), ((13, 0), "PTX compute_120, JIT-compiled"), ((7, 0), "WARNING: not covered"),
    ((6, 1), "WARNING: not covered")])
def test_gpu_coverage_by_machine_code_then_ptx(capability, expected):
    assert info.coverage(capability, ARCHS, "compute_120").startswith(expected)


def run_info(package_parent: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch_segment_ops.info"], cwd=package_parent, capture_output=True,
                          text=True)


def test_the_installed_package(tmp_path):
    proc = run_info(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"torch {torch.__version__}" in proc.stdout and "\nloaded:\n  CPU: stable\n" in proc.stdout
    expected = "  CUDA: none (torch is a CPU-only build)" if not torch.version.cuda else "  CUDA: cu"
    assert expected in proc.stdout


def copy_of_the_package(tmp_path) -> Path:
    copy = tmp_path / "torch_segment_ops"
    shutil.copytree(Path(torch_segment_ops.__file__).parent, copy)
    return copy


def test_an_import_that_fails_is_explained_with_exit_0(tmp_path):
    copy = copy_of_the_package(tmp_path)
    (record,) = copy.glob("_builds/stable/build.json")
    record.write_text(json.dumps({"abi": "stable", "floor": "2.99", "torch": "2.99.0"}))
    proc = run_info(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "loaded:\n  nothing: torch_segment_ops 0.1.0 needs torch>=2.99" in proc.stdout
    imported = subprocess.run([sys.executable, "-c", "import torch_segment_ops"], cwd=tmp_path, capture_output=True,
                              text=True)
    assert "`python -m torch_segment_ops.info` shows what is installed and why" in imported.stderr


@pytest.mark.parametrize("torch_cuda, expected", [
    (None, "  CUDA: none (torch is a CPU-only build)"),
    ("13.0", "  CUDA: cu13 (torch uses CUDA 13.0)"),
    ("12.8", "  CUDA: none, and the import fails: torch_segment_ops 0.1.0 has CUDA kernels for CUDA 13"),
])
def test_which_cuda_build_loads_and_why(tmp_path, monkeypatch, torch_cuda, expected):
    builds = tmp_path / "_builds"
    (builds / "stable").mkdir(parents=True)
    (builds / "stable" / "build.json").write_text(json.dumps({"abi": "stable", "floor": "2.10", "torch": "2.13.0"}))
    (builds / "cu13").mkdir()
    (builds / "cu13" / "build.json").write_text(json.dumps({
        "abi": "stable", "floor": "2.10", "torch": "2.13.0", "cuda": "13.0", "cuda_torch": "2.11", "archs": ARCHS,
        "ptx": "compute_120"}))
    monkeypatch.setattr(_loader, "BUILDS_DIR", builds)
    monkeypatch.setattr(torch.version, "cuda", torch_cuda)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(_loader.CPU_ONLY, raising=False)
    lines = info.report()
    assert "  cu13: CUDA 13.0 kernels (for torch using CUDA 13), machine code sm_75, sm_80, sm_86, sm_90, sm_100, " \
           "sm_120, PTX compute_120" in lines
    assert any(line.startswith(expected) for line in lines), lines
    monkeypatch.setenv(_loader.CPU_ONLY, "1")
    assert f"  CUDA: none ({_loader.CPU_ONLY}=1)" in info.report()
