"""Wheel selection: pip's tag logic plus the torch range."""

import pytest

from ci.publish.pick import Candidate, Target, rank, reject_reasons

W = "torch_segment_ops-0.1.0-{}.whl"


def best(names, target, **meta):
    candidates = [Candidate(n, **meta) for n in names]
    fitting = [c for c in rank(candidates, target) if not reject_reasons(c, target)]
    return fitting[0].filename if fitting else None


def test_abi3_wheel_serves_later_pythons_but_not_earlier():
    names = [W.format("cp310-abi3-manylinux_2_28_x86_64")]
    assert best(names, Target("linux-x86_64", "3.14")) == names[0]
    assert best(names, Target("linux-x86_64", "3.9")) is None


def test_cpxy_wheel_only_serves_its_python_and_beats_abi3():
    abi3, cp312 = W.format("cp310-abi3-manylinux_2_28_x86_64"), W.format("cp312-cp312-manylinux_2_28_x86_64")
    assert best([abi3, cp312], Target("linux-x86_64", "3.12")) == cp312
    assert best([abi3, cp312], Target("linux-x86_64", "3.13")) == abi3


def test_manylinux_ordering_and_legacy_aliases():
    old, new = W.format("cp310-abi3-manylinux2014_x86_64"), W.format("cp310-abi3-manylinux_2_34_x86_64")
    assert best([old, new], Target("manylinux_2_28_x86_64", "3.11")) == old  # 2_34 needs a newer glibc
    assert best([old, new], Target("manylinux_2_36_x86_64", "3.11")) == new  # the more specific tag wins


def test_macos_version_ordering():
    mac14, mac15 = W.format("cp310-abi3-macosx_14_0_arm64"), W.format("cp310-abi3-macosx_15_0_arm64")
    assert best([mac14, mac15], Target("macosx_14_0_arm64", "3.12")) == mac14
    assert best([mac14, mac15], Target("macosx_15_0_arm64", "3.12")) == mac15
    assert best([mac15], Target("macos-arm64", "3.12")) is None
    assert best([mac14], Target("macosx_13_0_arm64", "3.12")) is None


def test_musllinux_does_not_match_manylinux():
    musl = W.format("cp310-abi3-musllinux_1_2_x86_64")
    assert best([musl], Target("linux-x86_64", "3.12")) is None
    assert best([W.format("cp310-abi3-manylinux_2_28_x86_64")], Target("musllinux_1_2_x86_64", "3.12")) is None
    assert "does not fit" in reject_reasons(Candidate(musl), Target("linux-x86_64", "3.12"))[0]


def test_several_torch_builds_pick_by_torch_range():
    pt213 = Candidate(W.format("cp310-abi3-manylinux_2_28_x86_64").replace("0.1.0", "0.1.0+pt213"),
                      requires_torch="==2.13.*")
    pt214 = Candidate(W.format("cp310-abi3-manylinux_2_28_x86_64").replace("0.1.0", "0.1.0+pt214"),
                      requires_torch="==2.14.*")
    target = Target("linux-x86_64", "3.11", torch="2.14.1+cpu")
    fitting = [c.filename for c in rank([pt213, pt214], target) if not reject_reasons(c, target)]
    assert fitting == [pt214.filename]
    assert reject_reasons(pt213, target) == ["requires torch==2.13.*, not 2.14.1+cpu"]


def test_requires_python_is_respected():
    c = Candidate(W.format("py3-none-any"), requires_python=">=3.11")
    assert reject_reasons(c, Target("linux-x86_64", "3.10")) == ["requires Python >=3.11"]


@pytest.mark.parametrize("name", ["torch_segment_ops-0.1.0.tar.gz", "SHA256SUMS", "notes.txt"])
def test_non_wheels_are_rejected(name):
    assert reject_reasons(Candidate(name), Target("linux-x86_64", "3.12"))
