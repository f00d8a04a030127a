"""`bench`'s peer: torch-scatter (segment_csr / gather_csr), which the registry has only as an sdist.
It is built once against the dev env's torch, without isolation (its setup.py imports torch), the
wheel cached per torch version, and installed into the dev env before the benchmark runs. A build
that fails is not an error: the benchmark's report then says why the column is absent."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from ..util import envs
from ..util.envs import REQUIREMENTS, cache_dir, log

SKIPPED = "TORCH_SCATTER_SKIPPED"  # tells benchmarks/bench_ops.py why torch-scatter is not installed


def pinned() -> str:
    (line,) = [ln for ln in (REQUIREMENTS / "bench.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    return line


def torch_version(env: envs.Env) -> str:
    return subprocess.run([str(env.python), "-c", "import torch; print(torch.__version__)"], capture_output=True,
                          text=True, check=True).stdout.strip()


def install_peer(env: envs.Env) -> str | None:
    """Install the pinned torch-scatter into env (building its wheel once); None, or why not."""
    folder = cache_dir() / "wheels" / f"{pinned().replace('==', '-')}-torch{torch_version(env)}"
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        log(f"building {pinned()} against torch {torch_version(env)} (once; a few minutes) ...")
        with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
            proc = subprocess.run([str(env.python), "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                                   "--no-binary", "torch-scatter", "-w", tmp, pinned()],
                                  capture_output=True, text=True, env=envs.pip_environ())
            if proc.returncode != 0:
                return f"building {pinned()} from its sdist failed: {proc.stderr.strip().splitlines()[-1:]}"
            folder.mkdir(parents=True, exist_ok=True)
            for wheel in Path(tmp).glob("*.whl"):
                wheel.rename(folder / wheel.name)
        wheels = sorted(folder.glob("*.whl"))
    env.pip("install", "-q", "--no-deps", str(wheels[-1]))
    return None
