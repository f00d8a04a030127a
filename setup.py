"""Builds the extension on LibTorch's stable ABI against the installed torch.

One build loads on every torch from the floor declared in ci/declaration/matrix.toml
(``[package] torch_floor``) up, future minors included, and on every CPython:
the library registers its ops with torch (STABLE_TORCH_LIBRARY) and uses no
CPython symbol, so the wheel is tagged ``py3-none-<platform>`` and requires
``torch>=<floor>``. Build without isolation so that torch comes from your env:
    pip install --no-build-isolation .

CUDA kernels: with TORCH_SEGMENT_OPS_CUDA_DIR naming a folder of CUDA toolkits
(``<dir>/<major>/bin/nvcc``, as ``python -m ci install-cuda <dir>`` lays them
out), one more library per toolkit, ``_builds/cu<major>/_C.so``, holds the CUDA
kernels for the GPU architectures ci/declaration/matrix.toml declares for that major. It
links only the CUDA runtime (libcudart.so.<major>, which torch's own nvidia-*
packages provide at run time) and needs no CUDA build of torch to compile.
TORCH_SEGMENT_OPS_NVCC_LAUNCHER (e.g. ``ccache``) goes before each nvcc command.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel

ROOT = Path(__file__).parent.resolve()
sys.path.insert(0, str(ROOT))
from ci.declaration import matrix  # noqa: E402  the one reader of ci/declaration/matrix.toml (standard library; in the sdist)

VERSION = re.search(r'__version__ = "(.+)"', (ROOT / "torch_segment_ops" / "_version.py").read_text())[1]
FLOOR = matrix.torch_floor()
# The sdist is source only and a wheel's metadata needs no torch: the build
# backend (_build_backend/backend.py) says which. Everything else compiles against torch.
BUILDING = os.environ.get("TORCH_SEGMENT_OPS_BUILDING")
SOURCE_ONLY = BUILDING == "sdist"

torch = None
if BUILDING not in ("sdist", "metadata"):
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


def cuda_toolkits() -> dict[str, Path]:
    """CUDA major -> toolkit root, from TORCH_SEGMENT_OPS_CUDA_DIR (none when unset)."""
    folder = os.environ.get("TORCH_SEGMENT_OPS_CUDA_DIR")
    if not folder:
        return {}
    found = {p.name: p.resolve() for p in sorted(Path(folder).iterdir())
             if not p.name.startswith(".") and (p / "bin" / "nvcc").is_file()}  # .name: install-cuda's own
    declared = [c.major for c in matrix.cuda_builds()]
    undeclared = set(found) - set(declared)
    if not found or undeclared:
        sys.exit(f"TORCH_SEGMENT_OPS_CUDA_DIR={folder}: expected toolkits <major>/bin/nvcc for the CUDA majors "
                 f"declared in ci/declaration/matrix.toml ({', '.join(declared) or 'none'}), found "
                 f"{', '.join(found) or 'none'} (`python -m ci install-cuda {folder}` installs them)")
    return found


def nvcc_version(toolkit: Path) -> str:
    out = subprocess.run([str(toolkit / "bin" / "nvcc"), "--version"], capture_output=True, text=True, check=True)
    return re.search(r"release (\d+\.\d+)", out.stdout)[1]


def staged_sources() -> Path:
    """csrc/ copied to a path named by its content: nvcc hashes the source's absolute path into device
    symbol names, so compiling from the (temporary) build tree would make every build differ."""
    files = sorted(p for p in (ROOT / "csrc").rglob("*") if p.is_file())
    digest = hashlib.sha256(b"".join(str(p.relative_to(ROOT)).encode() + p.read_bytes() for p in files)).hexdigest()
    staged = Path(tempfile.gettempdir()) / f"torch-segment-ops-csrc-{digest[:16]}"
    if not staged.is_dir():
        partial = Path(tempfile.mkdtemp(prefix=staged.name + ".", dir=staged.parent))
        shutil.copytree(ROOT / "csrc", partial, dirs_exist_ok=True)
        try:
            partial.rename(staged)
        except OSError:  # another build staged the same sources first
            shutil.rmtree(partial, ignore_errors=True)
    return staged


def gencode_args(major: str) -> list[str]:
    """Machine code for each declared architecture, and PTX of the newest so newer GPUs can JIT it."""
    spec = matrix.cuda(major)
    args = []
    for arch in spec.archs:
        sm = arch.replace(".", "")
        args += ["-gencode", f"arch=compute_{sm},code=sm_{sm}"]
    ptx = spec.ptx.replace(".", "")
    return args + ["-gencode", f"arch=compute_{ptx},code=compute_{ptx}"]


def host_compiler(toolkit: Path) -> list[str]:
    """$CXX (e.g. a cross compiler), else the older g++ `ci install-cuda` chose when the default one is
    newer than this nvcc accepts (<toolkit>/host-cxx), else nvcc's default."""
    chosen = toolkit / "host-cxx"
    cxx = os.environ.get("CXX") or (chosen.read_text().strip() if chosen.is_file() else "")
    return ["-ccbin", cxx] if cxx else []


