"""Finds and loads the compiled ops for the torch that is running.

A wheel holds one build per supported torch minor under ``_builds/<name>/``,
each with a ``build.json`` recording the torch it was compiled against. The
C++ ABI of libtorch changes between minors, so only a build for the running
torch's major.minor may be loaded; anything else must fail with a clear
ImportError instead of an ``undefined symbol`` from the dynamic loader.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

BUILDS_DIR = Path(__file__).parent / "_builds"


@dataclass(frozen=True)
class Build:
    directory: Path
    torch_version: str  # the torch the build was compiled against, e.g. "2.13.0+cpu"

    @property
    def torch_minor(self) -> str:
        return minor_of(self.torch_version)

    @property
    def library(self) -> Path:
        libs = sorted(self.directory.glob("_C*.so")) + sorted(self.directory.glob("_C*.pyd"))
        if len(libs) != 1:
            raise ImportError(
                f"torch_segment_ops: expected one compiled library in {self.directory}, found {len(libs)}")
        return libs[0]


def minor_of(version: str) -> str:
    match = re.match(r"(\d+)\.(\d+)", version) if isinstance(version, str) else None
    if not match:
        raise ValueError(f"not a torch version: {version!r}")
    return f"{match[1]}.{match[2]}"


def find_builds(builds_dir: Path = BUILDS_DIR) -> list[Build]:
    """Every build with its record; a corrupt record or two builds for one torch minor is an
    ImportError naming the file (the installation is damaged: reinstalling fixes it)."""
    builds: dict[str, Build] = {}
    for record in sorted(builds_dir.glob("*/build.json")):
        try:
            version = json.loads(record.read_text())["torch"]
            build = Build(record.parent, version)
            minor = build.torch_minor
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ImportError(f"torch_segment_ops: corrupt build record {record} ({type(error).__name__}: "
                              f"{error}); reinstall torch-segment-ops") from None
        if minor in builds:
            raise ImportError(f"torch_segment_ops: two builds for torch {minor} ({builds[minor].directory.name}, "
                              f"{record.parent.name}); reinstall torch-segment-ops")
        builds[minor] = build
    return list(builds.values())


def select(builds: list[Build], torch_version: str, package_version: str = "") -> Build:
    """The build matching ``torch_version``'s major.minor, or a helpful ImportError."""
    wanted = minor_of(torch_version)
    for build in builds:
        if build.torch_minor == wanted:
            return build
    if not builds:
        raise ImportError(
            "torch_segment_ops: no compiled build found (is this a source checkout? "
            "install the package with `pip install --no-build-isolation .`)"
        )
    have = ", ".join(sorted({b.torch_minor for b in builds}, key=lambda v: tuple(map(int, v.split(".")))))
    newest = have.split(", ")[-1]
    raise ImportError(
        f"torch_segment_ops {package_version} was built for torch {have}, but torch {torch_version} is "
        f"installed; its C++ ABI differs between minor versions. Either install a supported torch "
        f"(e.g. pip install 'torch=={newest}.*') or install the torch-segment-ops build for your torch "
        f"(pip install --force-reinstall --no-deps torch-segment-ops, or build it from source against "
        f"torch {wanted})."
    )


def installed_version(fallback: str) -> str:
    """The distribution's version (0.1.0+pt213 for a per-torch build), if installed."""
    from importlib import metadata

    try:
        return metadata.version("torch-segment-ops")
    except metadata.PackageNotFoundError:
        return fallback


def load(package_version: str) -> Build:
    import torch

    build = select(find_builds(), torch.__version__, installed_version(package_version))
    torch.ops.load_library(str(build.library))
    return build
