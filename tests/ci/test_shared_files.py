"""Identical files among the cached envs become one file (ci/util/shared_files.py): only same bytes and
mode, only finished envs, once per change of the envs, and a failed pass never stops a run."""

import json
import os

import pytest

from ci.util import shared_files

SIZE = shared_files.MIN_SIZE


def env(cache, name, files, stamped=True):
    root = cache / "envs" / name
    root.mkdir(parents=True)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    if stamped:
        (root / ".torch-segment-ops-spec").write_text("spec")
    return root


def test_same_bytes_and_mode_become_one_inode_and_nothing_else_does(tmp_path):
    lib, first, other = b"a" * SIZE, b"c" * SIZE, b"c" * (SIZE - 1) + b"d"
    one = env(tmp_path, "py3.11", {"torch/lib/libtorch_cuda.so": lib, "small": b"s", "differs": first})
    two = env(tmp_path, "py3.12", {"torch/lib/libtorch_cuda.so": lib, "small": b"s", "differs": other})
    three = env(tmp_path, "py3.13", {"torch/lib/libtorch_cuda.so": lib})
    (three / "torch/lib/libtorch_cuda.so").chmod(0o755)

    assert shared_files.share([one, two, three]) == SIZE
    assert (one / "torch/lib/libtorch_cuda.so").samefile(two / "torch/lib/libtorch_cuda.so")
    assert (two / "torch/lib/libtorch_cuda.so").read_bytes() == lib
    assert not (three / "torch/lib/libtorch_cuda.so").samefile(one / "torch/lib/libtorch_cuda.so")  # mode differs
    assert not (one / "differs").samefile(two / "differs") and (two / "differs").read_bytes() == other
    assert not (one / "small").samefile(two / "small")  # under MIN_SIZE: not worth a hash
    assert not list(tmp_path.rglob("*.shared-tmp"))
    assert shared_files.share([one, two, three]) == 0


def test_a_reader_keeps_the_file_it_opened(tmp_path):
    one = env(tmp_path, "a", {"lib.so": b"x" * SIZE})
    two = env(tmp_path, "b", {"lib.so": b"x" * SIZE})
    with (two / "lib.so").open("rb") as held:
        shared_files.share([one, two])
        assert held.read() == b"x" * SIZE


def test_only_finished_envs_and_newest_folders_take_part(tmp_path):
    ready = env(tmp_path, "ready", {})
    env(tmp_path, "half-made", {}, stamped=False)
    opt = tmp_path / "newest" / "sid-rootfs" / "opt"
    for name in ("py3.14-torch2.15.0", "run-py3.14-torch2.15.0"):
        (opt / name).mkdir(parents=True)
        (opt / f".{name}.spec").write_text("torch==2.15.0")
    assert sorted(shared_files.ready_roots(tmp_path)) == [str(ready), str(opt / "py3.14-torch2.15.0")]


def test_one_pass_per_change_of_the_envs(tmp_path, monkeypatch):
    env(tmp_path, "a", {"lib.so": b"x" * SIZE})
    b = env(tmp_path, "b", {"lib.so": b"x" * SIZE})
    assert shared_files.share_once(tmp_path) == SIZE
    state = json.loads((tmp_path / shared_files.STATE).read_text())
    assert len(state["roots"]) == 2 and len(state["digests"]) == 1  # both paths are one file now

    monkeypatch.setattr(shared_files, "share", pytest.fail)  # the same envs: no walk at all
    assert shared_files.share_once(tmp_path) == 0

    monkeypatch.undo()
    hashed = []
    real_digest = shared_files.hashlib.file_digest
    monkeypatch.setattr(shared_files.hashlib, "file_digest", lambda f, name: hashed.append(f.name) or
                        real_digest(f, name))
    c = env(tmp_path, "c", {"lib.so": b"x" * SIZE})
    assert shared_files.share_once(tmp_path) == SIZE
    assert hashed == [str(c / "lib.so")]  # the digest of a and b's file was kept
    assert (c / "lib.so").samefile(b / "lib.so")


def test_a_failed_pass_says_why_and_is_tried_again_next_time(tmp_path, monkeypatch, capsys):
    env(tmp_path, "a", {"lib.so": b"x" * SIZE})
    env(tmp_path, "b", {"lib.so": b"x" * SIZE})

    def broken(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "lib.so")

    monkeypatch.setattr(shared_files, "link", broken)
    assert shared_files.share_once(tmp_path) == 0
    assert "skipped: [Errno 13] Permission denied: 'lib.so'" in capsys.readouterr().err
    assert not (tmp_path / shared_files.STATE).exists()
    monkeypatch.undo()
    assert shared_files.share_once(tmp_path) == SIZE


def test_no_cache_yet_is_nothing_to_do(tmp_path):
    assert shared_files.share_once(tmp_path / "absent") == 0
    assert not os.path.exists(tmp_path / "absent")
