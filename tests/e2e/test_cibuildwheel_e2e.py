"""The real cibuildwheel Linux build in a local container (stand-in image,
see ci/lanes/container.py): our [tool.cibuildwheel] unchanged, our verbs as its
hooks. Slow (~1.5 min warm, ~4 min cold); run by .ci/run as root."""

import subprocess
from pathlib import Path

import pytest

from ci.declaration import matrix
from ci.lanes import container

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(bool(container.missing()), reason=f"cibuildwheel lane: {container.missing()}")]
MINOR = matrix.build_torch().minor


def leftovers():
    """Daemons of ours still running, and mounts left below our docker folder."""
    daemons = subprocess.run(["pgrep", "-f", f"dockerd --data-root {container.cache()}"], capture_output=True,
                             text=True).stdout.split()
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
              if line.split()[1].startswith(str(container.cache()))]
    return daemons, mounts


def test_a_failing_build_says_why_and_leaves_nothing_behind(next_torch_replay, tmp_path, monkeypatch):
    """After the early lanes that run the container (one docker daemon on our folder at a time)."""
    monkeypatch.setenv("CIBW_BEFORE_BUILD", "echo before-build breaks on purpose && false")
    with pytest.raises(container.LaneError, match="cibuildwheel failed") as error:
        container.run(tmp_path, MINOR)
    assert "before-build breaks on purpose" in str(error.value)
    assert leftovers() == ([], [])
    assert list(tmp_path.glob("*.whl")) == []


def test_real_cibuildwheel_builds_repairs_and_smoke_tests_the_wheel(cibuildwheel_lane):
    out, summary = cibuildwheel_lane  # `python -m ci local --cibuildwheel`, started with the run
    (wheel,) = out.glob("*.whl")
    assert wheel.name == "torch_segment_ops-0.1.0-py3-none-manylinux_2_34_x86_64.whl"
    log = (out / "cibuildwheel.log").read_text()
    assert "python -m ci repair -w" in log  # our repair verb as repair-wheel-command
    assert "SMOKE OK" in log  # our smoke check as test-command, in a fresh venv in the container
    assert "STAND-IN image" in summary and "manylinux_2_34_x86_64" in summary
    assert leftovers() == ([], [])
