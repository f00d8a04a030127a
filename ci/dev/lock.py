"""`lock`: the hash-pinned lock files the release jobs install with --require-hashes.

Each ci/requirements/<name>.txt (what we pin by hand) is resolved by uv into
ci/requirements/<name>.lock with every dependency pinned and every file's
SHA-256, for every platform the jobs run on (--universal). --exclude-newer
makes the resolution reproducible, so a test can regenerate the locks and
require them to be identical; move the date to take newer releases.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from ..errors import PipelineError
from ..util import envs
from ..util.envs import REQUIREMENTS, ROOT

EXCLUDE_NEWER = "2026-11-26T00:00:00Z"
# lock name -> the oldest CPython that installs it (pipeline: cibuildwheel needs 3.11; the build
# requirements go into cibuildwheel's build environments, down to CPython 3.10)
# cuda13: the CUDA toolkit the Linux builds compile with (installed into cibuildwheel's build env)
LOCKS = {"pipeline": "3.11", "release": "3.10", "build": "3.10", "cuda13": "3.10"}


def compile_lock(name: str, out: Path) -> None:
    # --upgrade: without it uv keeps the pins of an existing output file, so `lock` would not move
    # to a release that a fresh resolution (stale()) takes
    cmd = [envs.uv(), "pip", "compile", "-q", "--upgrade", "--generate-hashes", "--universal",
           "--python-version", LOCKS[name],
           "--exclude-newer", EXCLUDE_NEWER, "--custom-compile-command", "python -m ci lock",
           f"ci/requirements/{name}.txt", "-o", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise PipelineError(f"lock: uv pip compile of {name}.txt failed:\n{proc.stderr}")


def path(name: str) -> Path:
    return REQUIREMENTS / f"{name}.lock"


def write() -> list[Path]:
    for name in LOCKS:
        compile_lock(name, path(name))
    return [path(name) for name in LOCKS]


def stale() -> list[str]:
    """The locks that differ from a fresh resolution of their requirements."""
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in LOCKS:
            fresh = Path(tmp) / f"{name}.lock"
            compile_lock(name, fresh)
            if fresh.read_text() != path(name).read_text():
                found.append(path(name).name)
    return found
