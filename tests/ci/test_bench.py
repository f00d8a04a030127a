"""The benchmark's peer, torch-scatter: built from its sdist once and cached; a build that fails is a
reason the report gives, not an error."""

import sys
from pathlib import Path

from ci.dev import bench
from ci.util import envs


def test_the_peer_is_pinned():
    assert bench.pinned() == "torch-scatter==2.1.2"


def test_a_peer_that_does_not_build_is_a_reason_not_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_SEGMENT_OPS_CACHE", str(tmp_path))
    monkeypatch.setattr(bench, "pinned", lambda: "torch-scatter==0.0.0.dev0")  # no such release
    why = bench.install_peer(envs.Env(Path(sys.prefix)))
    assert why.startswith("building torch-scatter==0.0.0.dev0 from its sdist failed")
    assert not list(tmp_path.glob("wheels/*/*.whl"))
