"""`repair`: auditwheel (Linux) / delocate (macOS) with every torch library excluded.

cibuildwheel runs this as its repair-wheel-command, inside the build
environment where the pinned torch is installed, so the excludes are read
from that torch's own lib folder (versioned names included). Nothing of
torch (nor the OpenMP runtime torch ships and loads) may be grafted: the
extension must use the torch the user has. Nor may the CUDA runtime and math
libraries a CUDA build links: torch's CUDA builds bring them (its nvidia-*
packages) and have loaded them by the time our CUDA build is loaded. Standard
library only: it runs in cibuildwheel's build environments.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from ..errors import PipelineError

LIBRARY_SUFFIXES = (".so", ".dylib", ".dll")
# What torch's CUDA builds load from their nvidia-* packages (sonames, auditwheel's wildcards).
CUDA_LIBRARIES = ("libcuda*.so*", "libcublas*.so*", "libcusparse*.so*", "libcufft*.so*", "libcurand*.so*",
                  "libcusolver*.so*", "libcudnn*.so*", "libnccl*.so*", "libnvrtc*.so*", "libnvJitLink*.so*",
                  "libnvToolsExt*.so*", "libcupti*.so*")  # libcuda* covers libcudart and a renamed graft


def torch_lib_dir() -> Path:
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        raise PipelineError("repair: torch is not installed in this environment; its libraries must be excluded")
    return Path(spec.origin).parent / "lib"


def is_library(name: str) -> bool:
    return any(name.endswith(s) or f"{s}." in name for s in LIBRARY_SUFFIXES)


def excludes(lib_dir: Path) -> list[str]:
    """Every shared library torch ships, by file name (libc10.so, libgomp.so.1, libomp.dylib ...)."""
    names = sorted(p.name for p in lib_dir.iterdir() if p.is_file() and is_library(p.name))
    if not names:
        raise PipelineError(f"repair: no libraries found in {lib_dir}")
    return names


def command(wheel: Path, dest: Path, lib_dir: Path, platform: str = sys.platform, plat: str | None = None) -> list[str]:
    flags = [arg for name in excludes(lib_dir) for arg in ("--exclude", name)]
    if platform == "darwin":  # no CUDA on macOS
        return ["delocate-wheel", "--require-archs", "arm64", "-w", str(dest), "-v", *flags, str(wheel)]
    flags += [arg for name in CUDA_LIBRARIES for arg in ("--exclude", name)]
    return ["auditwheel", "repair", *(["--plat", plat] if plat else []), "-w", str(dest), *flags, str(wheel)]


def environment(lib_dir: Path, platform: str = sys.platform, epoch: str | None = None) -> dict[str, str]:
    """delocate resolves every @rpath dependency before it applies --exclude, and our library has
    no rpath (torch's libraries are loaded by `import torch`), so without torch's lib folder on
    DYLD_LIBRARY_PATH it stops with "Could not find all dependencies". epoch: SOURCE_DATE_EPOCH,
    which auditwheel and delocate date the repaired wheel's zip entries by (else: now)."""
    env = dict(os.environ)
    if epoch:
        env["SOURCE_DATE_EPOCH"] = epoch
    if platform == "darwin":
        env["DYLD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(lib_dir), env.get("DYLD_LIBRARY_PATH")]))
    return env


def repair(wheel: Path, dest: Path, plat: str | None = None, lib_dir: Path | None = None,
           platform: str = sys.platform, epoch: str | None = None) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    lib_dir = lib_dir or torch_lib_dir()
    subprocess.run(command(wheel, dest, lib_dir, platform, plat), check=True,
                   env=environment(lib_dir, platform, epoch))
    name_version = "-".join(wheel.name.split("-")[:2])
    made = sorted(dest.glob(f"{name_version}-*.whl"), key=lambda p: p.stat().st_mtime)
    if not made:
        raise PipelineError(f"repair: no repaired wheel for {name_version} in {dest}")
    return made[-1]
