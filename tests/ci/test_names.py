"""The names the pipeline gives are the names it reads back."""

import pytest

from ci.declaration import matrix, names


@pytest.mark.parametrize("minor", [None, "2.14"])
def test_artifact_names_round_trip_for_every_platform(minor):
    for plat in matrix.platforms():
        name = names.artifact(plat.wheel_platform, minor)
        assert names.artifact_platform(name) == plat.wheel_platform
    assert names.artifact_platform("coverage-report") is None


def test_labels_mark_per_torch_intermediates_only():
    label = names.torch_label("2.13")
    assert label == matrix.torch("2.13").label
    assert names.is_per_torch_intermediate(f"torch_segment_ops-0.1.0+{label}-cp310-abi3-linux_x86_64.whl")
    assert not names.is_per_torch_intermediate("torch_segment_ops-0.1.0-py3-none-manylinux_2_28_x86_64.whl")


def test_metadata_headers():
    headers = names.metadata("Metadata-Version: 2.4\nName: x\nRequires-Dist: torch>=2.10\n\nbody: not a header\n")
    assert headers["Name"] == "x" and headers.get_all("Requires-Dist") == ["torch>=2.10"] and "body" not in headers
