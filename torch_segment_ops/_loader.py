"""Finds and loads the compiled ops for the torch that is running.

A wheel holds its builds under ``_builds/<name>/``, each with a ``build.json``
record. A **stable** build (``{"abi": "stable", "floor": "2.10", ...}``) uses
only LibTorch's stable ABI and loads on every torch >= its floor. A
**per-torch** build (``{"torch": "2.13.0"}``) uses the full C++ API, whose ABI
changes between minors, so it only loads under that major.minor. A stable
**CUDA** build (``"cuda": "13.0"``) adds the CUDA kernels on top of the CPU
build, and is loaded when the running torch uses that CUDA major
(``torch.version.cuda``); a CPU-only torch never loads one. Anything else
fails with a clear ImportError instead of an ``undefined symbol`` from the
dynamic loader.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

BUILDS_DIR = Path(__file__).parent / "_builds"
DISTRIBUTION = "torch-segment-ops"
# A build folder's name; anything else under _builds/ (__pycache__, dot folders) is not a build. The
# audit applies the same rule (ci/declaration/names.py BUILD_NAME; a test keeps the two equal).
BUILD_NAME = re.compile(r"[A-Za-z0-9][^/]*")
CPU_ONLY = "TORCH_SEGMENT_OPS_CPU_ONLY"  # =1: never load a CUDA build (CUDA tensors then get a clear error)


@dataclass(frozen=True)
class Build:
    directory: Path
    torch_version: str  # the torch the build was compiled against, e.g. "2.13.0+cpu"
    floor: str = ""  # stable builds: the oldest torch minor they load on
    cuda: str = ""  # CUDA builds: the CUDA version compiled with, e.g. "13.0"
    cuda_torch: str = ""  # CUDA builds: the first torch minor whose default Linux build uses that CUDA major

    @property
    def stable(self) -> bool:
        return bool(self.floor)

    @property
    def cuda_major(self) -> str:
        return self.cuda.split(".")[0]

    @property
    def key(self) -> str:
        if self.cuda:
            return f"cuda {self.cuda_major}"
        return "stable" if self.stable else self.torch_minor

    @property
    def torch_minor(self) -> str:
        return minor_of(self.torch_version)

    def serves(self, torch_version: str) -> bool:
        if self.stable:
            return version_key(minor_of(torch_version)) >= version_key(self.floor)
        return minor_of(torch_version) == self.torch_minor

    @property
    def library(self) -> Path:
        libs = sorted(self.directory.glob("_C*.so")) + sorted(self.directory.glob("_C*.pyd"))
        if len(libs) != 1:
            raise ImportError(
                f"torch_segment_ops: expected one compiled library in {self.directory}, found {len(libs)}; "
                f"reinstall {DISTRIBUTION}")
        return libs[0]


def minor_of(version: str) -> str:
    match = re.match(r"(\d+)\.(\d+)", version) if isinstance(version, str) else None
    if not match:
        raise ValueError(f"not a torch version: {version!r}")
    return f"{match[1]}.{match[2]}"


def version_key(minor: str) -> tuple[int, int]:
    major, minor_part = minor.split(".")
    return int(major), int(minor_part)


def read_record(record: Path) -> Build:
    data = json.loads(record.read_text())
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("abi", "per-torch") not in ("stable", "per-torch"):
        raise ValueError(f"unknown abi {data['abi']!r}")
    stable = data.get("abi") == "stable"
    floor = minor_of(data["floor"]) if stable else ""
    cuda = data.get("cuda", "")
    if cuda and not (stable and isinstance(cuda, str) and re.fullmatch(r"\d+\.\d+", cuda)):
        raise ValueError(f"bad cuda {cuda!r} (a stable build's CUDA version, e.g. \"13.0\")")
    build = Build(record.parent, data["torch"], floor, cuda, minor_of(data["cuda_torch"]) if cuda else "")
    build.torch_minor  # noqa: B018 (validates the version)
    return build


def find_builds(builds_dir: Path = BUILDS_DIR) -> list[Build]:
    """Every build with its record; a missing or corrupt record, or two builds for one torch minor,
    is an ImportError naming the file (the installation is damaged: reinstalling fixes it)."""
    builds: dict[str, Build] = {}
    for directory in sorted(p for p in builds_dir.glob("*") if p.is_dir() and BUILD_NAME.fullmatch(p.name)):
        record = directory / "build.json"
        try:
            build = read_record(record)
        except Exception as error:  # noqa: BLE001 (any unreadable record, e.g. RecursionError from deep nesting)
            raise ImportError(f"torch_segment_ops: missing or corrupt build record {record} "
                              f"({type(error).__name__}: {error}); reinstall {DISTRIBUTION}") from None
        if build.key in builds:
            raise ImportError(f"torch_segment_ops: two builds for torch {build.key} "
                              f"({builds[build.key].directory.name}, {directory.name}); reinstall {DISTRIBUTION}")
        builds[build.key] = build
    return list(builds.values())


def select(builds: list[Build], torch_version: str, package_version: str = "") -> Build:
    """The build for ``torch_version`` (a per-torch build of its minor first, else the stable
    build), or a helpful ImportError."""
    wanted = minor_of(torch_version)
    builds = [b for b in builds if not b.cuda]
    matches = sorted((b for b in builds if b.serves(torch_version)), key=lambda b: b.stable)
    if matches:
        return matches[0]
    if not builds:
        raise ImportError(
            "torch_segment_ops: no compiled build found (is this a source checkout? "
            "install the package with `pip install --no-build-isolation .`)"
        )
    stable = [b for b in builds if b.stable]
    if stable:
        floor = stable[0].floor
        raise ImportError(
            f"torch_segment_ops {package_version} needs torch>={floor} (it is built on LibTorch's stable ABI, "
            f"which it targets from torch {floor} on), but torch {torch_version} is installed. "
            f"Upgrade torch: pip install 'torch>={floor}'"
        )
    have = ", ".join(sorted({b.torch_minor for b in builds}, key=version_key))
    newest = have.split(", ")[-1]
    raise ImportError(
        f"torch_segment_ops {package_version} was built for torch {have}, but torch {torch_version} is "
        f"installed; its C++ ABI differs between minor versions. Either install a supported torch "
        f"(e.g. pip install 'torch=={newest}.*') or install the {DISTRIBUTION} build for your torch "
        f"(pip install --force-reinstall --no-deps {DISTRIBUTION}, or build it from source against "
        f"torch {wanted})."
    )


def select_cuda(builds: list[Build], torch_version: str, torch_cuda: str | None,
                package_version: str = "") -> Build | None:
    """The CUDA build for a torch using CUDA ``torch_cuda`` (None: a CPU-only torch, or a package built
    without CUDA kernels: CUDA tensors then get the ops' clear error), or a helpful ImportError."""
    cuda_builds = [b for b in builds if b.cuda]
    if not torch_cuda or not cuda_builds:
        return None
    major = torch_cuda.split(".")[0]
    for build in cuda_builds:
        if build.cuda_major == major:
            return build
    have = sorted(cuda_builds, key=lambda b: int(b.cuda_major))
    served = ", ".join(f"CUDA {b.cuda_major} (PyPI's default Linux torch from {b.cuda_torch} on)" for b in have)
    raise ImportError(
        f"torch_segment_ops {package_version} has CUDA kernels for {served}, but torch {torch_version} uses "
        f"CUDA {torch_cuda}: a CUDA extension must use the CUDA major of its torch. Install a torch built for "
        f"CUDA {have[-1].cuda_major} (pip install 'torch>={have[-1].cuda_torch}'), or a CPU-only torch build; "
        f"or set {CPU_ONLY}=1 to use the CPU kernels only."
    )


def installed_version(fallback: str) -> str:
    """The distribution's version, if installed."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return fallback


INFO = "torch_segment_ops.info"


def running_info() -> bool:
    """Whether this process is `python -m torch_segment_ops.info` (which reports a failed load itself)."""
    argv = getattr(sys, "orig_argv", [])
    return "-m" in argv[:-1] and argv[argv.index("-m") + 1] == INFO


def load(package_version: str) -> tuple[Build, Build | None]:
    """Loads the CPU build for the running torch, then the CUDA build for its CUDA major, if any."""
    import torch

    try:
        builds, version = find_builds(), installed_version(package_version)
        build = select(builds, torch.__version__, version)
        cuda = None if os.environ.get(CPU_ONLY) == "1" else select_cuda(builds, torch.__version__,
                                                                         torch.version.cuda, version)
    except ImportError as error:
        raise ImportError(f"{error} (`python -m {INFO}` shows what is installed and why)") from None
    torch.ops.load_library(str(build.library))
    if cuda:
        torch.ops.load_library(str(cuda.library))
    return build, cuda
