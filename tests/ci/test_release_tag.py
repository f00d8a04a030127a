"""check-tag: the tag names the package version and its commit is on the default branch; gpu-runner:
the release's GPU gate stops a release when no GPU runner is declared."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ci.errors import PipelineError
from ci.publish import release

VERSION = release.package_version()
ROOT = Path(__file__).resolve().parents[2]


def git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    """main with two commits, and a side branch with one more; a clone of it, as actions/checkout makes."""
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    for n in (1, 2):
        git(origin, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", f"c{n}")
    git(origin, "checkout", "-q", "-b", "side")
    git(origin, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "side")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    return clone


def test_a_tag_on_the_default_branch_passes(repo):
    git(repo, "checkout", "-q", "origin/main")
    release.check_tag(f"v{VERSION}", "origin/main", repo)
    git(repo, "checkout", "-q", "origin/main~1")  # an older commit of main is on it too
    release.check_tag(f"v{VERSION}", "origin/main", repo)


def test_a_tag_off_the_default_branch_is_refused(repo):
    git(repo, "checkout", "-q", "origin/side")
    with pytest.raises(PipelineError, match="is not on origin/main: releases come only from the default branch"):
        release.check_tag(f"v{VERSION}", "origin/main", repo)


def test_a_tag_that_is_not_the_version_is_refused(repo):
    with pytest.raises(PipelineError, match="does not match the package version"):
        release.check_tag("v9.9.9", "origin/main", repo)


def test_with_no_gpu_runner_declared_the_release_stops_naming_the_key(monkeypatch):
    from ci.declaration import matrix
    from ci.publish.release import REPLAY_GPU_RUNNER, gpu_runner

    monkeypatch.delenv(REPLAY_GPU_RUNNER, raising=False)
    assert matrix.declaration().release.gpu_runner == ""  # none yet: see ci/declaration/matrix.toml [release]
    with pytest.raises(PipelineError, match=r"no GPU runner is declared "
                                            r"\(ci/declaration/matrix.toml: release.gpu_runner\).* "
                                            "Nothing was published"):
        gpu_runner()
    proc = subprocess.run([sys.executable, "-m", "ci", "gpu-runner"], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1 and proc.stderr.startswith("release: no GPU runner is declared")
    declared = dataclasses.replace(matrix.declaration(), release=matrix.Release(gpu_runner="gpu-h100"))
    monkeypatch.setattr(matrix, "declaration", lambda: declared)
    outputs = gpu_runner()
    assert outputs["label"] == "gpu-h100" and outputs["artifact"] == "wheels-manylinux_2_28_x86_64"
    # a cell per CUDA build, each with the newest torch whose PyPI build loads it: every build's kernels run
    assert json.loads(outputs["cells"]) == {"include": [{"cuda": "12", "torch": matrix.torch("2.10").pin},
                                                        {"cuda": "13", "torch": matrix.torches()[-1].pin}]}
