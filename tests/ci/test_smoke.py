"""The smoke stage's decisions that need no torch: which torch CUDA a wheel serves, and the probe of a
cached env's torch CUDA run once per env."""

import json
import subprocess

from ci.stages import smoke
from ci.util import envs

from .wheel_factory import make_wheel


def cuda_wheel(tmp_path, *cudas):
    extra = {f"torch_segment_ops/_builds/cuda{c.split('.')[0]}/build.json": json.dumps({"torch": "2.10.0", "cuda": c,
             "archs": ["8.0"], "ptx": "9.0"}).encode() for c in cudas}
    return make_wheel(tmp_path, extra=extra)


def test_a_torch_cuda_major_without_a_build_in_the_wheel_is_named(tmp_path):
    wheel = cuda_wheel(tmp_path, "13.0")
    assert smoke.unserved_cuda("12.8", wheel) == "torch uses CUDA 12.8, the wheel has CUDA 13 builds"
    assert smoke.unserved_cuda("13.2", wheel) == ""
    assert smoke.unserved_cuda("", wheel) == ""  # a CPU torch
    (tmp_path / "cpu").mkdir()
    assert smoke.unserved_cuda("12.8", make_wheel(tmp_path / "cpu")) == ""  # no CUDA build at all


def test_the_torch_cuda_of_a_cached_env_is_probed_once(tmp_path, monkeypatch):
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="13.0\n")

    monkeypatch.setattr(smoke.subprocess, "run", run)
    base = envs.Env(tmp_path)
    assert smoke.torch_cuda(base) == "13.0" and smoke.torch_cuda(base) == "13.0"
    assert len(calls) == 1 and calls[0][0] == str(base.python)
    assert [p.name for p in tmp_path.iterdir()] == [".torch-segment-ops-torch-cuda"]  # no temporary file left
