"""``python -m torch_segment_ops.info``: which builds the installed package holds, which of them load
under the running torch and why, and whether each visible GPU is covered by the CUDA build's machine
code (SASS) or PTX. Always exits 0: it explains an import failure instead of raising it."""

from __future__ import annotations

import os
import re
import sys

from . import _loader


def coverage(capability: tuple[int, int], archs: list[str], ptx: str) -> str:
    """How a GPU of compute capability (major, minor) runs a build with machine code for `archs`
    (sm_86 ...) and PTX `ptx` (compute_120): machine code of its major and a minor <= its own, else
    PTX of a capability <= its own (JIT-compiled by the driver at first use), else nothing."""
    major, minor = capability

    def parse(arch: str) -> tuple[int, int]:
        digits = re.sub(r"\D", "", arch)
        return int(digits[:-1]), int(digits[-1])

    sass = [a for a in archs if parse(a)[0] == major and parse(a)[1] <= minor]
    if sass:
        return f"machine code {max(sass, key=parse)}"
    if ptx and parse(ptx) <= capability:
        return f"PTX {ptx}, JIT-compiled by the driver at first use (slower start)"
    return (f"WARNING: not covered (machine code for {', '.join(archs) or 'none'}, PTX {ptx or 'none'}): "
            "CUDA calls on this GPU will fail")


def describe(build: _loader.Build, record: dict) -> str:
    if build.cuda:
        return (f"CUDA {build.cuda} kernels (for torch using CUDA {build.cuda_major}), machine code "
                f"{', '.join(record.get('archs', [])) or 'unknown'}, PTX {record.get('ptx') or 'none'}")
    if build.stable:
        return f"CPU kernels, stable ABI: loads on torch >= {build.floor} (compiled against {build.torch_version})"
    return f"CPU kernels for torch {build.torch_minor} only (compiled against {build.torch_version})"


def report() -> list[str]:
    import json

    import torch

    version = _loader.installed_version("unknown")
    lines = [f"torch-segment-ops {version} ({_loader.BUILDS_DIR.parent})",
             f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none (a CPU-only build)'}",
             f"{_loader.CPU_ONLY}={os.environ.get(_loader.CPU_ONLY, '(unset)')}", "", "builds in the package:"]
    try:
        builds = _loader.find_builds(_loader.BUILDS_DIR)
    except ImportError as error:
        return [*lines, f"  {error}"]
    records = {b.key: json.loads((b.directory / "build.json").read_text()) for b in builds}
    lines += [f"  {b.directory.name}: {describe(b, records[b.key])}" for b in builds] or ["  none"]
    lines += ["", "loaded:"]
    try:
        cpu = _loader.select(builds, torch.__version__, version)
        lines.append(f"  CPU: {cpu.directory.name}")
    except ImportError as error:
        lines.append(f"  nothing: {error}")
        return lines
    cuda = None
    if os.environ.get(_loader.CPU_ONLY) == "1":
        lines.append(f"  CUDA: none ({_loader.CPU_ONLY}=1)")
    else:
        try:
            cuda = _loader.select_cuda(builds, torch.__version__, torch.version.cuda, version)
        except ImportError as error:
            lines.append(f"  CUDA: none, and the import fails: {error}")
        else:
            reason = ("torch is a CPU-only build" if not torch.version.cuda else
                      "the package holds no CUDA build (CUDA tensors get a clear error)")
            lines.append(f"  CUDA: {cuda.directory.name} (torch uses CUDA {torch.version.cuda})" if cuda
                         else f"  CUDA: none ({reason})")
    lines += ["", "GPUs:"]
    if not torch.cuda.is_available():
        return [*lines, "  none visible" + ("" if torch.version.cuda else " (a CPU-only torch)")]
    for index in range(torch.cuda.device_count()):
        capability = torch.cuda.get_device_capability(index)
        line = f"  cuda:{index} {torch.cuda.get_device_name(index)}, compute capability {capability[0]}.{capability[1]}"
        if cuda:
            record = records[cuda.key]
            line += ": " + coverage(capability, record.get("archs", []), record.get("ptx", ""))
        lines.append(line)
    return lines


def main() -> int:
    print("\n".join(report()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
