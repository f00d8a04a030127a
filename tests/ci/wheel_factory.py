"""Synthetic wheels shaped like ours, for fast unit tests of audit and merge."""

import json
from pathlib import Path

from wheel.wheelfile import WheelFile

TAG = "cp310-abi3-manylinux_2_28_x86_64"


def make_wheel(out: Path, version: str = "0.1.0+pt213", torch: str = "2.13.0", requires: str | None = "torch==2.13.*",
               tag: str = TAG, builds: dict[str, str] | None = None, extra: dict[str, bytes] | None = None,
               metadata_version: str | None = None, name: str = "torch_segment_ops",
               headers: list[str] | None = None, metadata_name: str = "torch-segment-ops") -> Path:
    builds = builds if builds is not None else {f"torch_{torch.replace('.', '_')[:4]}": torch}
    path = out / f"{name}-{version}-{tag}.whl"
    dist_info = f"{name}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.4", f"Name: {metadata_name}", f"Version: {metadata_version or version}",
                "Requires-Python: >=3.10"]
    if requires:
        metadata.append(f"Requires-Dist: {requires}")
    metadata += headers or []
    files = {
        "torch_segment_ops/__init__.py": b"# package\n",
        f"{dist_info}/METADATA": ("\n".join(metadata) + "\n\nA description.\n").encode(),
        f"{dist_info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\nTag: {tag}\n".encode(),
    }
    for folder, version_built in builds.items():
        files[f"torch_segment_ops/_builds/{folder}/build.json"] = json.dumps({"torch": version_built}).encode()
        files[f"torch_segment_ops/_builds/{folder}/_C.abi3.so"] = f"library for {version_built}".encode()
    files.update(extra or {})
    with WheelFile(path, "w") as wf:
        for name_in_zip, data in files.items():
            wf.writestr(name_in_zip, data)
    return path
