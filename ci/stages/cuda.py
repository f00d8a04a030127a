"""`install-cuda DIR`: the CUDA toolkits a Linux wheel's CUDA builds compile with, laid out as
DIR/<major>/ with bin/nvcc, include/ and lib/ -- the layout setup.py reads from
TORCH_SEGMENT_OPS_CUDA_DIR. Each is hash-pinned: from the registry (ci/requirements/cuda<major>.lock),
or, where the registry has no nvcc (CUDA 12), Debian's packages (ci/requirements/cuda<major>.toml).

Standard library only: cibuildwheel's before-build runs it in the build environment.
"""

from __future__ import annotations

import fcntl
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath

from ..declaration import matrix
from ..errors import PipelineError
from ..util.envs import REQUIREMENTS, cache_dir, log
from . import debs

CUDA_DIR_VARIABLE = "TORCH_SEGMENT_OPS_CUDA_DIR"
# where fetched .debs are kept (the container lane points it at the host's cache)
DEB_CACHE_VARIABLE = "TORCH_SEGMENT_OPS_DEB_CACHE"
HOST_CXX = "host-cxx"  # DIR/<major>/host-cxx: the g++ nvcc must use, when the default one is too new
# the Debian toolkit's files -> the toolkit folder (g++/gcc in its bin are Debian's compiler pickers)
DEB_LAYOUT = (("usr/lib/nvidia-cuda-toolkit/bin/", "bin/"),
              ("usr/lib/nvidia-cuda-toolkit/libdevice/", "nvvm/libdevice/"), ("usr/include/", "include/"))
DEB_TOOLS = ("ptxas", "fatbinary", "nvlink", "cudafe++", "bin2c", "nvprune", "cuobjdump")
# nvcc finds the rest of the toolkit from its own folder, as in NVIDIA's layout
NVCC_PROFILE = """TOP = $(_HERE_)/..
NVVMIR_LIBRARY_DIR = $(TOP)/nvvm/libdevice
PATH += $(_HERE_):
INCLUDES += "-I$(TOP)/include" $(_SPACE_)
LIBRARIES =+ $(_SPACE_) "-L$(TOP)/lib"
"""


def native_platform() -> matrix.Platform | None:
    """The declared platform this machine builds for, if any."""
    for plat in matrix.platforms():
        if plat.cibw_platform == sys.platform and plat.arch == platform.machine():
            return plat
    return None


def majors_here() -> tuple[str, ...]:
    """The CUDA majors this machine's wheel holds (none off Linux, or in per-torch mode)."""
    plat = native_platform()
    return plat.cuda if plat and matrix.abi() == matrix.STABLE else ()


def lock_file(major: str) -> Path:
    """The pins of the CUDA major's toolkit: a registry lock, or Debian packages (.toml)."""
    lock = REQUIREMENTS / f"cuda{major}.lock"
    return lock if lock.is_file() else lock.with_suffix(".toml")


def toolkit_version(major: str) -> str:
    """The CUDA version the major's pinned toolkit compiles with ("12.4"), as its nvcc reports it."""
    lock = lock_file(major)
    if lock.suffix == ".toml":
        return matrix.tomllib.loads(lock.read_text())["version"]
    return re.search(r"^nvidia-cuda-nvcc==(\d+\.\d+)\.", lock.read_text(), re.MULTILINE)[1]


def install(dest: Path, majors: tuple[str, ...] | None = None) -> Path:
    """DIR/<major> for each CUDA major this machine builds (kept when already there); returns DIR."""
    dest = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    with (dest / ".install.lock").open("w") as held:  # two builds at once (the test run's early lanes)
        fcntl.flock(held, fcntl.LOCK_EX)
        for major in majors_here() if majors is None else majors:
            matrix.cuda(major)  # declared
            root = dest / major
            if (root / "bin" / "nvcc").is_file():
                continue
            lock = lock_file(major)
            toolkit = from_debian(dest, major, lock) if lock.suffix == ".toml" else from_registry(dest, major, lock)
            if root.is_symlink():
                root.unlink()
            root.symlink_to(toolkit, target_is_directory=True)
    return dest


