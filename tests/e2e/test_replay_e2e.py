"""The release workflow replayed here through act, end to end (the container lane builds its wheels).
Both replays run as early lanes (tests/conftest.py), after the container lane of this run: the release's
build cell reuses its wheel, and one docker daemon runs on our folder at a time."""

import json

import pytest

from ci.declaration import matrix
from ci.lanes import container, replay
from ci.publish.release import package_version


@pytest.mark.slow
@pytest.mark.skipif(bool(container.missing()), reason=f"replay needs the container lane: {container.missing()}")
def test_the_release_workflow_replayed_ends_with_our_wheel_installed_from_the_index(release_replay, shared_builds):
    out, text = release_replay
    log = json.loads((out / "replay.json").read_text())
    ran = {e["id"] for e in log if e["status"] == "passed"}
    assert {"check-tag", "matrix", "sdist", "build", "verify", "gpu-runner", "github-release", "pypi"} <= ran
    (merge,) = [e for e in log if e["id"] == "merge"]  # stable mode: act skips it, the summary says why
    assert merge["status"] == "skipped" and "per-torch" in merge["note"]
    verify = [e for e in log if e["id"] == "verify" and e["status"] == "passed"]
    assert len(verify) == 1  # linux x86_64, the lanes' CPython and torch; every other cell says why not
    gpu = [e for e in log if e["id"] == "gpu-check"]
    assert len(gpu) == len(matrix.platform("linux-x86_64").cuda)  # a GPU check per CUDA build
    if not replay.gpu_here():
        assert all(e["status"] == "skipped" and "no GPU on this machine" in e["note"] for e in gpu)
        assert all("after gpu-check" in e["note"] for e in log if e["id"] in ("github-release", "pypi"))
    assert all(e["note"] for e in log if e["status"] == "skipped")  # every skip says why
    assets = sorted(p.name for p in (out / "releases" / f"v{package_version()}").iterdir())
    assert assets == ["SHA256SUMS", f"torch_segment_ops-{package_version()}-py3-none-manylinux_2_34_x86_64.whl",
                      f"torch_segment_ops-{package_version()}.tar.gz"]
    assert sorted(json.loads((out / "attestations.json").read_text())) == ["NOTES.md", *assets]
    assert text.rstrip().endswith("SMOKE OK")
    assert any(shared_builds.iterdir())  # the container lane of this run kept its wheel
    assert any(e["note"] == replay.REUSED for e in log)


@pytest.mark.slow
@pytest.mark.skipif(bool(container.missing()), reason=f"replay needs the container lane: {container.missing()}")
def test_the_next_torch_workflow_replayed_builds_and_names_the_cells_it_cannot_reach(next_torch_replay):
    out, _ = next_torch_replay
    log = json.loads((out / "replay.json").read_text())
    assert "a run by hand (workflow_dispatch)" in log[0]["note"]
    ran = {e["id"] for e in log if e["status"] == "passed"}
    assert {"matrix", "build", "sdist"} <= ran and "verify" not in ran
    verify = [e for e in log if e["id"] == "verify"]
    assert len(verify) == len(matrix.verify_cells("next")) and all(
        e["status"] == "skipped" and "nightly or test index" in e["note"] for e in verify)
    assert not any((out / "index").iterdir())  # nothing is published
