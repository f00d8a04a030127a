"""Finds and loads the compiled ops for the torch that is running.

A wheel holds its builds under ``_builds/<name>/``, each with a ``build.json``
record. A **stable** build (``{"abi": "stable", "floor": "2.10", ...}``) uses
only LibTorch's stable ABI and loads on every torch >= its floor. A
**per-torch** build (``{"torch": "2.13.0"}``) uses the full C++ API, whose ABI
changes between minors, so it only loads under that major.minor. Anything else
fails with a clear ImportError instead of an ``undefined symbol`` from the
dynamic loader.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

BUILDS_DIR = Path(__file__).parent / "_builds"
DISTRIBUTION = "torch-segment-ops"


@dataclass(frozen=True)
class Build:
    directory: Path
    torch_version: str  # the torch the build was compiled against, e.g. "2.13.0+cpu"
    floor: str = ""  # stable builds: the oldest torch minor they load on

    @property
    def stable(self) -> bool:
        return bool(self.floor)

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
    floor = minor_of(data["floor"]) if data.get("abi") == "stable" else ""
    build = Build(record.parent, data["torch"], floor)
    build.torch_minor  # noqa: B018 (validates the version)
    return build


def find_builds(builds_dir: Path = BUILDS_DIR) -> list[Build]:
    """Every build with its record; a missing or corrupt record, or two builds for one torch minor,
    is an ImportError naming the file (the installation is damaged: reinstalling fixes it)."""
    builds: dict[str, Build] = {}
    for directory in sorted(p for p in builds_dir.glob("*") if p.is_dir() and p.name != "__pycache__"):
        record = directory / "build.json"
        try:
            build = read_record(record)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ImportError(f"torch_segment_ops: missing or corrupt build record {record} "
                              f"({type(error).__name__}: {error}); reinstall {DISTRIBUTION}") from None
        key = "stable" if build.stable else build.torch_minor
        if key in builds:
            raise ImportError(f"torch_segment_ops: two builds for torch {key} ({builds[key].directory.name}, "
                              f"{directory.name}); reinstall {DISTRIBUTION}")
        builds[key] = build
    return list(builds.values())


def select(builds: list[Build], torch_version: str, package_version: str = "") -> Build:
    """The build for ``torch_version`` (a per-torch build of its minor first, else the stable
    build), or a helpful ImportError."""
    wanted = minor_of(torch_version)
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


def installed_version(fallback: str) -> str:
    """The distribution's version, if installed."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return fallback


def load(package_version: str) -> Build:
    import torch

    build = select(find_builds(), torch.__version__, installed_version(package_version))
    torch.ops.load_library(str(build.library))
    return build
