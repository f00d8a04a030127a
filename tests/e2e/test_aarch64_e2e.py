"""The Linux arm64 wheel built, repaired, audited and smoke-tested on this x86_64 machine under
qemu emulation (`python -m ci local --arch aarch64`): the one stable build, run under each torch of
[local] aarch64_torch. Slow (~2 min cached, ~8 min cold: two aarch64 torch downloads); skipped,
with the reason, where root or binfmt_misc are missing."""

import io
import zipfile

import pytest
from elftools.elf.elffile import ELFFile

from ci.declaration import matrix
from ci.lanes import aarch64, local
from ci.stages import audit
from ci.stages.wheels import WheelInfo

MINORS = matrix.declaration().local.aarch64_torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def emulated(aarch64_lane):
    out, table = aarch64_lane  # skipped, with the reason, where emulation is unavailable
    print(table)
    return out, table


def test_wheel_is_an_audited_stable_aarch64_wheel(emulated):
    out, _ = emulated
    (final,) = out.glob("*.whl")
    info = WheelInfo.read(final)
    tag = next(iter(info.tags))
    assert f"{tag.interpreter}-{tag.abi}" == matrix.wheel_tag_prefix() and tag.platform.endswith("_aarch64")
    assert audit.audit(final) == []
    with zipfile.ZipFile(final) as zf:
        libs = sorted(n for n in zf.namelist() if n.endswith(".so"))
        # the CPU build and the CUDA builds declared for linux-aarch64 (nvcc cross-compiling in the rootfs)
        cuda = [f"cu{major}" for major in matrix.platform("linux-aarch64").cuda]
        assert [lib.split("/")[2] for lib in libs] == sorted(["stable", *cuda])
        for lib in libs:
            assert ELFFile(io.BytesIO(zf.read(lib))).header["e_machine"] == "EM_AARCH64"
        assert not [n for n in zf.namelist() if audit.is_grafted(n)]


def test_smoke_ran_under_emulation_against_the_reference(emulated):
    out, table = emulated
    smoke_rows = [line for line in table.splitlines() if line.startswith("| smoke")]
    assert len(smoke_rows) == len(MINORS) and all("| passed |" in row for row in smoke_rows)
    smoke_output = [text for cell, text in local.read_log(out).items() if cell.startswith("smoke")]
    for minor, row in zip(MINORS, smoke_output):
        assert "emulated aarch64 " in row  # platform.machine() inside the rootfs, not the host's x86_64
        # the same wheel under each torch; those aarch64 torch builds use CUDA 13, so its CUDA build loads
        cuda = "".join(f" + cu{m}" for m in matrix.platform("linux-aarch64").cuda)
        assert f"torch {matrix.torch(minor).pin}" in row and f"build stable{cuda} " in row
    assert "not on arm64 hardware" in table


def test_no_mount_is_left_behind(emulated):
    mounts = open("/proc/mounts").read()
    assert str(aarch64.rootfs()) not in mounts
