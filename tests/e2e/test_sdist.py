"""The sdist: what users fall back to when no wheel fits their platform.
Built exactly as the workflow's sdist job builds it."""

import email.parser
import subprocess
import tarfile

import pytest

from ci.declaration import matrix
from ci.publish import guard
from ci.stages import build, smoke
from ci.util import envs
from tests.old_names import old_names

pytestmark = pytest.mark.slow
WORKFLOW_PYTHON = "3.12"  # the sdist job's setup-python (checked against wheels.yml below)


@pytest.fixture(scope="module")
def job_env():
    """A clean env holding only what the sdist job installs: no torch."""
    return envs.tools_env(WORKFLOW_PYTHON, "sdist-job", [build.REQUIREMENTS / "pipeline.lock"])


@pytest.fixture(scope="module")
def sdist(job_env, tmp_path_factory):
    out = tmp_path_factory.mktemp("sdist")
    environ = dict(envs.pip_environ(), TORCH_SEGMENT_OPS_USE_CURRENT_ENV="1", SOURCE_DATE_EPOCH="1700000000")
    proc = subprocess.run([str(job_env.python), "-m", "ci", "sdist", "--out", str(out)], cwd=build.ROOT,
                          env=environ, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (made,) = out.glob("*.tar.gz")
    return made


def test_the_sdist_job_has_no_torch(job_env):
    proc = subprocess.run([str(job_env.python), "-c", "import torch"], capture_output=True, text=True)
    assert "No module named 'torch'" in proc.stderr


def test_the_workflow_builds_the_sdist_as_this_test_does():
    job = build.ROOT.joinpath(".github", "workflows", "wheels.yml").read_text().split("\n  sdist:\n")[1]
    job = job.split("\n\n")[0]
    assert f'python-version: "{WORKFLOW_PYTHON}"' in job
    assert "pip install --require-hashes -r ci/requirements/pipeline.lock" in job
    assert "python -m ci sdist --out sdist" in job


def test_sdist_metadata_is_not_tied_to_a_torch(sdist):
    with tarfile.open(sdist) as tar:
        (pkg_info,) = [m for m in tar.getmembers() if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO")]
        headers = email.parser.HeaderParser().parsestr(tar.extractfile(pkg_info).read().decode())
    assert headers["Name"] == "torch-segment-ops" and headers["Version"] == "0.1.0"
    assert headers.get_all("Requires-Dist") is None
    assert f"Source, {guard.project()[1]}" in headers.get_all("Project-URL")


def test_no_old_name_in_the_sdist(sdist):
    assert old_names(sdist) == []


def test_sdist_contains_everything_the_build_needs(sdist):
    assert sdist.name == "torch_segment_ops-0.1.0.tar.gz"
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in ["setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "csrc/segment.h",
                   "csrc/segment_reduce.cpp", "csrc/gather_csr.cpp", "csrc/segment_softmax.cpp",
                   # setup.py reads the floor (TORCH_TARGET_VERSION, torch>=floor) and the CUDA builds there,
                   # through the one reader of the declaration
                   "ci/declaration/matrix.toml", "ci/__init__.py", "ci/errors.py", "ci/declaration/__init__.py",
                   "ci/declaration/matrix.py", "ci/declaration/names.py",
                   "torch_segment_ops/__init__.py", "torch_segment_ops/_loader.py", "torch_segment_ops/ops.py"]:
        assert needed in names, needed


def test_installs_from_source_against_the_installed_torch(sdist, tmp_path):
    """Without build isolation it builds against the torch that is installed (2.13 here)."""
    pin = matrix.torch("2.13").pin
    base = envs.base_env(matrix.declaration().local.python, pin)
    env = envs.overlay_env(base, "sdist", [build.REQUIREMENTS / "build.txt"], path=tmp_path / "env")
    env.pip("install", "--no-build-isolation", "--no-deps", str(sdist))
    result = smoke.run_check(env)
    assert result.ok, result.output
    assert "torch_segment_ops 0.1.0, build stable" in result.output


def test_build_isolation_fails_clearly_instead_of_using_another_torch(sdist, tmp_path):
    """Under isolation torch is absent from the build env: a clear error, never a build against some other torch."""
    base = envs.base_env(matrix.declaration().local.python, matrix.torch("2.13").pin)
    env = envs.overlay_env(base, "isolated", path=tmp_path / "env")
    proc = subprocess.run([str(env.python), "-m", "pip", "install", "--no-deps", str(sdist)],
                          capture_output=True, text=True, env=envs.pip_environ())
    assert proc.returncode != 0
    assert "torch>=2.10 must already be installed" in proc.stdout + proc.stderr
    assert "--no-build-isolation" in proc.stdout + proc.stderr
