"""Cached virtual environments, created once per (python, torch) and reused.

torch is large (0.9 GB CPU, 5.4 GB CUDA), so it is installed once into a
*base* env per (python, torch). Every other env is a thin *overlay*: a fresh
venv whose site-packages gets a .pth line pointing at the base's
site-packages, so torch is importable without copying it, while packages
installed into the overlay (build tools, test tools, a wheel under test) stay
out of the base. An env is rebuilt when its spec (requirements) changes.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import PipelineError

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "ci" / "requirements"  # what each environment installs (*.txt by hand, *.lock by `ci lock`)


def cache_dir() -> Path:
    return Path(os.environ.get("TORCH_SEGMENT_OPS_CACHE", Path.home() / ".cache" / "torch-segment-ops"))


@dataclass(frozen=True)
class Env:
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def site_packages(self) -> Path:
        out = subprocess.run(
            [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        )
        return Path(out.stdout.strip())

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name

    def pip(self, *args: str, quiet: bool = True) -> None:
        cmd = [str(self.python), "-m", "pip", *(["-q"] if quiet else []), *args]
        subprocess.run(cmd, check=True, env=pip_environ())


def pip_environ() -> dict[str, str]:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    return env


def find_python(version: str) -> str:
    """The interpreter for e.g. "3.11": python3.11 on PATH (not a pyenv shim, which only works for
    the selected version), else pyenv's."""
    found = shutil.which(f"python{version}")
    if found and "shims" not in Path(found).parts:
        return found
    candidates = sorted((Path.home() / ".pyenv" / "versions").glob(f"{version}.*/bin/python{version}"))
    if candidates:
        return str(candidates[-1])
    if sys.version.startswith(version + "."):
        return sys.executable
    raise PipelineError(f"CPython {version} not found (looked for python{version} on PATH and in pyenv)")


def _spec_hash(spec: str) -> str:
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def _create(path: Path, python: str, spec: str, fill, venv_args: tuple[str, ...] | list[str] = ()) -> Env:
    """Create the venv at path unless one with the same spec is ready there."""
    stamp = path / ".torch-segment-ops-spec"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.with_name(path.name + ".lock").open("w") as lock:  # two test runs side by side may want it
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == spec:
            return compiled(Env(path))
        log(f"creating env {path.name} ...")
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([python, "-m", "venv", *venv_args, str(path)], check=True)
        env = Env(path)
        fill(env)
        stamp.write_text(spec)
        return compiled(env)


def compiled(env: Env) -> Env:
    """env with a .pyc beside every module it holds, written once. uv installs none, and with
    PYTHONDONTWRITEBYTECODE set (CI's machine sets it) every process would compile torch's Python
    source again: seconds per `import torch`, ~20 s per torch.compile test under torch 2.10."""
    marker = env.path / ".torch-segment-ops-bytecode"
    if not marker.exists():  # not check=True: some packages ship templates that are not valid Python
        subprocess.run([str(env.python), "-m", "compileall", "-q", "-j0", "--invalidation-mode", "timestamp",
                        str(env.site_packages)], stdout=subprocess.DEVNULL, check=False)
        marker.touch()
    return env


def base_env(python_version: str, torch_version: str, registry: bool = False) -> Env:
    """python + torch (+ numpy, which torch warns about when missing). registry: torch comes from
    the package registry by uv (which ignores this machine's pip configuration and its cap on torch
    versions; its cache hard-links the shared CUDA wheels), for torch builds not on local disk."""
    reqs = [f"torch=={torch_version}", "numpy==2.4.6"]
    if registry:
        reqs[1:] = ['numpy==2.4.6; python_version >= "3.11"', 'numpy==2.2.6; python_version < "3.11"']
        path = cache_dir() / "envs" / f"py{python_version}-torch{torch_version}-registry"

        def fill(env: Env) -> None:
            environ = dict(pip_environ(), UV_CACHE_DIR=str(cache_dir() / "uv"))
            log(f"installing torch {torch_version} for CPython {python_version} from the registry (GBs, cached) ...")
            subprocess.run([uv(), "pip", "install", "-q", "--python", str(env.python), *reqs], check=True, env=environ)

        return _create(path, find_python(python_version), "\n".join(reqs + ["registry"]), fill)
    spec = "\n".join(reqs + torch_index_args())
    path = cache_dir() / "envs" / f"py{python_version}-torch{torch_version}"
    return _create(path, find_python(python_version), spec, lambda env: env.pip("install", *reqs, *torch_index_args()))


