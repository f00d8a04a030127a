"""Builds the extension against the torch installed in the build environment.

Build without isolation so that torch is the one you will run with:
    pip install --no-build-isolation .
The wheel is tagged abi3 (cp310) and versioned ``X.Y.Z+ptAB`` with
``Requires-Dist: torch==A.B.*``: a build only loads under the torch minor it
was compiled against.
"""

import json
import os
import re
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent.resolve()
VERSION = re.search(r'__version__ = "(.+)"', (ROOT / "torch_segment_ops" / "_version.py").read_text())[1]
# The sdist is source only (no torch needed, no torch label); the build backend
# (_build_backend/backend.py) says so. Everything else compiles against torch.
SOURCE_ONLY = os.environ.get("TORCH_SEGMENT_OPS_BUILDING") == "sdist"

torch = None
if not SOURCE_ONLY:
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        sys.exit(
            "torch-segment-ops is compiled against the torch it will run with, so torch must already be "
            "installed. Install torch first, then build without isolation:\n"
            "    pip install --no-build-isolation torch-segment-ops"
        )


def torch_minor():
    major, minor = re.match(r"(\d+)\.(\d+)", torch.__version__).groups()
    return major, minor


def compile_args():
    args = ["-O3", f"-ffile-prefix-map={ROOT}=."]  # no build paths in the binary
    # Results are unchanged (this is not -ffast-math); without them GCC keeps
    # the float selects in the kernels as branches and the loops stay scalar.
    args += ["-fno-trapping-math", "-fno-math-errno"]
    if os.environ.get("TORCH_SEGMENT_OPS_DEBUG") != "1":
        args.append("-g0")  # Python's CFLAGS add -g; the .so would be 100x larger
    if sys.platform == "linux":
        # at::parallel_for is only parallel when the extension itself is built
        # with OpenMP; libgomp comes from torch/lib at run time. (macOS: Apple
        # clang has no -fopenmp, so the kernels run serially there.)
        args.append("-fopenmp")
    return args


def link_args():
    args = ["-fopenmp"] if sys.platform == "linux" else []
    if os.environ.get("TORCH_SEGMENT_OPS_DEBUG") != "1" and sys.platform == "linux":
        args.append("-Wl,--strip-all")  # debug info and the static symbol table
    return args


def get_extensions():
    if torch is None:
        return []
    major, minor = torch_minor()
    return [
        CppExtension(
            name=f"torch_segment_ops._builds.torch_{major}_{minor}._C",
            sources=sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp")),
            include_dirs=[str(ROOT / "csrc")],
            extra_compile_args=compile_args(),
            extra_link_args=link_args(),
            py_limited_api=True,
        )
    ]


class BuildWithRecord(BuildExtension if torch else object):
    """Writes build.json (the torch compiled against) next to the library."""

    def run(self):
        super().run()
        for ext in self.extensions:
            record = Path(self.get_ext_fullpath(ext.name)).parent / "build.json"
            record.write_text(json.dumps({"torch": torch.__version__}, indent=2) + "\n")


def version_and_requirements():
    if torch is None:  # the sdist is not tied to a torch
        return VERSION, []
    major, minor = torch_minor()
    return f"{VERSION}+pt{major}{minor}", [f"torch=={major}.{minor}.*"]


version, requires = version_and_requirements()
setup(
    version=version,
    install_requires=requires,
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildWithRecord} if torch else {},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
