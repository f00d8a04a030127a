"""`local --arch aarch64`: the Linux arm64 wheel built and smoke-tested on an
x86_64 machine, under qemu-user emulation.

An arm64 Debian rootfs (debootstrap --foreign, its .debs unpacked, no
second stage) gets the x86_64 cross g++ unpacked into it, so the unmodified
setup.py runs under emulated CPython while the compiler runs natively. torch
and the build tools are aarch64 wheels installed from the host with
`uv pip install --target --python-platform` (uv evaluates the wheels' markers
for the target, which pip does not). Repair and audit run on the host.

Needs root (chroot, mounts) and binfmt_misc. It touches nothing outside its
cache folder except: mounting binfmt_misc if it is not mounted, and
registering Debian's qemu-aarch64 handler (/usr/lib/binfmt.d/qemu-aarch64.conf)
there. Every mount it makes is undone, also on failure; it never mounts
through a symlink (debootstrap makes the rootfs's proc a link to the host's).
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from ..declaration import matrix
from ..errors import PipelineError
from ..stages import cuda
from ..stages.build import IGNORED, ccache_environ, source_date_epoch
from ..util import envs
from ..util.envs import REQUIREMENTS, ROOT, log

SUITE = "bookworm"  # its python3 is 3.11, which the torch wheels below target
PYTHON = "3.11"
TARGET_PLATFORM = "aarch64-manylinux_2_36"  # bookworm's glibc
ROOTFS_PACKAGES = ["python3", "libpython3.11-dev"]
# amd64 packages: the cross compiler, its arm64 sysroot, the libraries it runs on, and ccache (for nvcc)
CROSS_PACKAGES = [
    "binutils-aarch64-linux-gnu", "binutils-common", "cpp-12-aarch64-linux-gnu", "cpp-aarch64-linux-gnu",
    "g++-12-aarch64-linux-gnu", "g++-aarch64-linux-gnu", "gcc-12-aarch64-linux-gnu",
    "gcc-12-aarch64-linux-gnu-base", "gcc-12-base", "gcc-12-cross-base", "gcc-aarch64-linux-gnu",
    "libasan8-arm64-cross", "libatomic1-arm64-cross", "libbinutils", "libc6", "libc6-arm64-cross",
    "libc6-dev-arm64-cross", "libcc1-0", "libgcc-12-dev-arm64-cross", "libgcc-s1", "libgcc-s1-arm64-cross",
    "libgmp10", "libgomp1-arm64-cross", "libhwasan0-arm64-cross", "libisl23", "libitm1-arm64-cross",
    "libjansson4", "liblsan0-arm64-cross", "libmpc3", "libmpfr6", "libstdc++-12-dev-arm64-cross", "libstdc++6",
    "libstdc++6-arm64-cross", "libtsan2-arm64-cross", "libubsan1-arm64-cross", "libzstd1",
    "linux-libc-dev-arm64-cross", "zlib1g", "ccache", "libhiredis0.14",
]
BINFMT_CONF = Path("/usr/lib/binfmt.d/qemu-aarch64.conf")  # shipped by qemu-user-static
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


def cache() -> Path:
    return envs.cache_dir() / "aarch64"


def rootfs() -> Path:
    return cache() / "rootfs"


def unavailable() -> str | None:
    """Why emulation cannot run here (None: it can)."""
    if platform.machine() != "x86_64":
        return f"the emulated aarch64 path is for x86_64 hosts, this is {platform.machine()}"
    if os.geteuid() != 0:
        return "needs root (chroot, mounts, binfmt registration)"
    missing = [tool for tool, path in (("debootstrap", shutil.which("debootstrap")),
                                        ("qemu-user-static", BINFMT_CONF.exists() or None)) if not path]
    if missing:
        return f"missing {' and '.join(missing)}: apt-get install -y qemu-user-static debootstrap"
    if not (BINFMT_DIR / "register").exists():
        result = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], capture_output=True)
        if result.returncode != 0:
            return f"binfmt_misc is not mounted and cannot be: {result.stderr.decode().strip()}"
    if not (BINFMT_DIR / "qemu-aarch64").exists():
        try:
            (BINFMT_DIR / "register").write_text(BINFMT_CONF.read_text().strip())
        except OSError as error:
            return f"cannot register the qemu-aarch64 binfmt handler: {error}"
    return None


def check_host() -> None:
    reason = unavailable()
    if reason:
        raise PipelineError(f"aarch64 emulation: {reason}")


def stamped(path: Path, spec: str) -> bool:
    stamp = path.parent / f".{path.name}.spec"
    return path.exists() and stamp.exists() and stamp.read_text() == spec


def stamp(path: Path, spec: str) -> None:
    (path.parent / f".{path.name}.spec").write_text(spec)


def real_dir(path: Path) -> None:
    """Make path a real directory inside the rootfs (replacing a symlink, never following it)."""
    if path.is_symlink():
        path.unlink()
    path.mkdir(exist_ok=True)


def prepare_rootfs() -> Path:
    spec = f"{SUITE} {ROOTFS_PACKAGES} {CROSS_PACKAGES}"
    root = rootfs()
    if stamped(root, spec):
        return root
    log("creating the arm64 rootfs (debootstrap --foreign, cross g++) ...")
    tmp = cache() / "rootfs.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    cache().mkdir(parents=True, exist_ok=True)
    subprocess.run(["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase",
                    f"--include={','.join(ROOTFS_PACKAGES)}", SUITE, str(tmp)], check=True, stdout=subprocess.DEVNULL)
    for name in ("proc", "sys", "dev"):  # before unpacking anything: never write through host links
        real_dir(tmp / name)
    cross = cache() / "cross-debs"
    shutil.rmtree(cross, ignore_errors=True)
    cross.mkdir()
    subprocess.run(["apt-get", "download", *CROSS_PACKAGES], cwd=cross, check=True, capture_output=True)
    for deb in [*sorted((tmp / "var/cache/apt/archives").glob("*.deb")), *sorted(cross.glob("*.deb"))]:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    stamp(root, spec)
    return root


def site(name: str, requirements: list[str]) -> Path:
    """aarch64 wheels installed into <rootfs>/opt/<name> from the host (cached)."""
    target = rootfs() / "opt" / name
    spec = " ".join(requirements)
    if stamped(target, spec):
        return target
    log(f"installing aarch64 {spec} into /opt/{name} ...")
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(["uv", "pip", "install", "--quiet", "--target", str(target), "--python-platform",
                    TARGET_PLATFORM, "--python-version", PYTHON, *requirements], check=True)
    stamp(target, spec)
    return target


@contextlib.contextmanager
def mounted_proc(root: Path) -> Iterator[Path]:
    """proc mounted in the rootfs root for the duration; always unmounted. (Not sysfs: the
    host's x86 CPU entries there make torch's aarch64 CPU probing (xbyak) crash;
    without it, cpuinfo only warns.)"""
    point = root / "proc"
    if point.is_symlink() or not point.is_dir():
        raise PipelineError(f"refusing to mount proc on {point}: not a real directory")
    subprocess.run(["mount", "-t", "proc", "proc", str(point)], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "--lazy", str(point)], check=False)


def chroot(args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    environ = [f"{k}={v}" for k, v in {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", **env}.items()]
    return subprocess.run(["chroot", str(rootfs()), "/usr/bin/env", "-i", *environ, *args],
                          capture_output=True, text=True, check=check)


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in envs.requirements_text(path).splitlines())
    return [line for line in lines if line]


def cuda_toolkits() -> dict[str, str]:
    """The build environment for the CUDA builds linux-aarch64 declares: /opt/cuda/<major> in the
    rootfs holds the host's nvcc and NVVM (x86_64: they run natively there, like the cross g++, and
    nvcc compiles the host code with it: setup.py passes $CXX as -ccbin), with the headers and the
    aarch64 CUDA runtime to link against (the same hash-pinned packages, installed for aarch64)."""
    majors = matrix.platform("linux-aarch64").cuda if matrix.abi() == matrix.STABLE else ()
    for major in majors:
        target = rootfs() / "opt" / "cuda" / major
        spec = cuda.lock_file(major).read_text()
        if stamped(target, spec):
            continue
        host = (cuda.install(cuda.cache(), (major,)) / major).resolve()
        arm = site(f"cuda-{major}-aarch64", ["-r", str(cuda.lock_file(major))]) / "nvidia" / f"cu{major}"
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-al", str(arm), str(target)], check=True)
        for part in ("bin", "nvvm"):
            shutil.rmtree(target / part)
            subprocess.run(["cp", "-al", str(host / part), str(target / part)], check=True)
        stamp(target, spec)
    return {cuda.CUDA_DIR_VARIABLE: "/opt/cuda"} if majors else {}


def compiler_cache() -> dict[str, str]:
    """ccache (amd64, like nvcc; one of CROSS_PACKAGES) before each nvcc command of the build, its
    objects kept in the rootfs (ci/stages/build.py ccache_environ)."""
    return ccache_environ("/usr/bin/ccache", "/var/cache/torch-segment-ops-ccache")


def torch_site(pin: str) -> Path:
    return site(f"torch-{pin}", [f"torch=={pin}", "numpy==2.4.6"])


def build(minor: str, out: Path) -> Path:
    """The per-torch aarch64 wheel, built by setup.py under emulated CPython."""
    t = matrix.torch(minor)
    torch_dir = torch_site(t.pin)
    build_dir = site("build", requirement_lines(REQUIREMENTS / "build.txt") + ["pip==26.3"])
    toolkits = cuda_toolkits()
    work = rootfs() / "work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(ROOT, work / "src", ignore=IGNORED)
    env = {"PYTHONPATH": f"/opt/{build_dir.name}:/opt/{torch_dir.name}", "CC": "aarch64-linux-gnu-gcc",
           # its ninja (an arm64 binary, emulated) runs the cross compiler on every core, not one file at a time
           "PATH": f"/opt/{build_dir.name}/bin:/usr/local/bin:/usr/bin:/bin",
           "CXX": "aarch64-linux-gnu-g++", "MAX_JOBS": str(os.cpu_count() or 2),
           "SOURCE_DATE_EPOCH": source_date_epoch(), **toolkits, **(compiler_cache() if toolkits else {})}
    log(f"building the aarch64 wheel for torch {t.pin} (emulated CPython, native cross g++) ...")
    with mounted_proc(rootfs()):
        result = chroot(["python3", "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", "/work/dist",
                         "/work/src"], env, check=False)
    if result.returncode != 0:
        raise PipelineError(f"aarch64 build failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}")
    (wheel,) = (work / "dist").glob("*.whl")
    out.mkdir(parents=True, exist_ok=True)
    target = out / wheel.name
    shutil.move(wheel, target)
    return target


def smoke(wheel: Path, minor: str) -> tuple[bool, str]:
    """Run ci/scripts/smoke_check.py in the emulated CPython with only torch and the wheel on the path."""
    torch_dir = torch_site(matrix.torch(minor).pin)
    smoke_dir = rootfs() / "opt" / "smoke"
    shutil.rmtree(smoke_dir, ignore_errors=True)
    subprocess.run(["uv", "pip", "install", "--quiet", "--no-deps", "--target", str(smoke_dir), "--python-platform",
                    TARGET_PLATFORM, "--python-version", PYTHON, str(wheel)], check=True)
    shutil.copy(ROOT / "ci" / "scripts" / "smoke_check.py", rootfs() / "tmp" / "smoke_check.py")
    with mounted_proc(rootfs()):
        result = chroot(["python3", "/tmp/smoke_check.py"], {"PYTHONPATH": f"/opt/smoke:/opt/{torch_dir.name}"},
                        check=False)
        arch = chroot(["python3", "-c", "import platform; print(platform.machine())"], {}).stdout.strip()
    output = f"emulated {arch} (qemu-user, not hardware)\n{result.stdout}{result.stderr}"
    return result.returncode == 0 and "SMOKE OK" in result.stdout, output
