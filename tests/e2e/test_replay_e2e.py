"""The release workflow replayed here, end to end (the container lane builds its wheels)."""

import json

import pytest

from ci.declaration import matrix
from ci.lanes import container, replay
from ci.publish.release import package_version


@pytest.mark.slow
@pytest.mark.skipif(bool(container.missing()), reason=f"replay needs the container lane: {container.missing()}")
def test_the_release_workflow_replayed_ends_with_our_wheel_installed_from_the_index(tmp_path):
    text = replay.run("release.yml", tmp_path)
    log = {e["job"]: e for e in json.loads((tmp_path / "replay.json").read_text())}
    passed = {job for job, e in log.items() if e["status"] == "passed"}
    assert {"check tag", "matrix", "sdist", "build wheels-manylinux_2_28_x86_64",
            "verify linux-x86_64 py3.11 torch2.13", "GitHub release", "PyPI"} <= passed
    assert log["merge"]["status"] == "skipped" and "per-torch" in log["merge"]["note"]  # stable: no merge
    assert log["GPU runner"]["status"] == "passed"  # with the replay's stand-in label for release.gpu_runner
    for major in matrix.platform("linux-x86_64").cuda:  # a GPU check per CUDA build, skipped with the reason
        gpu = log[f"GPU check (CUDA {major})"]
        assert gpu["status"] == "skipped" and "no GPU on this machine" in gpu["note"]
    assert all(e["note"] for e in log.values() if e["status"] == "skipped")  # every skip says why
    assets = sorted(p.name for p in (tmp_path / "releases" / f"v{package_version()}").iterdir())
    assert assets == ["SHA256SUMS", f"torch_segment_ops-{package_version()}-py3-none-manylinux_2_34_x86_64.whl",
                      f"torch_segment_ops-{package_version()}.tar.gz"]
    assert text.rstrip().endswith("SMOKE OK")
