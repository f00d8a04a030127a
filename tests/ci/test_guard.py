"""release-guard against fake indexes on 127.0.0.1: the name is free, ours, or not ours."""

import io
import json
import subprocess
import sys
import tarfile

import pytest

from ci.publish import guard, index
from ci.publish.release import package_version
from tests.ci.wheel_factory import make_wheel
from tests.loopback import body

NAME, SOURCE = guard.project()
OURS = f"Project-URL: Source, {SOURCE}"


def sdist(folder, version, headers):
    data = "\n".join(["Metadata-Version: 2.1", f"Name: {NAME}", f"Version: {version}", *headers, ""]).encode()
    path = folder / f"torch_segment_ops-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(f"torch_segment_ops-{version}/PKG-INFO")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def serve(tmp_path, loopback):
    """serve(files, pep658=True, as_json=False) -> index URL listing those files."""
    def start(files, pep658=True, as_json=False):
        n = len(list(tmp_path.glob("dist*")))
        dist = tmp_path / f"dist{n}"
        dist.mkdir()
        for make in files:
            make(dist)
        root = tmp_path / f"site{n}"
        server = loopback(root)
        if files:
            index.build_index(dist, root)
            project = root / "simple" / NAME
            if not pep658:
                for meta in (root / "files").glob("*.metadata"):
                    meta.unlink()
                page = (project / "index.html").read_text()
                (project / "index.html").write_text(page.replace("data-core-metadata", "x").replace(
                    "data-dist-info-metadata", "y"))
                listing = json.loads((project / "index.json").read_text())
                for file in listing["files"]:
                    file.pop("core-metadata", None)
                (project / "index.json").write_text(json.dumps(listing))
            if as_json:
                server.routes[f"/simple/{NAME}/"] = body((project / "index.json").read_bytes(), "application/json")
        else:
            root.mkdir()
        return f"{server.url}/simple"

    return start


def wheel(version, *headers):
    return lambda dist: make_wheel(dist, version=version, requires=None, headers=list(headers))


def source(version, *headers):
    return lambda dist: sdist(dist, version, list(headers))


def test_a_free_name_passes(serve):
    assert "is free" in guard.check(serve([]), NAME, SOURCE, "0.1.0")


@pytest.mark.parametrize("pep658", [True, False])
@pytest.mark.parametrize("as_json", [True, False])
def test_releases_that_name_our_repository_pass(serve, pep658, as_json):
    spelled_differently = "Project-URL: Repository, " + SOURCE.replace("https://github.com/", "https://www.GitHub.com/")
    url = serve([wheel("0.0.9", OURS), wheel("0.0.8", spelled_differently + ".git"),
                 source("0.0.7", f"Home-page: {SOURCE}/")], pep658=pep658, as_json=as_json)
    assert "3 release(s), all from" in guard.check(url, NAME, SOURCE, "0.1.0")


@pytest.mark.parametrize("pep658", [True, False])
def test_an_unrelated_project_of_that_name_stops_the_release(serve, pep658):
    url = serve([wheel("0.0.2", "Home-page: https://github.com/someone-else/torch-segment-ops")], pep658=pep658)
    with pytest.raises(guard.GuardError, match=r"is not ours: release\(s\) 0.0.2 \(https://github.com/someone-else"):
        guard.check(url, NAME, SOURCE, "0.1.0")


def test_one_foreign_release_among_ours_is_named(serve):
    url = serve([wheel("0.0.9", OURS), source("0.0.3"), wheel("0.0.4", "Project-URL: Source, https://gitlab.com/x/y")])
    with pytest.raises(guard.GuardError) as error:
        guard.check(url, NAME, SOURCE, "0.1.0")
    assert "0.0.3 (no source URL); 0.0.4 (https://gitlab.com/x/y)" in str(error.value)
    assert "0.0.9" not in str(error.value)


def test_a_lookalike_repository_is_not_ours(serve):
    url = serve([wheel("0.0.9", f"Project-URL: Source, {SOURCE}-fork")])
    with pytest.raises(guard.GuardError, match="is not ours"):
        guard.check(url, NAME, SOURCE, "0.1.0")


def test_the_version_must_be_new(serve):
    with pytest.raises(guard.GuardError, match="already has version 0.1.0"):
        guard.check(serve([wheel("0.1.0", OURS)]), NAME, SOURCE, "0.1.0")


def test_an_existing_project_without_files_cannot_be_shown_to_be_ours(serve, tmp_path):
    url = serve([])
    root = tmp_path / "site0" / "simple" / NAME
    root.mkdir(parents=True)
    (root / "index.html").write_text("<html><body></body></html>")
    with pytest.raises(guard.GuardError, match="lists no files"):
        guard.check(url, NAME, SOURCE, "0.1.0")


def test_an_unreachable_index_stops_the_release():
    with pytest.raises(guard.GuardError, match="cannot tell whether .* could not reach"):
        guard.check("http://127.0.0.1:1/simple", NAME, SOURCE, "0.1.0")


def test_a_release_from_another_repository_is_refused(serve):
    with pytest.raises(guard.GuardError, match="releases come only from that repository"):
        guard.run(serve([]), "someone-else/torch-segment-ops")
    owner_repo = SOURCE.removeprefix("https://github.com/")
    assert "is free" in guard.run(serve([]), owner_repo.upper())


def test_the_cli_prints_one_line_and_sets_the_exit_code(serve):
    free, taken = serve([]), serve([wheel("0.0.2", "Home-page: https://example.invalid/seg")])
    env = {"PATH": "/usr/bin:/bin", "TORCH_SEGMENT_OPS_USE_CURRENT_ENV": "1"}
    ok = subprocess.run([sys.executable, "-m", "ci", "release-guard", "--index-url", free], capture_output=True,
                        text=True, cwd=guard.ROOT, env=env)
    assert ok.returncode == 0 and f"{package_version()} will be its first release" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "ci", "release-guard", "--index-url", taken], capture_output=True,
                         text=True, cwd=guard.ROOT, env=env)
    assert bad.returncode == 4 and bad.stderr.startswith("release-guard: ") and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_the_default_index_is_pips(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    assert guard.default_index() == "http://127.0.0.1:9/simple"
    monkeypatch.delenv("PIP_INDEX_URL")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    assert guard.default_index().startswith("https://")


@pytest.mark.parametrize("url, key", [
    ("https://github.com/A/B", "a/b"), ("https://github.com/a/b.git", "a/b"), ("git+https://github.com/a/b", "a/b"),
    ("https://github.com/a/b/tree/main", "a/b"), ("https://github.com.evil.test/a/b", None),
    ("https://gitlab.com/a/b", None), ("https://evil.test/github.com/a/b", None),
])
def test_repository_keys(url, key):
    assert guard.repo_key(url) == key
