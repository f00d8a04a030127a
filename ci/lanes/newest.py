"""`local --newest`: the final wheel's op test suite under the CPythons a development machine's
pyenv lacks, natively (x86_64):

- CPython 3.14 and 3.15: Debian sid's binary packages, in a cached sid rootfs (debootstrap
  --foreign with its default mirror, the .debs unpacked, no second stage: the aarch64 lane's
  recipe), run with chroot (they need sid's glibc);
- free-threaded CPython 3.13 (3.13t): built once from Debian's python3.13 source (the upstream
  tarball, pinned by its SHA-256) with --disable-gil into its own prefix in the cache; nothing is
  installed into the machine.

torch (the registry's builds for that CPython: CUDA builds, run on the CPU) and the test
requirements are installed from the host by uv into cached --target folders, the wheel into a
fresh one; each cell runs the smoke check (which, on a free-threaded CPython, requires the GIL to
stay disabled and runs every op from 8 threads) and then tests/ops. Needs root (chroot, mknod).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..declaration import matrix
from ..errors import PipelineError
from ..stages import debs, smoke
from ..util import envs
from ..util.envs import REQUIREMENTS, log
from .aarch64 import mounted_proc, real_dir, requirement_lines, stamp, stamped

SUITE = "sid"
# Debian's python3.13 source package: the upstream CPython tarball (trixie: 3.13.5)
FREE_THREADED_SOURCE = ("pool/main/p/python3.13/python3.13_3.13.5.orig.tar.xz",
                        "93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640", 22856016)
PACKAGES = ["g++", "openssl"]  # with libpython3.X-dev: what torch.compile's inductor runs (tests/ops/test_compile.py)
UV_NEWEST_GLIBC = (2, 40)  # uv's --python-platform names manylinux up to 2_40
# The op suite on a free-threaded CPython, GIL kept disabled (-X gil=0): triton, which torch's CUDA
# builds depend on and torch.compile / opcheck import, has not declared free-threading support and
# would otherwise enable it. (The smoke check, run without -X gil=0, shows that torch and this package
# leave the GIL disabled.) Fails if the GIL is enabled at the end.
GIL_KEPT_OFF = """import sys, pytest
code = pytest.main(sys.argv[1:])
print(f"GIL enabled after the op tests: {sys._is_gil_enabled()}")
sys.exit(code or int(sys._is_gil_enabled()))"""
DEVICES = {"null": (1, 3), "zero": (1, 5), "random": (1, 8), "urandom": (1, 9)}


def cache() -> Path:
    return envs.cache_dir() / "newest"


def rootfs() -> Path:
    return cache() / "sid-rootfs"


def unavailable() -> str | None:
    """Why the lane cannot run here (None: it can)."""
    if os.uname().machine != "x86_64":
        return f"the sid rootfs and torch wheels here are x86_64; this is {os.uname().machine}"
    if os.geteuid() != 0:
        return "needs root (chroot into the sid rootfs, device nodes)"
    absent = [tool for tool in ("debootstrap", "make", "cc") if not shutil.which(tool)]
    if absent:
        return f"missing {', '.join(absent)}: apt-get install debootstrap build-essential"
    return None


@dataclass(frozen=True)
class Cell:
    python: str  # "3.14", or "3.13t" (free-threaded)
    torch: matrix.Torch
    pin: str  # the torch release installed (a free-threaded CPython may need another patch release)

    @property
    def free_threaded(self) -> bool:
        return self.python.endswith("t")

    @property
    def version(self) -> str:
        return self.python.removesuffix("t")

    @property
    def label(self) -> str:
        where = "free-threaded, GIL disabled" if self.free_threaded else f"Debian {SUITE}"
        return f"op tests cp{self.python.replace('.', '')} torch {self.pin} ({where})"


def cells() -> list[Cell]:
    return [Cell(python, t, pin) for python, t, pin in matrix.newest_cells()]


def prepare_rootfs() -> Path:
    """The sid rootfs with the declared CPythons (cached while its recipe is unchanged)."""
    versions = matrix.declaration().local.sid_python
    pythons = [f"python{v}" for v in versions]
    packages = [*pythons, *(f"libpython{v}-dev" for v in versions), *PACKAGES]
    spec = f"{SUITE} {packages} root-user"
    root = rootfs()
    if stamped(root, spec):
        return root
    log(f"creating the Debian {SUITE} rootfs ({', '.join(pythons)}) ...")
    tmp = cache() / "sid-rootfs.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    cache().mkdir(parents=True, exist_ok=True)
    subprocess.run(["debootstrap", "--foreign", "--variant=minbase", f"--include={','.join(packages)}", SUITE,
                    str(tmp)], check=True, stdout=subprocess.DEVNULL)
    for name in ("proc", "sys", "dev"):  # before unpacking anything: never write through host links
        real_dir(tmp / name)
    for deb in sorted((tmp / "var/cache/apt/archives").glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
    for name, (major, minor) in DEVICES.items():  # what Python and pytest open; no /dev mount needed
        if not (tmp / "dev" / name).exists():
            subprocess.run(["mknod", "-m", "666", str(tmp / "dev" / name), "c", str(major), str(minor)],
                           check=True)
    for name, line in (("passwd", "root:x:0:0:root:/root:/bin/sh"), ("group", "root:x:0:")):  # base-passwd's
        if not (tmp / "etc" / name).exists():  # postinst, which never ran, writes these
            (tmp / "etc" / name).write_text(line + "\n")
    shutil.rmtree(tmp / "var/cache/apt/archives")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    stamp(root, spec)
    return root


def free_threaded_python(version: str) -> Path:
    """CPython <version>t built from Debian's source with --disable-gil into the cache (once)."""
    path, sha256, size = FREE_THREADED_SOURCE
    release = Path(path).name.split("_")[1].removesuffix(".orig.tar.xz")
    if not release.startswith(version + "."):
        raise PipelineError(f"free-threaded CPython {version}: only {release}'s source is pinned (ci/lanes/newest.py)")
    prefix = cache() / f"cpython-{release}t"
    python = prefix / "bin" / f"python{version}t"
    if stamped(prefix, sha256) and python.exists():
        return python
    tarball = debs.fetch(f"{debs.mirror()}/{path}", cache() / "src" / Path(path).name, sha256, size)
    log(f"building free-threaded CPython {release} (--disable-gil) from Debian's source; minutes, once ...")
    shutil.rmtree(prefix, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="torch-segment-ops-cpython-") as tmp:
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
        (source,) = Path(tmp).iterdir()
        jobs = str(os.cpu_count() or 2)
        for step in (["./configure", "--disable-gil", f"--prefix={prefix}", "--without-ensurepip"],
                     ["make", f"-j{jobs}"], ["make", "install"]):
            proc = subprocess.run(step, cwd=source, capture_output=True, text=True)
            if proc.returncode != 0:
                shutil.rmtree(prefix, ignore_errors=True)
                raise PipelineError(f"building CPython {release}t: {' '.join(step)} failed:\n{proc.stdout[-3000:]}"
                                    f"{proc.stderr[-3000:]}")
    stamp(prefix, sha256)
    return python


