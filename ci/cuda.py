"""`install-cuda DIR`: the CUDA toolkits a Linux wheel's CUDA builds compile with, from the
registry (hash-pinned: ci/requirements-cuda<major>.lock), laid out as DIR/<major>/ with
bin/nvcc, include/ and lib/ -- the layout setup.py reads from TORCH_SEGMENT_OPS_CUDA_DIR.

Standard library only: cibuildwheel's before-build runs it in the build environment.
"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

from . import matrix
from .envs import ROOT, cache_dir, log
from .errors import PipelineError

CUDA_DIR_VARIABLE = "TORCH_SEGMENT_OPS_CUDA_DIR"


def native_platform() -> matrix.Platform | None:
    """The declared platform this machine builds for, if any."""
    for plat in matrix.platforms():
        if plat.cibw_platform == sys.platform and plat.arch == platform.machine():
            return plat
    return None


def majors_here() -> tuple[str, ...]:
    """The CUDA majors this machine's wheel holds (none off Linux, or in per-torch mode)."""
    plat = native_platform()
    return plat.cuda if plat and matrix.abi() == matrix.STABLE else ()


def lock_file(major: str) -> Path:
    return ROOT / "ci" / f"requirements-cuda{major}.lock"


def install(dest: Path, majors: tuple[str, ...] | None = None) -> Path:
    """DIR/<major> for each CUDA major this machine builds (kept when already there); returns DIR."""
    dest = dest.resolve()
    for major in majors_here() if majors is None else majors:
        matrix.cuda(major)  # declared
        root = dest / major
        if (root / "bin" / "nvcc").is_file():
            continue
        packages = dest / f".packages-{major}"
        log(f"installing the CUDA {major} toolkit into {packages} ...")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                        "--require-hashes", "--target", str(packages), "-r", str(lock_file(major))], check=True)
        toolkit = packages / "nvidia" / f"cu{major}"
        if not (toolkit / "bin" / "nvcc").is_file():
            raise PipelineError(f"install-cuda: the CUDA {major} packages hold no {toolkit / 'bin' / 'nvcc'}")
        if root.is_symlink():
            root.unlink()
        root.symlink_to(toolkit, target_is_directory=True)
    return dest


def build_environ(dest: Path, majors: tuple[str, ...] | None = None) -> dict[str, str]:
    """What a build of the CUDA builds needs in its environment (nothing when this machine has none)."""
    wanted = majors_here() if majors is None else majors
    return {CUDA_DIR_VARIABLE: str(install(dest, wanted))} if wanted else {}


def cache() -> Path:
    return cache_dir() / "cuda"

