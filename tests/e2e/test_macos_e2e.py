"""The macOS arm64 lane: cross-built with zig against the real macOS torch
wheels, repaired with our repair verb (delocate), audited with our audit
verb. Nothing here runs the library: there is no Mac. Slow; run by .ci/run."""

import subprocess
import zipfile

import pytest
from wheel.wheelfile import WheelFile

from ci.declaration import matrix
from ci.lanes import macos
from ci.stages import audit, macho, repair
from ci.stages.wheels import WheelInfo

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(macos.missing()), reason=f"macOS lane: {macos.missing()}")]
BUILD = matrix.build_torch()  # stable mode: the one build, against the build torch


def built(macos_wheelhouse):
    (wheel,) = (macos_wheelhouse / "build").glob("*.whl")
    return wheel


def test_the_final_wheel_is_one_stable_build_for_the_declared_target(macos_wheelhouse):
    (final,) = macos_wheelhouse.glob("*.whl")
    assert final.name == f"torch_segment_ops-0.1.0-py3-none-{macos.platform().wheel_platform}.whl"
    assert audit.audit(final) == []
    info = WheelInfo.read(final)
    libraries = {n: c for n, c in info.files.items() if n.endswith(".so")}
    assert sorted(libraries) == ["torch_segment_ops/_builds/stable/_C.so"]
    for content in libraries.values():
        read = macho.read(content)
        assert read["cpu"] == "ARM64" and read["minos"] == macos.platform().deployment_target
        assert "/usr/lib/libc++.1.dylib" in read["dylibs"]  # the system C++ runtime, not zig's own
        assert {d for d in read["dylibs"] if not d.startswith("@rpath/")} == macho.SYSTEM_LIBRARIES
        assert not [s for s, ordinal in read["undefined"] if not 1 <= ordinal <= len(read["dylibs"])]  # no lookup


def test_same_files_and_metadata_as_the_linux_build(macos_wheelhouse, wheelhouse):
    mac = WheelInfo.read(built(macos_wheelhouse))
    (linux_path,) = (wheelhouse / "build").glob("*.whl")  # the Linux build this session made
    linux = WheelInfo.read(linux_path)
    cuda = {n for n in linux.files if n.startswith(tuple(f"{linux.package}/_builds/{b}/" for b in linux.cuda_records))}
    assert cuda and not mac.cuda_records  # the CUDA builds are Linux's only
    assert set(mac.files) - {f"{mac.dist_info}/RECORD"} == set(linux.files) - {f"{linux.dist_info}/RECORD"} - cuda
    assert mac.files[f"{mac.dist_info}/METADATA"] == linux.files[f"{linux.dist_info}/METADATA"]


def test_delocate_needs_torch_on_the_library_path_and_repair_provides_it(macos_wheelhouse, tmp_path):
    """The bug our repair verb works around, on a real Mac too: delocate resolves @rpath before --exclude."""
    wheel = built(macos_wheelhouse)
    lib_dir = macos.torch_tree(BUILD.pin) / "torch" / "lib"
    with macos.delocate_tools():
        naive = subprocess.run(repair.command(wheel, tmp_path / "naive", lib_dir, "darwin"), capture_output=True,
                               text=True, env=repair.environment(lib_dir, "linux"))
        fixed = repair.repair(wheel, tmp_path / "fixed", lib_dir=lib_dir, platform="darwin")
    assert naive.returncode != 0 and "Could not find all dependencies" in naive.stdout + naive.stderr
    assert audit.audit(fixed) == []


def rewrite(wheel, out, change):
    """A copy of wheel with change(name, data) -> data applied to every member (RECORD rewritten)."""
    with zipfile.ZipFile(wheel) as src, WheelFile(out / wheel.name, "w") as dst:
        for info in src.infolist():
            if not info.filename.endswith("RECORD"):
                dst.writestr(info, change(info.filename, src.read(info)))
    return out / wheel.name


def test_audit_rejects_a_library_modified_after_signing(macos_wheelhouse, tmp_path):
    (merged,) = macos_wheelhouse.glob("*.whl")

    def flip(name, data):
        return data[:4096] + bytes([data[4096] ^ 1]) + data[4097:] if name.endswith(".so") else data

    problems = audit.audit(rewrite(merged, tmp_path, flip))
    assert any("code signature does not match page 0" in p for p in problems), problems


def test_audit_rejects_a_tag_that_claims_another_deployment_target(macos_wheelhouse, tmp_path):
    (merged,) = macos_wheelhouse.glob("*.whl")
    target = macos.platform().wheel_platform
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    wheel = rewrite(merged, renamed, lambda n, d: d.replace(target.encode(), b"macosx_13_0_arm64")
                    if n.endswith("/WHEEL") else d)
    moved = wheel.rename(wheel.with_name(wheel.name.replace(target, "macosx_13_0_arm64")))
    problems = audit.audit(moved)
    assert any("minimum macOS 14.0, expected the deployment target 13.0" in p for p in problems), problems
