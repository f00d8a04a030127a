"""ci/stages/debs.py (Debian packages fetched and unpacked without installing them) and the CUDA 12 toolkit's
pins and layout (ci/stages/cuda.py): mirrors, hash-pinned fetching from a hostile server, hostile .debs."""

import hashlib
import io
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from ci.declaration import matrix
from ci.errors import PipelineError
from ci.stages import cuda, debs


def ar_archive(members: dict[str, bytes]) -> bytes:
    out = b"!<arch>\n"
    for name, data in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data + b"\n" * (len(data) % 2)
    return out


def deb(files: dict[str, bytes], links: dict[str, str] | None = None, names: dict[str, str] | None = None) -> bytes:
    """A .deb whose data.tar.xz holds files, symlinks (name -> target) and entries under raw names."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, content in {**files, **(names or {})}.items():
            info = tarfile.TarInfo(name if name in (names or {}) else "./" + name)
            content = content.encode() if isinstance(content, str) else content
            info.size, info.mode = len(content), 0o755 if name.endswith("nvcc") else 0o644
            tar.addfile(info, io.BytesIO(content))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo("./" + name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return ar_archive({"debian-binary": b"2.0\n", "control.tar.xz": b"", "data.tar.xz": data.getvalue()})


def test_the_mirror_comes_from_apt_then_debootstrap_then_the_variable(tmp_path, monkeypatch):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# http://snapshot.example/archive/debian/2025\nURIs: http://mirror.example/debian\n")
    assert debs.apt_mirror(etc) == "http://mirror.example/debian"
    (etc / "sources.list").write_text("deb [arch=amd64] https://other.example/debian bookworm main\n")
    assert debs.apt_mirror(etc) == "https://other.example/debian"  # sources.list first, options skipped
    (etc / "sources.list").write_text("deb http://archive.example/ubuntu noble main\n")
    (etc / "sources.list.d" / "debian.sources").unlink()
    assert debs.apt_mirror(etc) is None  # not a Debian archive
    script = tmp_path / "debootstrap"
    script.write_text('VERSION=1\nDEF_MIRROR="http://boot.example/debian"\n')
    assert debs.debootstrap_mirror(script) == "http://boot.example/debian"
    script.write_text('DEF_MIRROR="http://archive.example/ubuntu"\n')  # Ubuntu's debootstrap
    assert debs.debootstrap_mirror(script) is None and debs.debootstrap_mirror(tmp_path / "none") is None
    monkeypatch.setenv(debs.MIRROR_VARIABLE, "http://set.example/debian/")
    assert debs.mirror() == "http://set.example/debian"
    monkeypatch.delenv(debs.MIRROR_VARIABLE)
    monkeypatch.setattr(debs, "apt_mirror", lambda: None)
    monkeypatch.setattr(debs, "debootstrap_mirror", lambda: None)
    with pytest.raises(PipelineError, match=f"no Debian mirror.*set {debs.MIRROR_VARIABLE}"):
        debs.mirror()


@pytest.fixture()
def server(loopback):
    """A local HTTP server answering each path with the bytes in `pages` (a hostile mirror)."""
    mirror = loopback()
    return mirror.url, mirror.routes


def test_fetch_keeps_only_bytes_matching_the_pin(server, tmp_path):
    url, pages = server
    good = b"a real package" * 100
    pin = hashlib.sha256(good).hexdigest()
    pages["/p.deb"] = good
    dest = debs.fetch(f"{url}/p.deb", tmp_path / "p.deb", pin, len(good))
    assert dest.read_bytes() == good
    pages["/p.deb"] = b"X" * len(good)  # cached and intact: not fetched again
    assert debs.fetch(f"{url}/p.deb", dest, pin, len(good)).read_bytes() == good
    for body, why in [(b"X" * len(good), "SHA-256"), (good + b"more", "more than"), (good[:10], "10 bytes")]:
        pages["/q.deb"] = body
        with pytest.raises(PipelineError, match=why):
            debs.fetch(f"{url}/q.deb", tmp_path / "q.deb", pin, len(good))
        assert list(tmp_path.iterdir()) == [dest]  # nothing half-written or unverified left
    with pytest.raises(PipelineError, match="cannot fetch .*404"):
        debs.fetch(f"{url}/missing.deb", tmp_path / "m.deb", pin, len(good))
    assert list(tmp_path.iterdir()) == [dest]


def test_the_toolkit_layout_from_the_debian_packages(tmp_path):
    root = tmp_path / "tk"
    files = {
        "usr/lib/nvidia-cuda-toolkit/bin/nvcc": "the real nvcc", "usr/lib/nvidia-cuda-toolkit/bin/cicc": "cicc",
        "usr/lib/nvidia-cuda-toolkit/bin/crt/link.stub": "stub", "usr/lib/nvidia-cuda-toolkit/bin/g++": "picker",
        "usr/bin/nvcc": "Debian's wrapper script", "usr/bin/ptxas": "ptxas", "usr/bin/nvdisasm": "not needed",
        "usr/lib/nvidia-cuda-toolkit/libdevice/libdevice.10.bc": "bc", "usr/include/cuda_runtime.h": "h",
        "usr/include/crt/host_config.h": "h", "usr/lib/x86_64-linux-gnu/libcudart.so.12.4.127": "so",
        "usr/lib/x86_64-linux-gnu/libcublas.so.12": "not needed", "usr/share/doc/x/copyright": "c",
    }
    path = tmp_path / "t.deb"
    path.write_bytes(deb(files, links={"usr/lib/x86_64-linux-gnu/libcudart.so.12": "libcudart.so.12.4.127",
                                       "usr/lib/nvidia-cuda-toolkit/bin/nvcc.profile": "/etc/nvcc.profile"}))
    assert debs.unpack(path, lambda name: cuda.deb_place(name, root)) == 9
    got = sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())
    assert got == ["bin/cicc", "bin/crt/link.stub", "bin/nvcc", "bin/ptxas", "include/crt/host_config.h",
                   "include/cuda_runtime.h", "lib/libcudart.so.12", "lib/libcudart.so.12.4.127",
                   "nvvm/libdevice/libdevice.10.bc"]
    assert (root / "bin" / "nvcc").read_text() == "the real nvcc" and (root / "bin" / "nvcc").stat().st_mode & 0o111
    assert (root / "lib" / "libcudart.so.12").read_text() == "so"  # the same-folder link kept
    assert cuda.deb_place(PurePosixPath("usr/lib/x86_64-linux-gnu/libcudart.so"), root) is None


@pytest.mark.parametrize("name", ["../../escape", "/etc/passwd", "usr/../../escape"])
def test_a_deb_member_outside_the_package_is_refused(tmp_path, name):
    path = tmp_path / "evil.deb"
    path.write_bytes(deb({}, names={name: "x"}))
    with pytest.raises(PipelineError, match="a member outside the package"):
        debs.unpack(path, lambda member: tmp_path / "out" / member)
    assert not (tmp_path / "escape").exists()


@pytest.mark.parametrize("content, message", [(b"not an archive", "not a Debian package"),
                                              (b"!<arch>\nshort", "a damaged ar header"),
                                              (ar_archive({"debian-binary": b"2.0\n"}), "no data archive")])
def test_a_damaged_deb_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.deb"
    path.write_bytes(content)
    with pytest.raises(PipelineError, match=message):
        debs.unpack(path, lambda member: None)


def test_the_cuda_12_pins_cover_what_the_build_needs():
    """Every declared CUDA major has pins; the Debian ones name one version per package on both
    architectures, and the toolkit version setup.py records matches what the audit expects."""
    for build in matrix.cuda_builds():
        assert cuda.lock_file(build.major).is_file(), build.major
    spec = matrix.tomllib.loads(cuda.lock_file("12").read_text())
    assert spec["version"] == cuda.toolkit_version("12") == "12.4" and spec["max_gcc"] == 13
    for arch in ("amd64", "arm64"):
        packages = {**spec[arch], **spec["all"]}
        assert set(packages) == {"nvidia-cuda-toolkit", "nvidia-cuda-dev", "libcudart12", "libcu++-dev",
                                 "libcub-dev", "libthrust-dev"}
        for pin in packages.values():
            name = Path(pin["file"]).name
            assert name.endswith((f"_{arch}.deb", "_all.deb")) and len(pin["sha256"]) == 64 and pin["size"] > 0
            assert ("12.4" in name) or ("2.3.2" in name)  # CCCL 2.3.2 is what CUDA 12.4 ships


def test_a_host_compiler_newer_than_nvcc_accepts_is_replaced_or_refused(tmp_path, monkeypatch):
    fake = tmp_path / "g++"
    monkeypatch.setenv("CXX", str(fake))
    fake.write_text("#!/bin/sh\necho 12\n")
    fake.chmod(0o755)
    assert cuda.older_host_compiler(13) is None  # accepted as it is
    fake.write_text("#!/bin/sh\necho 14.2.1\n")  # manylinux_2_28's gcc-toolset-14
    monkeypatch.setattr(cuda.shutil, "which", lambda name: None)  # no dnf to install gcc-toolset-13 with
    with pytest.raises(PipelineError, match=r"is g\+\+ 14.2.1; this nvcc accepts g\+\+ <= 13"):
        cuda.older_host_compiler(13)
