"""`gpu-check`: what only a real GPU can show, in one command on a machine with one.

Installs the wheel (default: the one `python -m ci local` left in wheelhouse/) into the running
Python without dependencies (its torch stays), then, from a copy of the tests outside the source
tree: `python -m torch_segment_ops.info` (the builds loaded, each GPU's coverage), the GPU tests
(tests/gpu: every op on CUDA tensors against the CPU kernels and the reference, gradcheck, opcheck,
compile, bad input) with the op suite (tests/ops), compute-sanitizer memcheck over the GPU tests but
their largest shapes, and the GPU benchmark (benchmarks/bench_gpu.py). Writes gpu-check.md (and
GPU.md) into --out. Needs pytest and hypothesis (ci/requirements/tests.txt) and, for the memcheck,
compute-sanitizer (PATH or the nvidia-cuda-sanitizer-api package).
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import PipelineError
from ..util import envs
from ..util.envs import REQUIREMENTS, ROOT, log, nvidia_tool
from . import report

# memcheck slows kernels down by 10-100x: the largest shapes and the compile test stay out
SANITIZER_SELECTION = ("not (huge or skewed or many or compile or gradcheck or wide_rows or crossing or device_stops "
                       "or cuda_graph)")


def tests_copy(folder: Path) -> Path:
    tests = folder / "tests"
    for name in ("gpu", "ops"):
        shutil.copytree(ROOT / "tests" / name, tests / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("__init__.py", "reference.py"):
        shutil.copy(ROOT / "tests" / name, tests / name)
    return folder


def step(name: str, cmd: list[str], cwd: Path, results: list[tuple[str, str, float]]) -> bool:
    log(f"{name}: {' '.join(cmd)}")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    output = (proc.stdout + proc.stderr).strip()
    print(output[-6000:], flush=True)
    last = output.splitlines()[-1] if output else ""
    results.append((name, ("passed: " if proc.returncode == 0 else f"FAILED (exit {proc.returncode}): ") + last,
                    time.perf_counter() - start))
    return proc.returncode == 0


def run(wheel: Path | None, out: Path, quick: bool = False, install: bool = False) -> int:
    if install:  # a fresh GPU runner (release.yml's gate): torch (PyPI's default: a CUDA build) and pytest
        envs.install_torch_here()
        tests = REQUIREMENTS / "tests.txt"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", str(tests)], check=True)
    import torch

    if not torch.cuda.is_available():
        raise PipelineError("gpu-check: no CUDA GPU here (torch.cuda.is_available() is False)")
    wheels = [wheel] if wheel else sorted((ROOT / "wheelhouse").glob("*linux*.whl"))
    if len(wheels) != 1:
        raise PipelineError(f"gpu-check: pass --wheel (found {[w.name for w in wheels]} in wheelhouse/)")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheels[0])],
                   check=True)
    results: list[tuple[str, str, float]] = []
    with tempfile.TemporaryDirectory(prefix="torch-segment-ops-gpu-check-") as tmp:
        here = tests_copy(Path(tmp))
        info = subprocess.run([sys.executable, "-m", "torch_segment_ops.info"], cwd=here, capture_output=True,
                              text=True).stdout.strip()
        pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        ok = step("GPU tests + op suite", [*pytest, "tests/gpu", "tests/ops"], here, results)
        tool = nvidia_tool("compute-sanitizer")
        if tool:
            ok &= step("compute-sanitizer memcheck", [tool, "--tool", "memcheck", "--error-exitcode", "2",
                                                      *pytest, "tests/gpu", "-k", SANITIZER_SELECTION], here, results)
        else:
            results.append(("compute-sanitizer memcheck", "NOT RUN: compute-sanitizer not found", 0.0))
        bench = [sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--out", str(out / "GPU.md")]
        ok &= step("GPU benchmark", bench + (["--quick"] if quick else []), ROOT / "benchmarks", results)
    lines = ["# gpu-check", "", f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__} (CUDA "
             f"{torch.version.cuda}), CPython {sys.version.split()[0]}, wheel {wheels[0].name}.", "",
             "| step | result | seconds |", "|---|---|---|"]
    lines += [f"| {name} | {result} | {seconds:.0f} |" for name, result, seconds in results]
    lines += ["", "`python -m torch_segment_ops.info`:", "", "```", info, "```"]
    (out / "gpu-check.md").write_text("\n".join(lines) + "\n")
    minor = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    result = "passed" if ok else "FAILED: " + next(r for _, r, _ in results if not r.startswith("passed"))
    report.write(out, "gpu", [report.Record("linux-x86_64" if platform.machine() == "x86_64" else "linux-aarch64",
                                            f"{sys.version_info[0]}.{sys.version_info[1]}", minor, report.GPU, result)])
    print("\n".join(lines))
    return 0 if ok else 1