def nvcc_args(major: str, toolkit: Path) -> list[str]:
    # no build-tree path: nvcc compiles the staged sources into a relative path (a compiler cache
    # then finds the same command line in every fresh tree)
    cxx = [a for a in compile_args() if a != "-fopenmp-simd" and not a.startswith("-ffile-prefix-map=")] + ["-fPIC"]
    # -objtemp: intermediate files named after the object, not a random temporary name that ends up in
    # the object (the build must be reproducible)
    return [*host_compiler(toolkit), "-std=c++17", "-O3", "--expt-relaxed-constexpr", "-objtemp",
            f"-DTORCH_TARGET_VERSION={target_version()}",
            f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
            "-Xcompiler", ",".join(cxx), *gencode_args(major)]


def cuda_extension(major: str, toolkit: Path):
    libs = [str(toolkit / d) for d in ("lib64", "lib") if (toolkit / d).is_dir()]
    ext = CppExtension(
        name=f"torch_segment_ops._builds.cu{major}._C",
        # the C++ part; the .cu files are compiled by nvcc in BuildWithRecord.build_extension
        sources=sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cuda").glob("*.cpp")),
        include_dirs=[str(ROOT / "csrc")],
        extra_compile_args=compile_args(),
        library_dirs=libs,
        extra_link_args=[*link_args(), f"-l:libcudart.so.{major}"],
        py_limited_api=True,
    )
    ext.cuda = (major, toolkit)
    return ext


def get_extensions():
    if torch is None:
        return []
    if version_tuple(torch.__version__) < version_tuple(FLOOR):
        sys.exit(f"torch-segment-ops needs torch>={FLOOR} to build (its stable ABI floor); found {torch.__version__}")
    cpu = CppExtension(
        name="torch_segment_ops._builds.stable._C",
        sources=sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp")),
        include_dirs=[str(ROOT / "csrc")],
        extra_compile_args=compile_args(),
        extra_link_args=link_args(),
        py_limited_api=True,  # no libtorch_python; the library uses no CPython API at all
    )
    return [cpu] + [cuda_extension(major, toolkit) for major, toolkit in cuda_toolkits().items()]


class BuildWithRecord(BuildExtension if torch else object):
    """Names the library _C.so (it is loaded by torch, not imported by Python)
    and writes build.json (the ABI, the floor and the torch compiled against) next to it."""

    def get_ext_filename(self, fullname):
        return str(Path(*fullname.split("."))) + ".so"

    def build_extension(self, ext):
        if hasattr(ext, "cuda"):
            ext.extra_objects = self.compile_cuda(ext)
        super().build_extension(ext)

    def compile_cuda(self, ext) -> list[str]:
        """csrc/cuda/*.cu to object files with the toolkit's nvcc, all at once (processes started from
        this thread: forking from worker threads can hang under qemu-user, which the aarch64 lane uses)."""
        major, toolkit = ext.cuda
        out_dir = Path(os.path.relpath(self.build_temp)) / f"cu{major}"  # relative: see nvcc_args
        out_dir.mkdir(parents=True, exist_ok=True)
        csrc = staged_sources()
        include = [f"-I{csrc}", *(f"-I{d}" for d in torch.utils.cpp_extension.include_paths())]
        launcher = os.environ.get("TORCH_SEGMENT_OPS_NVCC_LAUNCHER", "").split()  # e.g. ccache
        jobs = []
        for source in sorted((csrc / "cuda").glob("*.cu")):
            obj = out_dir / (source.stem + ".o")
            cmd = [*launcher, str(toolkit / "bin" / "nvcc"), "-c", str(source), "-o", str(obj), *include,
                   *nvcc_args(major, toolkit), "-Xcompiler", f"-ffile-prefix-map={csrc}=csrc"]
            print(" ".join(cmd), flush=True)
            jobs.append((subprocess.Popen(cmd), cmd, str(obj)))
        failed = [cmd for process, cmd, _ in jobs if process.wait() != 0]
        if failed:
            raise RuntimeError(f"nvcc failed: {' '.join(failed[0])}")
        return [obj for _, _, obj in jobs]

    def run(self):
        super().run()
        for ext in self.extensions:
            record = {"abi": "stable", "floor": FLOOR, "torch": torch.__version__}
            if hasattr(ext, "cuda"):
                major, toolkit = ext.cuda
                spec = matrix.cuda(major)
                record.update(cuda=nvcc_version(toolkit), cuda_torch=spec.torch, archs=list(spec.elf_archs),
                              ptx=f"compute_{spec.ptx.replace('.', '')}")
            path = Path(self.get_ext_fullpath(ext.name)).parent / "build.json"
            path.write_text(json.dumps(record, indent=2) + "\n")


class PlatformWheel(bdist_wheel):
    """py3-none-<platform>: any CPython >= requires-python, free-threaded ones included."""

    def get_tag(self):
        return ("py3", "none", super().get_tag()[2])


setup(
    version=VERSION,
    install_requires=[] if SOURCE_ONLY else [f"torch>={FLOOR}"],
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildWithRecord, "bdist_wheel": PlatformWheel} if torch else {},
)
