"""download and index against local HTTP servers on 127.0.0.1: a fake GitHub
release API, and a generated simple index checked with real pip."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ci.publish import download, index
from ci.publish.pick import Target
from ci.util import envs
from tests.ci.wheel_factory import make_wheel
from tests.loopback import body

PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_28_aarch64", "macosx_14_0_arm64"]


def final_wheels(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [make_wheel(folder, version="0.1.0", requires="torch>=2.12,<2.16", tag=f"cp310-abi3-{p}",
                       builds={"torch_2_13": "2.13.0"}) for p in PLATFORMS]


@pytest.fixture
def release(tmp_path, monkeypatch, loopback):
    """A fake GitHub API serving a release with our three platform wheels, SHA256SUMS and the sdist."""
    files = tmp_path / "dl"
    wheels = final_wheels(files)
    (files / "torch_segment_ops-0.1.0.tar.gz").write_bytes(b"sdist")
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in sorted(files.iterdir()))
    (files / "SHA256SUMS").write_text(sums)
    server = loopback(files)
    assets = [{"name": p.name, "browser_download_url": f"{server.url}/{p.name}", "url": f"{server.url}/{p.name}"}
              for p in sorted(files.iterdir())]
    listing = json.dumps({"assets": assets}).encode()
    server.routes["/repos/o/r/releases/tags/v0.1.0"] = body(listing, "application/json")
    monkeypatch.setenv("GITHUB_API_URL", server.url)
    monkeypatch.delenv("GH_TOKEN", raising=False)
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    return files, wheels


@pytest.mark.parametrize("platform", ["linux-x86_64", "linux-aarch64", "macos-arm64"])
def test_release_download_picks_the_platform(release, tmp_path, platform, capsys):
    _, wheels = release
    target = Target(platform, "3.12", "2.13.1")
    got = download.download(download.ReleaseSource("o/r", "v0.1.0"), target, tmp_path / "out")
    expected = {"linux-x86_64": wheels[0], "linux-aarch64": wheels[1], "macos-arm64": wheels[2]}[platform]
    assert got.name == expected.name and got.read_bytes() == expected.read_bytes()
    out = capsys.readouterr().out
    assert f"chose {expected.name}" in out and "verified" in out


def test_checksum_mismatch_leaves_nothing(release, tmp_path):
    files, wheels = release
    sums = (files / "SHA256SUMS").read_text().replace(hashlib.sha256(wheels[0].read_bytes()).hexdigest(), "0" * 64)
    (files / "SHA256SUMS").write_text(sums)
    with pytest.raises(download.DownloadError, match="SHA256 mismatch"):
        download.download(download.ReleaseSource("o/r", "v0.1.0"), Target("linux-x86_64", "3.12"), tmp_path / "out")
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_missing_platform_lists_what_exists(release, tmp_path):
    with pytest.raises(download.DownloadError) as error:
        download.download(download.ReleaseSource("o/r", "v0.1.0"), Target("manylinux_2_28_ppc64le", "3.12"),
                          tmp_path / "out")
    message = str(error.value)
    assert "no wheel fits manylinux_2_28_ppc64le" in message
    for p in PLATFORMS:
        assert f"tag cp310-abi3-{p} does not fit" in message
    assert "torch_segment_ops-0.1.0.tar.gz: not a wheel" in message


def test_torch_outside_the_range_is_rejected(release, tmp_path):
    with pytest.raises(download.DownloadError, match=r"requires torch<2.16,>=2.12, not 2.11.0"):
        download.download(download.ReleaseSource("o/r", "v0.1.0"), Target("linux-x86_64", "3.12", "2.11.0"),
                          tmp_path / "out")


def test_github_renamed_assets_are_mapped_back():
    assert download.github_asset_name("torch_segment_ops-0.1.0+pt213-cp310-abi3-x.whl") == (
        "torch_segment_ops-0.1.0.pt213-cp310-abi3-x.whl")


def test_network_error_is_a_clean_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_API_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    proc = subprocess.run([sys.executable, "-m", "ci", "download", "--release", "v0.1.0", "--repo", "o/r",
                           "--platform", "linux-x86_64", "--python", "3.12", "-o", str(tmp_path)],
                          cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True)
    assert proc.returncode == 5
    assert proc.stderr.strip().startswith("download: could not reach http://127.0.0.1:9/repos/o/r/releases")
    assert "Traceback" not in proc.stderr


@pytest.fixture
def simple_index(tmp_path, loopback):
    dist = tmp_path / "dist"
    final_wheels(dist)
    (dist / "torch_segment_ops-0.1.0.tar.gz").write_bytes(b"sdist")
    index.build_index(dist, tmp_path / "site")
    return loopback(tmp_path / "site").url + "/simple", dist


def pip_download(index_url: str, platform: str, python: str, dest: Path) -> list[str]:
    subprocess.run([sys.executable, "-m", "pip", "download", "torch-segment-ops", "--index-url", index_url,
                    "--platform", platform, "--python-version", python, "--only-binary=:all:", "--no-deps",
                    "-d", str(dest), "-q", "--isolated"], check=True, capture_output=True)
    return sorted(p.name for p in dest.iterdir())


@pytest.mark.parametrize("python", ["3.10", "3.11", "3.12", "3.13", "3.14"])
@pytest.mark.parametrize("platform", PLATFORMS)
def test_real_pip_and_our_download_pick_the_same_wheel(simple_index, tmp_path, platform, python):
    index_url, _ = simple_index
    by_pip = pip_download(index_url, platform, python, tmp_path / "pip")
    ours = download.download(download.IndexSource(index_url, Target(platform, python)), Target(platform, python),
                             tmp_path / "ours")
    assert by_pip == [ours.name]


def test_index_carries_hashes_metadata_and_requires_python(simple_index):
    index_url, dist = simple_index
    source = download.IndexSource(index_url, Target("linux-aarch64", "3.12"))
    wheels = [c for c in source.candidates if c.filename.endswith(".whl")]
    assert len(wheels) == 3 and all(c.sha256 and c.requires_python == ">=3.10" for c in wheels)
    # read from the PEP 658 .metadata files, for the files that could be chosen only
    assert [c.requires_torch for c in wheels if "aarch64" in c.filename] == ["<2.16,>=2.12"]
    assert [c.requires_torch for c in wheels if "aarch64" not in c.filename] == [None, None]
    for c in source.candidates:
        assert c.sha256 == hashlib.sha256((dist / c.filename).read_bytes()).hexdigest()


UV_PLATFORMS = {  # our platform tag -> uv's --python-platform (+ its macOS deployment target)
    "manylinux_2_28_x86_64": ("x86_64-manylinux_2_28", None),
    "manylinux_2_28_aarch64": ("aarch64-manylinux_2_28", None),
    "macosx_14_0_arm64": ("aarch64-apple-darwin", "14.0"),
}


@pytest.mark.parametrize("python", ["3.10", "3.14"])
@pytest.mark.parametrize("platform", PLATFORMS)
def test_uv_picks_the_same_wheel_as_our_download(simple_index, tmp_path, platform, python):
    """uv (installed in the dev env) resolves against our index for a foreign platform."""
    index_url, _ = simple_index
    uv_platform, macos = UV_PLATFORMS[platform]
    env = dict(envs.pip_environ(), **({"MACOSX_DEPLOYMENT_TARGET": macos} if macos else {}))
    subprocess.run(["uv", "pip", "install", "--quiet", "--no-deps", "--target", str(tmp_path / "t"),
                    "--python-platform", uv_platform, "--python-version", python, "--index-url", index_url,
                    "torch-segment-ops"], check=True, env=env, capture_output=True)
    (wheel_file,) = (tmp_path / "t").glob("*.dist-info/WHEEL")
    chosen_tag = [line.split(": ")[1] for line in wheel_file.read_text().splitlines() if line.startswith("Tag:")]
    ours = download.download(download.IndexSource(index_url, Target(platform, python)), Target(platform, python),
                             tmp_path / "ours")
    assert chosen_tag == [ours.name[:-4].split("-", 2)[-1]]