def from_registry(dest: Path, major: str, lock: Path) -> Path:
    packages = dest / f".packages-{major}"
    log(f"installing the CUDA {major} toolkit into {packages} ...")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                    "--require-hashes", "--target", str(packages), "-r", str(lock)], check=True)
    toolkit = packages / "nvidia" / f"cu{major}"
    if not (toolkit / "bin" / "nvcc").is_file():
        raise PipelineError(f"install-cuda: the CUDA {major} packages hold no {toolkit / 'bin' / 'nvcc'}")
    return toolkit


def deb_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def from_debian(dest: Path, major: str, lock: Path) -> Path:
    """The toolkit unpacked from the pinned .debs into DIR/.debian-<major> (built aside, then renamed)."""
    spec = matrix.tomllib.loads(lock.read_text())
    packages = {**spec.get(deb_arch(), {}), **spec.get("all", {})} if deb_arch() in spec else {}
    if not packages:
        raise PipelineError(f"install-cuda: {lock.name} pins no packages for {deb_arch()}")
    toolkit, partial = dest / f".debian-{major}", dest / f".debian-{major}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    cache = Path(os.environ.get(DEB_CACHE_VARIABLE) or dest / ".debs")
    mirror = debs.mirror()
    for name, pin in packages.items():
        log(f"unpacking {name} (CUDA {spec['version']}, Debian) into {toolkit} ...")
        deb = debs.fetch(f"{mirror}/{pin['file']}", cache / Path(pin["file"]).name, pin["sha256"], pin["size"])
        debs.unpack(deb, lambda path: deb_place(path, partial))
    (partial / "bin" / "nvcc.profile").write_text(NVCC_PROFILE)
    host_cxx = older_host_compiler(spec["max_gcc"])
    if host_cxx:
        (partial / HOST_CXX).write_text(host_cxx + "\n")
    shutil.rmtree(toolkit, ignore_errors=True)
    partial.rename(toolkit)
    return toolkit


def deb_place(path: PurePosixPath, root: Path) -> Path | None:
    """Where a file of the Debian CUDA packages goes in the toolkit (None: not needed)."""
    text = str(path)
    for prefix, folder in DEB_LAYOUT:
        if text.startswith(prefix) and path.name not in ("g++", "gcc"):
            return root / folder / text[len(prefix):]
    if path.parent == PurePosixPath("usr/bin") and path.name in DEB_TOOLS:
        return root / "bin" / path.name
    if re.fullmatch(r"usr/lib/[^/]+/libcudart\.so\.[\d.]+", text):
        return root / "lib" / path.name
    return None


def older_host_compiler(max_gcc: int) -> str | None:
    """The g++ nvcc must use when the build's own is newer than max_gcc: gcc-toolset-<max_gcc>, installed
    with dnf where it is missing (the manylinux_2_28 image: only on GitHub, not tried here)."""
    cxx = os.environ.get("CXX") or shutil.which("g++")
    if not cxx:
        return None
    version = subprocess.run([cxx, "-dumpversion"], capture_output=True, text=True).stdout.strip()
    if not version or int(version.split(".")[0]) <= max_gcc:
        return None
    older = Path(f"/opt/rh/gcc-toolset-{max_gcc}/root/usr/bin/g++")
    if not older.is_file() and shutil.which("dnf"):
        subprocess.run(["dnf", "install", "-y", "-q", f"gcc-toolset-{max_gcc}-gcc-c++"], check=True)
    if not older.is_file():
        raise PipelineError(f"install-cuda: {cxx} is g++ {version}; this nvcc accepts g++ <= {max_gcc}, and "
                            f"no g++ {max_gcc} was found ({older})")
    return str(older)


def build_environ(dest: Path, majors: tuple[str, ...] | None = None) -> dict[str, str]:
    """What a build of the CUDA builds needs in its environment (nothing when this machine has none)."""
    wanted = majors_here() if majors is None else majors
    return {CUDA_DIR_VARIABLE: str(install(dest, wanted))} if wanted else {}


def cache() -> Path:
    return cache_dir() / "cuda"

