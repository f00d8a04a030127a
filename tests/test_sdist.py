"""The sdist: what users fall back to when no wheel fits their platform."""

import subprocess
import tarfile

import pytest

from ci import build, envs, matrix, smoke

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    return build.sdist(tmp_path_factory.mktemp("sdist"), isolated=False)


def test_sdist_contains_everything_the_build_needs(sdist):
    assert sdist.name == "torch_segment-0.1.0.tar.gz"
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in ["setup.py", "pyproject.toml", "MANIFEST.in", "README.md", "csrc/segment.h",
                   "csrc/segment_reduce.cpp", "csrc/gather_csr.cpp", "csrc/segment_softmax.cpp", "csrc/module.cpp",
                   "torch_segment/__init__.py", "torch_segment/_loader.py", "torch_segment/ops.py"]:
        assert needed in names, needed


def test_installs_from_source_against_the_installed_torch(sdist, tmp_path):
    """Without build isolation it builds against the torch that is installed (2.13 here)."""
    pin = matrix.torch("2.13").pin
    base = envs.base_env(matrix.load()["local"]["python"], pin)
    env = envs.overlay_env(base, "sdist", [build.ROOT / "ci" / "requirements-build.txt"], path=tmp_path / "env")
    env.pip("install", "--no-build-isolation", "--no-deps", str(sdist))
    result = smoke.run_check(env)
    assert result.ok, result.output
    assert "torch_segment 0.1.0, build torch_2_13" in result.output


def test_build_isolation_fails_clearly_instead_of_using_another_torch(sdist, tmp_path):
    """Under isolation torch is absent from the build env: a clear error, never a build against some other torch."""
    base = envs.base_env(matrix.load()["local"]["python"], matrix.torch("2.13").pin)
    env = envs.overlay_env(base, "isolated", path=tmp_path / "env")
    proc = subprocess.run([str(env.python), "-m", "pip", "install", "--no-deps", str(sdist)],
                          capture_output=True, text=True, env=envs.pip_environ())
    assert proc.returncode != 0
    assert "compiled against the torch it will run with" in proc.stdout + proc.stderr
    assert "--no-build-isolation" in proc.stdout + proc.stderr