def uv_install(target: Path, python_args: list[str], requirements: list[str], spec: str | None = None) -> Path:
    """requirements installed by uv into the folder target for the given interpreter (cached by spec,
    hard-linked from the uv cache the other envs share)."""
    if spec is not None and stamped(target, spec):
        return target
    shutil.rmtree(target, ignore_errors=True)
    environ = dict(envs.pip_environ(), UV_CACHE_DIR=str(envs.cache_dir() / "uv"))
    subprocess.run([envs.uv(), "pip", "install", "--quiet", "--target", str(target), *python_args, *requirements],
                   check=True, env=environ)
    if spec is not None:
        stamp(target, spec)
    return target


def interpreter(cell: Cell) -> tuple[list[str], str]:
    """(uv's arguments that name the cell's interpreter, the interpreter's path as the cell runs it)."""
    if cell.free_threaded:
        python = str(free_threaded_python(cell.version))
        return ["--python", python], python
    return ["--python-platform", sid_platform(), "--python-version", cell.version], f"/usr/bin/python{cell.version}"


@functools.cache
def sid_platform() -> str:
    """What uv installs for in the rootfs: x86_64-manylinux_<its glibc>, at most the newest uv names (2.40)."""
    proc = subprocess.run(["chroot", str(rootfs()), "/usr/bin/env", "-i", "/bin/sh", "-c", "getconf GNU_LIBC_VERSION"],
                          capture_output=True, text=True, check=True)
    major, minor = min(tuple(int(p) for p in proc.stdout.split()[1].split(".")[:2]), UV_NEWEST_GLIBC)
    return f"x86_64-manylinux_{major}_{minor}"


