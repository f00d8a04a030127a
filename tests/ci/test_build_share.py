"""Identical cibuildwheel runs in one test run share their wheels (TORCH_SEGMENT_OPS_BUILD_SHARE): the key
covers the source tree, every CIBW_* variable, the torch pin and SOURCE_DATE_EPOCH, and a reuse never runs
cibuildwheel."""

import subprocess

import pytest

from ci.stages import build


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "src"
    (root / "csrc").mkdir(parents=True)
    (root / "csrc" / "op.cpp").write_text("int x;\n")
    (root / "build").mkdir()
    (root / "build" / "junk.o").write_text("ignored")
    return root


def key(tree, **environ):
    base = {build.SHARE_VARIABLE: str(tree.parent / "share"), "CIBW_BUILD": "cp311-*",
            "TORCH_SEGMENT_OPS_TORCH_PIN": "2.13.0", "SOURCE_DATE_EPOCH": "1"}
    return build.shared(tree, {**base, **environ})


def test_the_key_follows_the_tree_and_the_settings_not_ignored_files(tree):
    first = key(tree)
    assert key(tree) == first and key(tree, DOCKER_HOST="elsewhere") == first
    (tree / "build" / "junk.o").write_text("changed")  # build/ is never copied into a build
    assert key(tree) == first
    assert key(tree, CIBW_BUILD="cp312-*") != first and key(tree, CIBW_BEFORE_BUILD="false") != first
    assert key(tree, TORCH_SEGMENT_OPS_TORCH_PIN="2.14.1") != first and key(tree, SOURCE_DATE_EPOCH="2") != first
    (tree / "csrc" / "op.cpp").write_text("int y;\n")
    assert key(tree) != first
    assert build.shared(tree, {}) is None  # sharing is off unless asked for


def test_a_second_identical_run_copies_the_wheels_without_running_cibuildwheel(tree, monkeypatch):
    monkeypatch.setattr(build, "ROOT", tree)
    monkeypatch.setenv(build.SHARE_VARIABLE, str(tree.parent / "share"))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1")
    runs = []

    def fake_cibuildwheel(cmd, cwd, env):
        runs.append(cmd)
        out = tree / cmd[cmd.index("--output-dir") + 1]
        out.mkdir(parents=True, exist_ok=True)
        (out / "pkg-1.0-py3-none-any.whl").write_bytes(b"wheel")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(build.subprocess, "run", fake_cibuildwheel)
    assert build.cibuildwheel(["--output-dir", "first"]) == 0 and len(runs) == 1
    assert build.cibuildwheel(["--output-dir", "second"]) == 0 and len(runs) == 1  # reused, not run
    assert (tree / "second" / "pkg-1.0-py3-none-any.whl").read_bytes() == b"wheel"
