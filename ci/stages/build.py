"""`build`: the wheel built against one torch minor on this machine (stable mode: the one
py3-none build; per-torch mode: the abi3 build for that minor).

The build is non-isolated, in a cached env holding exactly the pinned torch
(plus setuptools/wheel/ninja), and from a fresh copy of the source tree so no
object file compiled against another torch can be reused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..declaration import matrix
from ..errors import PipelineError
from ..util import envs
from ..util.envs import REQUIREMENTS, ROOT, log
from . import cuda

# Never copied into a build: outputs and caches that could leak into it.
IGNORED = shutil.ignore_patterns(
    ".git", "build", "dist", "wheelhouse", "*.egg-info", "__pycache__", ".venv*", "_builds",
    ".pytest_cache", ".hypothesis", ".ruff_cache", "*.so", "*.whl",
)


def torch_base(python: str, torch_pin: str) -> envs.Env:
    """The cached env holding torch_pin for python (from local disk, or the registry when not there)."""
    return envs.base_env(python, torch_pin, matrix.from_registry(python, torch_pin))


def build_env(python: str, torch_pin: str) -> envs.Env:
    return envs.overlay_env(torch_base(python, torch_pin), "build", [REQUIREMENTS / "build.txt"])


def source_date_epoch() -> str:
    """SOURCE_DATE_EPOCH from the environment, else the last commit's time."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        return os.environ["SOURCE_DATE_EPOCH"]
    out = subprocess.run(["git", "log", "-1", "--format=%ct"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "315532800"  # 1980-01-01, the earliest zip date


def compiler_cache() -> dict[str, str]:
    """ccache (when installed here) before each nvcc command of a build on this machine, its objects
    under the cache folder (ccache_environ)."""
    ccache = shutil.which("ccache")
    return ccache_environ(ccache, str(envs.cache_dir() / "ccache")) if ccache else {}


def ccache_environ(ccache: str, directory: str) -> dict[str, str]:
    """The environment that puts ccache before each nvcc command (setup.py's launcher variable): a
    rebuild of unchanged CUDA sources reuses the objects of an earlier build (same sources, flags and
    compiler: same bytes; the reproducible-build test compiles with CCACHE_DISABLE=1 and compares).
    nvcc's command line names no path of the fresh source tree (setup.py compiles content-addressed
    staged sources into a relative path), so its key is the same in every tree. Not g++ (seconds
    here): its commands name the tree, and ccache's base_dir rewrite would change __FILE__.
    NOHASHDIR: nothing nvcc writes depends on the working directory. COMPILERCHECK=content: the
    cibuildwheel container installs the toolkit afresh each run (new mtimes, same nvcc)."""
    return {"TORCH_SEGMENT_OPS_NVCC_LAUNCHER": ccache, "CCACHE_DIR": directory, "CCACHE_NOHASHDIR": "1",
            "CCACHE_COMPILERCHECK": "content"}


def build(torch_minor: str, out_dir: Path, python: str | None = None, source: Path = ROOT,
          cuda_majors: tuple[str, ...] | None = None) -> Path:
    """Build the wheel for torch_minor into out_dir and return its path; with the CUDA builds this
    platform declares (default), or those of cuda_majors."""
    t = matrix.torch(torch_minor)
    python = python or matrix.declaration().local.python
    env = build_env(python, t.pin)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="torch-segment-ops-build-") as tmp:
        tree = Path(tmp) / "src"
        shutil.copytree(source, tree, ignore=IGNORED)
        log(f"building the wheel for torch {t.pin} (CPython {python}) ...")
        environ = dict(envs.pip_environ(), SOURCE_DATE_EPOCH=source_date_epoch(),
                       **cuda.build_environ(cuda.cache(), cuda_majors), **compiler_cache())
        fresh = Path(tmp) / "dist"  # then moved: a wheel of the same name already in out_dir is replaced
        subprocess.run(
            [str(env.python), "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", str(fresh),
             str(tree)],
            check=True, env=environ,
        )
        built = sorted(fresh.glob("*.whl"))
        if len(built) != 1:
            raise PipelineError(f"expected one wheel from the build, found {[p.name for p in built]}")
        built = [Path(shutil.move(built[0], out_dir / built[0].name))]
    return built[0]


def sdist(out_dir: Path, isolated: bool = True) -> Path:
    """The source distribution (needs no torch: setup.py only imports it to compile)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    before = set(out_dir.glob("*.tar.gz"))
    flags = [] if isolated else ["--no-isolation"]
    environ = dict(os.environ, SOURCE_DATE_EPOCH=source_date_epoch())
    subprocess.run([sys.executable, "-m", "build", "--sdist", *flags, "-o", str(out_dir), str(ROOT)], check=True,
                   env=environ)
    made = sorted(set(out_dir.glob("*.tar.gz")) - before) or sorted(out_dir.glob("*.tar.gz"))
    return made[-1]


def cibuildwheel(args: list[str]) -> int:
    """cibuildwheel with SOURCE_DATE_EPOCH set from the last commit (reproducible wheels). With
    $TORCH_SEGMENT_OPS_BUILD_SHARE (set by the test suite for one run), a run whose inputs equal
    those of one already made in that run copies its wheels instead of building them again."""
    environ = dict(os.environ, SOURCE_DATE_EPOCH=source_date_epoch())
    out = output_dir(args)
    kept = shared(ROOT, environ)
    if kept and out and kept.is_dir():
        names = [w.name for w in sorted(kept.glob("*.whl"))]
        (ROOT / out).mkdir(parents=True, exist_ok=True)
        for wheel in kept.glob("*.whl"):
            shutil.copy2(wheel, ROOT / out)
        log(f"{REUSED} {', '.join(names)}, built earlier in this run by cibuildwheel from identical "
            f"inputs (the source tree, {', '.join(SHARE_KEY)}; key {kept.name[:12]})")
        return 0
    returncode = subprocess.run([sys.executable, "-m", "cibuildwheel", *args], cwd=ROOT, env=environ).returncode
    if returncode == 0 and kept and out:
        keep(ROOT / out, kept)
    return returncode


# -- sharing identical cibuildwheel runs within one test run ----------------------

SHARE_VARIABLE = "TORCH_SEGMENT_OPS_BUILD_SHARE"
REUSED = "cibuildwheel: reused"  # what the log says when a run copied a shared wheel (the replay looks for it)
SHARE_KEY = ("every CIBW_* variable", "TORCH_SEGMENT_OPS_TORCH_PIN", "SOURCE_DATE_EPOCH")  # besides the tree


def output_dir(args: list[str]) -> Path | None:
    for flag, value in zip(args, args[1:]):
        if flag == "--output-dir":
            return Path(value)
    return None


def shared(tree: Path, environ: dict[str, str]) -> Path | None:
    """Where a cibuildwheel run of tree with environ keeps (or finds) its wheels, if sharing is on."""
    share = environ.get(SHARE_VARIABLE)
    if not share:
        return None
    from importlib import metadata

    digest = hashlib.sha256(f"cibuildwheel {metadata.version('cibuildwheel')}\n".encode())
    for name in sorted(n for n in environ if n.startswith("CIBW_")) + list(SHARE_KEY[1:]):
        digest.update(f"{name}={environ.get(name, '')}\n".encode())
    for path in source_files(tree):
        digest.update(f"{path.relative_to(tree)}\0".encode() + hashlib.sha256(path.read_bytes()).digest())
    return Path(share) / digest.hexdigest()


def source_files(tree: Path) -> list[Path]:
    """The files a build copies from tree (what copytree with IGNORED copies), sorted."""
    found = []
    for folder, dirs, files in os.walk(tree):
        ignored = IGNORED(folder, [*dirs, *files])
        dirs[:] = sorted(d for d in dirs if d not in ignored)
        found += [Path(folder) / f for f in files if f not in ignored]
    return sorted(found)


def keep(out: Path, kept: Path) -> None:
    """Copy the wheels of out into kept, whole or not at all."""
    tmp = kept.with_name(kept.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for wheel in out.glob("*.whl"):
        shutil.copy2(wheel, tmp)
    tmp.rename(kept)
