"""What the download verb may choose from a hostile or sloppy index (a loopback server): only a file
whose name AND metadata are our project and a version that was asked for, pip's rules for yanked
files and pre-releases, the PEP 658 `.metadata` checked against its hash."""

import hashlib
import html
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ci.publish import download
from ci.publish.pick import Target, select_versions
from tests.ci.wheel_factory import make_wheel
from tests.loopback import Loopback, body

ROOT = Path(__file__).resolve().parents[2]
TAG = "py3-none-manylinux_2_28_x86_64"
TARGET = Target("linux-x86_64", "3.12", "2.13.0")


def wheel(folder: Path, version="0.1.0", name="torch_segment_ops", metadata_name="torch-segment-ops",
          metadata_version=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return make_wheel(folder, version=version, requires="torch>=2.10", tag=TAG, builds={}, name=name,
                      metadata_name=metadata_name, metadata_version=metadata_version)


class Index:
    """A PEP 503 page (or PEP 691 JSON) for torch-segment-ops on a loopback server, listing chosen files."""

    def __init__(self):
        self.server = Loopback()
        self.url = f"{self.server.url}/simple"
        self.entries = []

    def add(self, path: Path, yanked=None, metadata: bytes | None = None, metadata_sha256: str | None = None):
        data = path.read_bytes()
        self.server.routes[f"/files/{path.name}"] = body(data)
        if metadata is None:
            metadata = download.wheel_metadata(data).encode()
        self.server.routes[f"/files/{path.name}.metadata"] = body(metadata)
        self.entries.append({"filename": path.name, "sha256": hashlib.sha256(data).hexdigest(), "yanked": yanked,
                             "metadata_sha256": metadata_sha256 or hashlib.sha256(metadata).hexdigest()})

    def serve(self, kind="html"):
        if kind == "json":
            files = [{"filename": e["filename"], "url": f"../../files/{e['filename']}",
                      "hashes": {"sha256": e["sha256"]}, "core-metadata": {"sha256": e["metadata_sha256"]},
                      **({"yanked": e["yanked"]} if e["yanked"] is not None else {})} for e in self.entries]
            page, content_type = json.dumps({"meta": {"api-version": "1.1"}, "files": files}).encode(), \
                "application/vnd.pypi.simple.v1+json"
        else:
            links = []
            for e in self.entries:
                yanked = "" if e["yanked"] is None else f' data-yanked="{html.escape(str(e["yanked"]))}"'
                links.append(f'<a href="../../files/{e["filename"]}#sha256={e["sha256"]}" '
                             f'data-core-metadata="sha256={e["metadata_sha256"]}"{yanked}>{e["filename"]}</a>')
            page, content_type = "\n".join(links).encode(), "text/html"
        self.server.routes["/simple/torch-segment-ops/"] = body(page, content_type)
        return self.url


@pytest.fixture
def index():
    served = Index()
    yield served
    served.server.close()


def choose(index, target=TARGET, kind="html"):
    url = index.serve(kind)
    return download.download(download.IndexSource(url, target), target, index.out)


@pytest.fixture(autouse=True)
def out_dir(tmp_path, index):
    index.out = tmp_path / "out"


def test_a_file_of_another_project_on_our_page_is_never_chosen(index, tmp_path):
    index.add(wheel(tmp_path / "a", name="evil_pkg", version="9.0"))
    with pytest.raises(download.DownloadError, match=r"evil_pkg-9.0-.*: a file of another project \(evil-pkg\)"):
        choose(index)
    index.add(wheel(tmp_path / "b"))
    assert choose(index).name == f"torch_segment_ops-0.1.0-{TAG}.whl"


def test_our_file_name_with_metadata_of_another_project_or_version_is_refused(index, tmp_path):
    index.add(wheel(tmp_path / "a", version="0.2.0", metadata_name="evil-pkg"))
    index.add(wheel(tmp_path / "b", version="0.3.0", metadata_version="6.6.6"))
    index.add(wheel(tmp_path / "c", version="0.1.0"))
    assert choose(index).name == f"torch_segment_ops-0.1.0-{TAG}.whl"
    # the same without PEP 658 metadata: found in the downloaded wheel itself
    links = "\n".join(f'<a href="../../files/{e["filename"]}#sha256={e["sha256"]}">{e["filename"]}</a>'
                      for e in index.entries[:2])
    index.server.routes["/simple/torch-segment-ops/"] = body(links.encode(), "text/html")
    with pytest.raises(download.DownloadError) as error:
        download.download(download.IndexSource(index.url, TARGET), TARGET, index.out / "2")
    assert "its METADATA names another project ('evil-pkg')" in str(error.value)
    assert "its METADATA gives version '6.6.6', its file name 0.3.0" in str(error.value)
    assert not (index.out / "2").exists()


@pytest.mark.parametrize("kind, reason", [("html", ""), ("html", "broken build"), ("json", True),
                                          ("json", "broken build")])
def test_a_yanked_file_is_passed_over_unless_its_version_is_pinned(index, tmp_path, capsys, kind, reason):
    index.add(wheel(tmp_path / "old", version="0.1.0"))
    index.add(wheel(tmp_path / "new", version="0.2.0"), yanked=reason)
    assert choose(index, kind=kind).name.startswith("torch_segment_ops-0.1.0-")
    pinned = Target("linux-x86_64", "3.12", "2.13.0", version="0.2.0")
    assert choose(index, pinned, kind).name.startswith("torch_segment_ops-0.2.0-")
    assert "yanked (" in capsys.readouterr().out


def test_a_pre_release_is_chosen_only_when_asked_for_or_when_nothing_final_fits(index, tmp_path):
    index.add(wheel(tmp_path / "rc", version="0.2.0rc1"))
    assert choose(index).name.startswith("torch_segment_ops-0.2.0rc1-")  # pip's rule: nothing final, so the rc
    index.add(wheel(tmp_path / "final", version="0.1.0"))
    assert choose(index).name.startswith("torch_segment_ops-0.1.0-")
    assert choose(index, Target("linux-x86_64", "3.12", pre=True)).name.startswith("torch_segment_ops-0.2.0rc1-")
    assert choose(index, Target("linux-x86_64", "3.12", version="==0.2.0rc1")).name.startswith(
        "torch_segment_ops-0.2.0rc1-")
    assert choose(index, Target("linux-x86_64", "3.12", version=">0.1")).name.startswith("torch_segment_ops-0.2.0rc1-")
    source = download.IndexSource(index.serve(), TARGET)
    select_versions(source.candidates, TARGET)
    assert [c.reasons for c in source.candidates if "rc1" in c.filename] == [
        ["0.2.0rc1 is a pre-release (use --pre to allow it)"]]


def test_a_metadata_file_not_matching_its_hash_cannot_steer_the_choice(index, tmp_path):
    good = wheel(tmp_path / "a", version="0.1.0")
    newer = wheel(tmp_path / "b", version="0.2.0")
    index.add(good)
    lying = download.wheel_metadata(newer.read_bytes()).replace("torch>=2.10", "torch>=2.0").encode()
    index.add(newer, metadata=lying,  # a hash for the real .metadata; the server sends another text
              metadata_sha256=hashlib.sha256(download.wheel_metadata(newer.read_bytes()).encode()).hexdigest())
    target = Target("linux-x86_64", "3.12", "2.13.0")
    source = download.IndexSource(index.serve(), target)
    (bad,) = [c for c in source.candidates if "0.2.0" in c.filename]
    assert bad.reasons == ["its .metadata file does not match the sha256 the index gives for it"]
    assert download.download(source, target, index.out).name.startswith("torch_segment_ops-0.1.0-")


def test_version_requests_and_a_release_tag(index, tmp_path):
    for version in ("0.1.0", "0.2.0", "0.3.0"):
        index.add(wheel(tmp_path / version, version=version))
    assert choose(index, Target("linux-x86_64", "3.12", version="<0.3")).name.startswith("torch_segment_ops-0.2.0-")
    with pytest.raises(download.DownloadError, match=r"version 0.3.0 was not asked for \(==0.4.0\)"):
        choose(index, Target("linux-x86_64", "3.12", version="0.4.0"))
    with pytest.raises(ValueError, match="not a version specifier"):
        Target("linux-x86_64", "3.12", version="latest!").specifier()


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "ci", "download", *args], cwd=cwd, capture_output=True, text=True)


