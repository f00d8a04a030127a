"""Small helpers over wheel files, on top of `packaging` and `wheel`."""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version
from wheel.wheelfile import WheelFile

from . import names
from .names import BUILD_RECORD


@dataclass
class WheelInfo:
    path: Path
    name: str  # as spelled in the file name (torch_segment_ops, aten_ext_fixture)
    version: Version
    tags: frozenset[Tag]
    files: dict[str, bytes]  # archive name -> content

    @classmethod
    def read(cls, path: Path) -> WheelInfo:
        _, version, _, tags = parse_wheel_filename(path.name)
        with WheelFile(path) as wf:  # verifies every file against RECORD while reading
            files = {info.filename: wf.read(info.filename) for info in wf.infolist() if not info.is_dir()}
        return cls(path, path.name.split("-")[0], version, tags, files)

    @property
    def dist_info(self) -> str:
        dirs = {n.split("/")[0] for n in self.files if n.split("/")[0].endswith(".dist-info")}
        if len(dirs) != 1:
            raise ValueError(f"{self.path.name}: expected one .dist-info folder, found {sorted(dirs)}")
        return dirs.pop()

    @property
    def metadata(self):
        return names.metadata(self.files[f"{self.dist_info}/METADATA"].decode())

    @property
    def torch_requirement(self) -> Requirement | None:
        reqs = [Requirement(r) for r in self.metadata.get_all("Requires-Dist") or []]
        torch = [r for r in reqs if canonicalize_name(r.name) == "torch"]
        return torch[0] if len(torch) == 1 else None

    @property
    def records(self) -> dict[str, dict]:
        """build folder name -> its build.json ({"torch": ..., and "abi"/"floor" for a stable build})."""
        found = {}
        for name, content in self.files.items():
            match = BUILD_RECORD.match(name)
            if match:
                found[match[2]] = json.loads(content)
        return found

    @property
    def package(self) -> str:
        """The import package holding the builds (else the distribution's own name)."""
        packages = {BUILD_RECORD.match(n)[1] for n in self.files if BUILD_RECORD.match(n)}
        return packages.pop() if len(packages) == 1 else self.name

    @property
    def cuda_records(self) -> dict[str, dict]:
        """The CUDA builds (stable mode): build folder name -> record with "cuda", "archs", "ptx"."""
        return {name: record for name, record in self.records.items() if "cuda" in record}

    @property
    def builds(self) -> dict[str, str]:
        """The CPU builds: build folder name -> the torch version it was compiled against."""
        return {name: record["torch"] for name, record in self.records.items() if "cuda" not in record}

    @property
    def stable(self) -> bool:
        """Whether the wheel holds a stable-ABI build."""
        return any(record.get("abi") == "stable" for record in self.records.values())

    @property
    def platform(self) -> str:
        return next(iter(self.tags)).platform

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def torch_minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def unsafe_entries(path: Path) -> list[str]:
    """Archive entries no wheel of ours may have: absolute or `..` paths, backslashes, symlinks,
    duplicate names (a zip may hold two entries of one name; which one is unpacked is up to the tool)."""
    problems, seen = [], set()
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            name = info.filename
            if name.startswith("/") or "\\" in name or ".." in name.split("/") or re.match(r"[A-Za-z]:", name):
                problems.append(f"unsafe path {name!r}")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                problems.append(f"symlink {name!r}")
            if name in seen:
                problems.append(f"duplicate entry {name!r}")
            seen.add(name)
    return problems
