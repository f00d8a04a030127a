"""Builds the extension on LibTorch's stable ABI against the installed torch.

One build loads on every torch from the floor declared in ci/matrix.toml
(``[package] torch_floor``) up, future minors included, and on every CPython:
the library registers its ops with torch (STABLE_TORCH_LIBRARY) and uses no
CPython symbol, so the wheel is tagged ``py3-none-<platform>`` and requires
``torch>=<floor>``. Build without isolation so that torch comes from your env:
    pip install --no-build-isolation .
"""

import json
import os
import re
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel

try:
    import tomllib
except ImportError:  # CPython 3.10
    import tomli as tomllib

ROOT = Path(__file__).parent.resolve()
VERSION = re.search(r'__version__ = "(.+)"', (ROOT / "torch_segment_ops" / "_version.py").read_text())[1]
PACKAGE = tomllib.loads((ROOT / "ci" / "matrix.toml").read_text())["package"]
FLOOR = PACKAGE["torch_floor"]
# The sdist is source only (no torch needed); the build backend
# (_build_backend/backend.py) says so. Everything else compiles against torch.
SOURCE_ONLY = os.environ.get("TORCH_SEGMENT_OPS_BUILDING") == "sdist"

torch = None
if not SOURCE_ONLY:
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        sys.exit(
            f"torch-segment-ops compiles against torch's stable ABI, so torch>={FLOOR} must already be installed. "
            "Install torch first, then build without isolation:\n"
            "    pip install --no-build-isolation torch-segment-ops"
        )


def version_tuple(version: str) -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


def target_version() -> str:
    """TORCH_TARGET_VERSION for the floor: the stable headers then only offer
    what torch FLOOR has (torch/headeronly/version.h's encoding)."""
    major, minor = version_tuple(FLOOR)
    return f"0x{major:02x}{minor:02x}000000000000"


def compile_args():
    args = ["-O3", f"-ffile-prefix-map={ROOT}=.", f"-DTORCH_TARGET_VERSION={target_version()}"]
    # Results are unchanged (this is not -ffast-math); without them the
    # compiler keeps the float selects in the kernels as branches.
    args += ["-fno-trapping-math", "-fno-math-errno"]
    args.append("-fopenmp-simd")  # the `omp simd` loop hints only: no OpenMP runtime
    if os.environ.get("TORCH_SEGMENT_OPS_DEBUG") != "1":
        args.append("-g0")  # Python's CFLAGS add -g; the .so would be 100x larger
    return args


def link_args():
    if os.environ.get("TORCH_SEGMENT_OPS_DEBUG") != "1" and sys.platform == "linux":
        return ["-Wl,--strip-all"]  # debug info and the static symbol table
    return []


def get_extensions():
    if torch is None:
        return []
    if version_tuple(torch.__version__) < version_tuple(FLOOR):
        sys.exit(f"torch-segment-ops needs torch>={FLOOR} to build (its stable ABI floor); found {torch.__version__}")
    return [
        CppExtension(
            name="torch_segment_ops._builds.stable._C",
            sources=sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp")),
            include_dirs=[str(ROOT / "csrc")],
            extra_compile_args=compile_args(),
            extra_link_args=link_args(),
            py_limited_api=True,  # no libtorch_python; the library uses no CPython API at all
        )
    ]


class BuildWithRecord(BuildExtension if torch else object):
    """Names the library _C.so (it is loaded by torch, not imported by Python)
    and writes build.json (the ABI, the floor and the torch compiled against) next to it."""

    def get_ext_filename(self, fullname):
        return str(Path(*fullname.split("."))) + ".so"

    def run(self):
        super().run()
        for ext in self.extensions:
            record = Path(self.get_ext_fullpath(ext.name)).parent / "build.json"
            record.write_text(json.dumps({"abi": "stable", "floor": FLOOR, "torch": torch.__version__}, indent=2)
                              + "\n")


class PlatformWheel(bdist_wheel):
    """py3-none-<platform>: any CPython >= requires-python, free-threaded ones included."""

    def get_tag(self):
        return ("py3", "none", super().get_tag()[2])


setup(
    version=VERSION,
    install_requires=[] if torch is None else [f"torch>={FLOOR}"],
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildWithRecord, "bdist_wheel": PlatformWheel} if torch else {},
)
