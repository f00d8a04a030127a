"""Release helpers: `check-tag` (the tag equals the package version), `gpu-runner` (the GPU gate's
runner, or the release stops) and `collect` (gather the final wheels and the sdist from the
workflow's artifacts, optionally with SHA256SUMS and release notes)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from ..declaration import matrix, names
from ..errors import NothingToDo, PipelineError
from ..util.envs import ROOT


def package_version() -> str:
    return re.search(r'__version__ = "(.+)"', (ROOT / "torch_segment_ops" / "_version.py").read_text())[1]


REPLAY_GPU_RUNNER = "REPLAY_GPU_RUNNER"  # set by the workflow replay only: its stand-in runner label


def gpu_cells() -> list[dict[str, str]]:
    """One GPU check per CUDA build of the linux x86_64 wheel: with the newest declared torch whose
    default (PyPI) build uses that CUDA major, so each build's kernels run under a torch that loads it."""
    cells = []
    for major in matrix.platform("linux-x86_64").cuda:
        users = [t for t in matrix.torches() if t.cuda.split(".")[0] == major]
        if not users:
            raise PipelineError(f"release: no declared torch uses CUDA {major} ({matrix.SOURCE}: torch.*.cuda), so "
                                f"the cu{major} build cannot be checked on a GPU")
        cells.append({"cuda": major, "torch": users[-1].pin})
    return cells


def gpu_runner() -> dict[str, str]:
    """The GPU gate's job outputs: `label`, the declared GPU runner, `cells`, the GPU check's matrix
    (a torch per CUDA build, gpu_cells()), and `artifact`, the final linux x86_64 wheel's artifact;
    with no runner declared, the release stops here."""
    label = os.environ.get(REPLAY_GPU_RUNNER) or matrix.declaration().release.gpu_runner
    if not label:
        raise PipelineError(f"release: no GPU runner is declared ({matrix.SOURCE}: release.gpu_runner). The Linux "
                            "wheels' CUDA kernels must pass `python -m ci gpu-check` on a GPU before anything is "
                            "published: set release.gpu_runner to the label of a GitHub runner with an NVIDIA GPU. "
                            "Nothing was published.")
    wheel_platform = matrix.platform("linux-x86_64").wheel_platform
    return {"label": label, "cells": json.dumps({"include": gpu_cells()}, separators=(",", ":")),
            "artifact": names.artifact(wheel_platform)}


def check_tag(tag: str, on_branch: str | None = None, repo: Path = ROOT) -> None:
    """The tag names the package version, and (with on_branch) the checked-out commit is on that branch."""
    expected = f"v{package_version()}"
    if tag != expected:
        raise PipelineError(f"tag {tag!r} does not match the package version: expected {expected!r} "
                         "(bump torch_segment_ops/_version.py, commit, then tag)")
    if on_branch:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
        found = subprocess.run(["git", "merge-base", "--is-ancestor", "HEAD", on_branch], cwd=repo,
                               capture_output=True, text=True)
        if found.returncode != 0:
            raise PipelineError(f"tag {tag!r} points at {head[:12] or 'a commit'} which is not on {on_branch}: "
                             "releases come only from the default branch")


def collect(artifacts: Path, out: Path, sums: bool = False) -> list[Path]:
    """Final wheels (no local +ptAB label: those are per-torch intermediates) and sdists."""
    files = [p for p in sorted(artifacts.rglob("*.whl")) if not names.is_per_torch_intermediate(p.name)]
    files += sorted(artifacts.rglob("*.tar.gz"))
    if not any(p.suffix == ".whl" for p in files):
        raise NothingToDo(f"collect: no final wheels under {artifacts}")
    out.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in files:
        target = out / path.name
        if target.exists():
            raise PipelineError(f"collect: two artifacts named {path.name}")
        shutil.copy2(path, target)
        copied.append(target)
    if sums:
        lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in copied]
        (out / "SHA256SUMS").write_text("\n".join(lines) + "\n")
        (out / "NOTES.md").write_text(
            f"torch-segment-ops {package_version()}\n\nInstall: `pip install torch-segment-ops=={package_version()}`.\n"
            "Verify a download: `sha256sum -c SHA256SUMS --ignore-missing`.\n"
        )
    return copied
