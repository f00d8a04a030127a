"""`merge`: per platform, combine the per-torch wheels into ONE wheel.

The result holds one build per torch minor under <package>/_builds/,
drops the local version label (0.1.0+pt213 -> 0.1.0) and requires the torch
range the builds cover; the package's loader picks the build at import.
Unpacking and packing go through `wheel`'s WheelFile (which writes RECORD).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from wheel.wheelfile import WheelFile

from ..declaration import matrix
from ..declaration.names import BUILD_DIR
from ..errors import PipelineError
from .wheels import BrokenWheel, WheelInfo, torch_minor, unsafe_entries


def rewrite_metadata(text: str, version: str, requirement: str) -> str:
    """Set Version and the torch Requires-Dist in the METADATA headers (body untouched)."""
    head, sep, body = text.partition("\n\n")
    lines = [line for line in head.splitlines() if not line.lower().startswith("requires-dist: torch")]
    lines = [f"Version: {version}" if line.startswith("Version: ") else line for line in lines]
    index = max((i for i, line in enumerate(lines) if line.startswith(("Requires-Python", "Version"))), default=0)
    lines.insert(index + 1, f"Requires-Dist: {requirement}")
    return "\n".join(lines) + sep + body


def metadata_without_builds(wheel: WheelInfo) -> str:
    """METADATA minus what legitimately differs between per-torch wheels (Version, torch Requires-Dist)."""
    text = wheel.files[f"{wheel.dist_info}/METADATA"].decode()
    head, _, body = text.partition("\n\n")
    kept = [line for line in head.splitlines()
            if not line.startswith("Version: ") and not line.lower().startswith("requires-dist: torch")]
    return "\n".join(kept) + "\n\n" + body


def check_compatible(wheels: list[WheelInfo]) -> None:
    """The inputs may differ only in their builds: same name, public version, tag, shared files
    (none missing from any), dist-info and METADATA apart from Version and the torch pin."""
    first = wheels[0]

    def shared(wheel: WheelInfo) -> dict[str, bytes]:
        return {n: c for n, c in wheel.files.items() if not BUILD_DIR.match(n) and ".dist-info/" not in n}

    def dist_info(wheel: WheelInfo) -> dict[str, bytes]:
        return {n.split("/", 1)[1]: c for n, c in wheel.files.items()
                if n.startswith(f"{wheel.dist_info}/") and not n.endswith(("/RECORD", "/METADATA"))}

    for other in wheels[1:]:
        if (other.name, other.version.public, other.tags) != (first.name, first.version.public, first.tags):
            raise PipelineError(f"merge: {other.path.name} does not match {first.path.name} (name, version, tag)")
        a, b = shared(first), shared(other)
        for name in sorted(set(a) ^ set(b)):
            raise PipelineError(f"merge: {name} is in only one of {first.path.name} and {other.path.name}")
        for name in sorted(n for n in a if a[n] != b[n]):
            raise PipelineError(f"merge: {name} differs between {first.path.name} and {other.path.name}")
        if dist_info(first) != dist_info(other) or metadata_without_builds(first) != metadata_without_builds(other):
            raise PipelineError(f"merge: the metadata of {other.path.name} differs from {first.path.name} beyond "
                             "Version and the torch requirement")
    minors = [torch_minor(v) for w in wheels for v in w.builds.values()]
    if len(set(minors)) != len(minors):
        raise PipelineError(f"merge: several wheels hold a build for the same torch minor: {sorted(minors)}")


def read(path: Path) -> WheelInfo:
    """A safe, intact input: no unsafe or duplicate entry, every file matching RECORD."""
    try:
        unsafe = unsafe_entries(path)
        if unsafe:
            raise PipelineError(f"merge: {path.name} has {'; '.join(unsafe)}")
        return WheelInfo.read(path)
    except BrokenWheel as error:
        raise PipelineError(f"merge: {path.name} is not an intact wheel: {error}") from None


def merge(paths: list[Path], out_dir: Path) -> Path:
    wheels = [read(p) for p in sorted(paths)]
    if not wheels:
        raise PipelineError("merge: no wheels given")
    stable = [w.path.name for w in wheels if w.stable]
    if stable:
        raise PipelineError(f"merge: {stable[0]} holds a stable-ABI build, which is final as it is (merge combines "
                         "per-torch builds)")
    check_compatible(wheels)
    first = wheels[0]
    version = first.version.public
    minors = [torch_minor(v) for w in wheels for v in w.builds.values()]
    requirement = matrix.requires_torch(minors)
    new_dist_info = f"{first.name}-{version}.dist-info"
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = "-".join(first.path.name.removesuffix(".whl").split("-")[-3:])  # as named: a tag set has no order
    target = out_dir / f"{first.name}-{version}-{tag}.whl"

    entries: dict[str, tuple[zipfile.ZipInfo, bytes]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel.path) as zf:
            for info in zf.infolist():
                name = info.filename
                if name.endswith("/RECORD") or info.is_dir():
                    continue
                if ".dist-info/" in name:
                    if wheel is not first:
                        continue
                    name = f"{new_dist_info}/{name.split('/', 1)[1]}"
                data = zf.read(info.filename)
                if name == f"{new_dist_info}/METADATA":
                    data = rewrite_metadata(data.decode(), version, requirement).encode()
                entries.setdefault(name, (info, data))

    with WheelFile(target, "w") as out:
        # contents first, dist-info last (as wheels are laid out)
        for name in sorted(entries, key=lambda n: (".dist-info/" in n, n)):
            info, data = entries[name]
            copy = zipfile.ZipInfo(name, date_time=info.date_time)
            copy.external_attr, copy.compress_type = info.external_attr, zipfile.ZIP_DEFLATED
            out.writestr(copy, data)
    return target