def folders(cell: Cell) -> Path:
    """Where the cell's folders go: inside the rootfs for a sid cell (the chroot sees them at /opt)."""
    return cache() / "free-threaded" if cell.free_threaded else rootfs() / "opt"


def op_tests_tree(dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    smoke.op_tests_tree(dest)
    shutil.copy(smoke.CHECK, dest / "smoke_check.py")


@contextlib.contextmanager
def cell_setup(cell: Cell, wheel: Path) -> Iterator[Callable[..., list[str]]]:
    """Yields argv(*args): the command running the cell's CPython with args from a copy of the op
    tests, in a clean environment that sees only torch, the test tools and the wheel."""
    uv_args, python = interpreter(cell)
    base = folders(cell)
    name = f"py{cell.python}-torch{cell.pin}"
    tests = "tests-free-threaded.txt" if cell.python == "3.13t" else "tests.txt"
    reqs = [f"torch=={cell.pin}", *requirement_lines(REQUIREMENTS / tests)]
    torch_dir = uv_install(base / name, uv_args, reqs, spec=" ".join(reqs))
    work = base / f"run-{name}"
    wheel_dir = uv_install(work / "wheel", [*uv_args, "--no-deps"], [str(wheel)])
    op_tests_tree(work / "tree")
    inside = (lambda p: p) if cell.free_threaded else (lambda p: Path("/") / p.relative_to(rootfs()))
    env = ["/usr/bin/env", "-i", "-C", str(inside(work / "tree")), "PATH=/usr/bin:/bin", "HOME=/tmp",
           "LANG=C.UTF-8", f"PYTHONPATH={inside(wheel_dir)}:{inside(torch_dir)}"]
    try:
        if cell.free_threaded:
            yield lambda *args: [*env, python, *args]
        else:
            with proc_for_cells():
                yield lambda *args: ["chroot", str(rootfs()), *env, python, *args]
    finally:
        shutil.rmtree(work, ignore_errors=True)


_proc = {"users": 0, "mount": contextlib.ExitStack()}
_proc_lock = threading.Lock()


@contextlib.contextmanager
def proc_for_cells() -> Iterator[None]:
    """proc mounted in the rootfs while any sid cell runs (cells run two at a time: one mount, not two)."""
    with _proc_lock:
        if _proc["users"] == 0:
            _proc["mount"].enter_context(mounted_proc(rootfs()))
        _proc["users"] += 1
    try:
        yield
    finally:
        with _proc_lock:
            _proc["users"] -= 1
            if _proc["users"] == 0:
                _proc["mount"].close()


def run_cell(cell: Cell, wheel: Path) -> tuple[bool, str]:
    """The smoke check (on a free-threaded CPython: the GIL stays disabled, every op from 8 threads),
    then tests/ops."""
    log(f"{cell.label} ...")
    with cell_setup(cell, wheel) as argv:
        smoke = subprocess.run(argv("smoke_check.py"), capture_output=True, text=True)
        if smoke.returncode != 0 or "SMOKE OK" not in smoke.stdout:
            return False, f"smoke check failed:\n{smoke.stdout[-3000:]}{smoke.stderr[-3000:]}"
        pytest = ["-q", "-p", "no:cacheprovider", "-rfE", "--disable-warnings", "--show-capture=no", "--tb=short",
                  "tests/ops"]
        tests = subprocess.run(argv("-X", "gil=0", "-c", GIL_KEPT_OFF, *pytest) if cell.free_threaded else
                               argv("-m", "pytest", *pytest), capture_output=True, text=True)
    lines = tests.stdout.strip().splitlines()
    summary = next((line.strip("= ") for line in reversed(lines) if re.search(r"\d+ (passed|failed)", line)), "")
    summary += next((f" ({line})" for line in lines if line.startswith("GIL enabled after")), "")
    threads = next((line for line in smoke.stdout.splitlines() if line.startswith("threads")), "")
    output = (f"{smoke.stdout.splitlines()[0]} | {threads} | op tests: {summary}\n{smoke.stdout}\n"
              f"{tests.stdout[-3000:]}{tests.stderr[-2000:]}")
    return tests.returncode == 0, output
