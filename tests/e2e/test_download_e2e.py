"""The download side end to end: the real wheel from the pipeline, served by our index, installed by pip."""

import shutil
import subprocess

import pytest

from ci.declaration import matrix
from ci.publish import index
from ci.util import envs
from tests.loopback import Loopback


@pytest.mark.slow
def test_pip_install_from_the_index_runs_here(wheelhouse, tmp_path):
    """The real merged wheel from the pipeline, served by our index, installed by pip over torch 2.13."""
    (merged,) = wheelhouse.glob("*.whl")
    dist = tmp_path / "dist"
    dist.mkdir()
    shutil.copy(merged, dist)
    index.build_index(dist, tmp_path / "site")
    server = Loopback(tmp_path / "site")
    try:
        base = envs.base_env(matrix.declaration().local.python, matrix.torch("2.13").pin)
        env = envs.overlay_env(base, "index", path=tmp_path / "env")
        env.pip("install", "torch-segment-ops", "--index-url", server.url + "/simple", "--isolated")
        proc = subprocess.run([str(env.python), "-c", "import torch, torch_segment_ops as ts; "
                               "print(ts.segment_reduce(torch.ones(4, 2), torch.tensor([0, 1, 4])).tolist())"],
                              capture_output=True, text=True, cwd=tmp_path)
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[[1.0, 1.0], [3.0, 3.0]]"
