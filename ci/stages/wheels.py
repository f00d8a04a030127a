"""Small helpers over wheel files, on top of `packaging` and `wheel`."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.tags import Tag
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version
from wheel.wheelfile import WheelFile

from ..declaration import names
from ..declaration.names import BUILD_RECORD


@dataclass
class WheelInfo:
    path: Path
    name: str  # as spelled in the file name (torch_segment_ops, aten_ext_fixture)
    version: Version
    tags: frozenset[Tag]
    files: dict[str, bytes]  # archive name -> content

    @classmethod
    def read(cls, path: Path) -> WheelInfo:
        """The wheel's files, after its RECORD was checked against the archive both ways; at most
        MAX_UNPACKED bytes are ever unpacked. Anything that makes it unreadable is a BrokenWheel."""
        with broken_on_error():
            _, version, _, tags = parse_wheel_filename(path.name)
            with zipfile.ZipFile(path) as zf:
                infos = [info for info in zf.infolist() if not info.is_dir()]
                unpacked = sum(info.file_size for info in infos)
                if unpacked > MAX_UNPACKED:
                    raise BrokenWheel(f"it unpacks to {unpacked} bytes, more than the {MAX_UNPACKED} any wheel of "
                                      "ours may")
                check_record(zf, infos)
            with WheelFile(path) as wf:  # verifies every file against RECORD while reading
                files = {info.filename: wf.read(info.filename) for info in infos}
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


class BrokenWheel(ValueError):
    """The file cannot be read as an intact wheel; str() says why."""


@contextmanager
def broken_on_error():
    """Whatever a damaged archive makes zipfile, zlib or wheel raise becomes a BrokenWheel."""
    try:
        yield
    except BrokenWheel:
        raise
    except Exception as error:  # noqa: BLE001
        raise BrokenWheel(f"{type(error).__name__}: {error}"[:500]) from None


MAX_UNPACKED = 256 << 20  # far above our wheels (<= 4 MiB packed); bounds what a crafted wheel can make us hold
SIGNATURES = ("RECORD.jws", "RECORD.p7s")


def check_record(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> None:
    """RECORD lists every file of the archive once, with a sha256 and the size, and nothing else: a row
    naming a file the wheel does not hold would make `pip uninstall` delete another package's file."""
    records = [i for i in infos if re.fullmatch(r"[^/]+\.dist-info/RECORD", i.filename)]
    if len(records) != 1:
        raise BrokenWheel(f"expected one .dist-info/RECORD, found {len(records)}")
    if records[0].file_size > 16 << 20:
        raise BrokenWheel(f"RECORD is {records[0].file_size} bytes")
    record = records[0].filename
    try:
        rows = list(csv.reader(io.StringIO(zf.read(record).decode("utf-8"))))
    except (csv.Error, UnicodeDecodeError) as error:
        raise BrokenWheel(f"RECORD is not a readable CSV file ({error})") from None
    listed: dict[str, list[str]] = {}
    for row in rows:
        if len(row) != 3:
            raise BrokenWheel(f"RECORD row {row!r:.80} does not have 3 fields")
        if row[0] in listed:
            raise BrokenWheel(f"RECORD lists {row[0]!r:.200} twice")
        listed[row[0]] = row
    archive = {i.filename: i for i in infos}
    folders = {i.filename for i in zf.infolist() if i.is_dir()}  # some tools (wheel's WheelFile) list them too
    for name in sorted(set(listed) - set(archive) - folders):
        raise BrokenWheel(f"RECORD lists {name!r:.200}, which the wheel does not hold")
    for name, info in archive.items():
        if name == record or name in (f"{record.rsplit('/', 1)[0]}/{s}" for s in SIGNATURES):
            continue
        if name not in listed:
            raise BrokenWheel(f"{name} is not in RECORD")
        algorithm = listed[name][1].partition("=")[0]
        if algorithm != "sha256":
            raise BrokenWheel(f"RECORD gives {name} a {algorithm or 'missing'} hash; sha256 expected")
        if listed[name][2] != str(info.file_size):
            raise BrokenWheel(f"RECORD gives {name} size {listed[name][2]!r:.40}, the archive {info.file_size}")
    # the digests themselves are checked by wheel's WheelFile as the files are read

def torch_minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def unsafe_entries(path: Path) -> list[str]:
    """Archive entries no wheel of ours may have: absolute or `..` paths, backslashes, symlinks, names
    equal but for case, duplicate names (a zip may hold two entries of one name; which one is unpacked
    is up to the tool). An archive that cannot be listed is a BrokenWheel."""
    with broken_on_error(), zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    problems, seen, folded = [], set(), {}
    for info in infos:
        name = info.filename
        other = folded.setdefault(name.casefold(), name)
        if other != name:
            problems.append(f"{name!r} and {other!r} differ only by case (one file on macOS and Windows)")
        if name.startswith("/") or "\\" in name or ".." in name.split("/") or re.match(r"[A-Za-z]:", name):
            problems.append(f"unsafe path {name!r}")
        if (info.external_attr >> 16) & 0o170000 == 0o120000:
            problems.append(f"symlink {name!r}")
        if name in seen:
            problems.append(f"duplicate entry {name!r}")
        seen.add(name)
    return problems