@functools.cache
def nvidia_tool(name: str) -> str | None:
    """An NVIDIA command-line tool (cuobjdump, compute-sanitizer): on PATH, else in an installed
    nvidia-* package (nvidia-cuda-cuobjdump, nvidia-cuda-sanitizer-api)."""
    found = shutil.which(name)
    if found:
        return found
    try:
        import nvidia
    except ImportError:
        return None
    return next((str(p) for base in nvidia.__path__ for p in sorted(Path(base).glob(f"**/{name}")) if p.is_file()),
                None)


def uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(found).exists():
        raise PipelineError("uv not found (it is in ci/requirements/pipeline.txt)")
    return found


def tools_env(python_version: str, name: str, requirements: list[Path]) -> Env:
    """A venv holding only requirements, no torch: what a workflow job that installs them has."""
    spec = "\n".join(requirements_text(r) for r in requirements)
    path = cache_dir() / "envs" / f"py{python_version}-{name}-{_spec_hash(spec)}"

    def fill(env: Env) -> None:
        for req in requirements:
            env.pip("install", *(["--require-hashes"] if req.suffix == ".lock" else []), "-r", str(req))

    return _create(path, find_python(python_version), spec, fill)


def overlay_env(base: Env, name: str, requirements: list[Path] | None = None, path: Path | None = None) -> Env:
    """A venv that sees base's packages (torch, pip) and adds its own.

    Created without pip or setuptools of its own: `python -m pip` runs the
    base's pip, which installs into this env.
    """
    reqs = [requirements_text(r) for r in requirements or []]
    spec = f"base={base.path}\n" + "\n".join(reqs)
    path = path or cache_dir() / "envs" / f"{base.path.name}-{name}-{_spec_hash(spec)}"

    def fill(env: Env) -> None:
        (env.site_packages / "_torch_segment_ops_base.pth").write_text(f"{base.site_packages}\n")
        for req in requirements or []:
            env.pip("install", "-r", str(req))

    return _create(path, str(base.python), spec, fill, venv_args=["--without-pip"])


def requirements_text(path: Path) -> str:
    """A requirements file with its `-r` includes inlined (the env's spec must change with them)."""
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("-r "):
            lines.append(requirements_text(path.parent / line[3:].strip()))
        else:
            lines.append(line)
    return "\n".join(lines)


def dev_env(python_version: str | None = None, torch_version: str | None = None) -> Env:
    """The tools env: build deps, test tools and pipeline tools over a torch base (default:
    ci/declaration/matrix.toml's [local] python and first torch)."""
    from ..declaration import matrix  # here, not at the top: this module imports on CPython 3.10 without tomllib

    local = matrix.declaration().local
    python_version = python_version or local.python
    torch_version = torch_version or matrix.torch(local.torch[0]).pin
    return overlay_env(base_env(python_version, torch_version), "dev", [REQUIREMENTS / "dev.txt"])


def log(message: str) -> None:
    print(f"[ci] {message}", file=sys.stderr, flush=True)


def torch_index_args() -> list[str]:
    """pip arguments for where torch comes from: TORCH_SEGMENT_OPS_TORCH_INDEX if set
    (e.g. PyTorch's CPU index on x86_64 CI runners), else pip's configuration."""
    index = os.environ.get("TORCH_SEGMENT_OPS_TORCH_INDEX", "")
    return ["--index-url", index] if index else []


def install_torch_here() -> None:
    """Install the torch pinned in TORCH_SEGMENT_OPS_TORCH_PIN into the running
    interpreter (cibuildwheel's before-build/before-test, the verify cells)."""
    pin = os.environ.get("TORCH_SEGMENT_OPS_TORCH_PIN")
    if not pin:
        raise PipelineError("install-torch: set TORCH_SEGMENT_OPS_TORCH_PIN (e.g. 2.13.0)")
    pre = []
    if pin.endswith(".*"):  # torch's next release (scope `next`): nightly or test builds are pre-releases
        if not torch_index_args():
            raise PipelineError(f"install-torch: torch {pin} (its next release) comes from PyTorch's nightly or test "
                                "index, and none is set: give its URL in the repository variable TORCH_NEXT_INDEX")
        pre = ["--pre"]
    log(f"installing torch=={pin} {' '.join([*pre, *torch_index_args()])}")
    subprocess.run([sys.executable, "-m", "pip", "install", *pre, f"torch=={pin}", *torch_index_args()], check=True)