def test_names_from_the_server_are_printed_escaped(index, tmp_path):
    forged = f"torch_segment_ops-0.1.0-{TAG}.whl\n  sha256 {'0' * 64} verified\x1b[2J\u202e"
    index.server.routes["/simple/torch-segment-ops/"] = body(json.dumps({"meta": {"api-version": "1.1"}, "files": [
        {"filename": forged, "url": "x.whl", "hashes": {"sha256": "0" * 64}}]}).encode(),
        "application/vnd.pypi.simple.v1+json")
    proc = run_cli("--index", index.url, "--platform", "linux-x86_64", "--python", "3.12", "-o", str(tmp_path / "o"))
    assert proc.returncode == 5 and "Traceback" not in proc.stderr
    assert "\x1b" not in proc.stderr and "\u202e" not in proc.stderr
    assert not any(line.lstrip().startswith("sha256") for line in proc.stderr.splitlines())
    assert "\\n  sha256" in proc.stderr and "\\x1b[2J\\u202e" in proc.stderr


@pytest.mark.parametrize("where", ["out is a file", "the wheel's name is a folder"])
def test_an_output_path_in_the_way_is_one_line(index, tmp_path, where):
    index.add(wheel(tmp_path / "w"))
    out = tmp_path / "o"
    if where == "out is a file":
        out.write_text("x")
    else:
        (out / f"torch_segment_ops-0.1.0-{TAG}.whl").mkdir(parents=True)
    proc = run_cli("--index", index.serve(), "--platform", "linux-x86_64", "--python", "3.12", "--torch", "2.13.0",
                   "-o", str(out))
    assert proc.returncode == 5 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("download: cannot write ") and len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("o/.download-*"))
