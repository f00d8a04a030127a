"""The download verb against hostile or broken servers on 127.0.0.1 (and
"localhost", as a second host): tokens, redirects, endless or dripping bodies,
bad checksum files, malformed answers, leftovers."""

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ci.publish import download, http_client, index
from ci.publish.pick import Target
from tests.ci.test_download import final_wheels
from tests.loopback import Loopback, body, redirect

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def servers(monkeypatch, loopback):
    api, storage = loopback(), loopback(host="localhost")
    monkeypatch.setenv("GITHUB_API_URL", api.url)
    monkeypatch.setenv("GH_TOKEN", "secret-token")
    return api, storage


def publish(api, storage, files: dict[str, bytes], sums: str | None = None):
    """A release whose every asset URL on the API host redirects to the storage host (as GitHub does)."""
    sums = sums if sums is not None else "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items())
    files = dict(files, SHA256SUMS=sums.encode())
    assets = []
    for name, data in files.items():
        api.routes[f"/assets/{name}"] = redirect(f"{storage.url}/{name}")
        storage.routes[f"/{name}"] = body(data)
        assets.append({"name": name, "url": f"{api.url}/assets/{name}",
                       "browser_download_url": f"{storage.url}/{name}"})
    api.routes["/repos/o/r/releases/tags/v1"] = body(json.dumps({"assets": assets}).encode(), "application/json")


@pytest.fixture
def wheels(tmp_path):
    return {p.name: p.read_bytes() for p in final_wheels(tmp_path / "w")}


def test_the_token_goes_to_the_api_host_only_and_the_redirected_download_works(servers, wheels, tmp_path):
    api, storage = servers
    publish(api, storage, wheels)
    got = download.download(download.ReleaseSource("o/r", "v1"), Target("linux-x86_64", "3.12", "2.13.0"),
                            tmp_path / "out")
    assert got.read_bytes() == wheels[got.name]
    assert all(h.get("Authorization") == "Bearer secret-token" for _, h in api.seen)
    assert storage.seen and not any("Authorization" in h for _, h in storage.seen)


def test_a_redirect_to_plain_http_elsewhere_is_refused(servers):
    api, _ = servers
    api.routes["/x"] = redirect("http://example.invalid/x")
    with pytest.raises(download.DownloadError, match="refusing http://example.invalid/x: only https"):
        http_client.fetch(f"{api.url}/x")
    with pytest.raises(download.DownloadError, match="refusing ftp://example.invalid/"):
        http_client.fetch("ftp://example.invalid/")


def test_an_endless_body_stops_at_the_size_cap(servers, monkeypatch):
    api, _ = servers
    monkeypatch.setattr(http_client, "MAX_BYTES", 1 << 20)

    def endless(handler):  # bounded, so the test server stops by itself
        handler.send_response(200)
        handler.end_headers()
        try:
            for _ in range(320):
                handler.wfile.write(b"\0" * 65536)
        except OSError:
            pass
    api.routes["/big"] = endless
    with pytest.raises(download.DownloadError, match=r"sent more than 1048576 bytes; stopped"):
        http_client.fetch(f"{api.url}/big")


def test_a_dripping_server_hits_the_deadline(servers, monkeypatch):
    api, _ = servers
    monkeypatch.setattr(http_client, "DEADLINE_S", 1.0)

    def drip(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        try:
            for _ in range(25):
                handler.wfile.write(b"x")
                handler.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass
    api.routes["/slow"] = drip
    start = time.monotonic()
    with pytest.raises(download.DownloadError, match="took longer than 1 s"):
        http_client.fetch(f"{api.url}/slow")
    assert time.monotonic() - start < 4


@pytest.mark.parametrize("sums, message", [
    ("{d}  {n}\n{z}  {n}\n", "lists {n} twice with different digests"),
    ("not a checksum line\n", "SHA256SUMS line 1 is not"),
    ("{d}\n", "SHA256SUMS line 1 is not"),
])
def test_bad_checksum_files_are_refused(servers, wheels, tmp_path, sums, message):
    api, storage = servers
    name, data = next(iter(wheels.items()))
    fields = {"d": hashlib.sha256(data).hexdigest(), "z": "0" * 64, "n": name}
    publish(api, storage, wheels, sums.format(**fields))
    with pytest.raises(download.DownloadError, match=message.format(**fields).replace("+", r"\+")):
        download.ReleaseSource("o/r", "v1")


def test_duplicate_identical_lines_and_upper_case_digests_are_fine(servers, wheels, tmp_path):
    api, storage = servers
    lines = "".join(f"{hashlib.sha256(d).hexdigest().upper()}  {n}\n" * 2 for n, d in wheels.items())
    publish(api, storage, wheels, lines)
    got = download.download(download.ReleaseSource("o/r", "v1"), Target("macos-arm64", "3.12", "2.13.0"),
                            tmp_path / "out")
    assert got.name.endswith("macosx_14_0_arm64.whl")


def test_an_upper_case_digest_in_an_index_is_accepted(tmp_path, loopback):
    dist = tmp_path / "dist"
    final_wheels(dist)
    index.build_index(dist, tmp_path / "site")
    page = tmp_path / "site" / "simple" / "torch-segment-ops" / "index.html"
    text = page.read_text()
    for name in [p.name for p in dist.iterdir()]:
        digest = hashlib.sha256((dist / name).read_bytes()).hexdigest()
        text = text.replace(f"sha256={digest}", f"sha256={digest.upper()}")
    page.write_text(text)
    (tmp_path / "site" / "simple" / "torch-segment-ops" / "index.json").unlink()
    server = loopback()
    server.routes["/simple/torch-segment-ops/"] = body(text.encode(), "text/html")
    for path in (tmp_path / "site" / "files").iterdir():
        server.routes[f"/files/{path.name}"] = path.read_bytes()
    target = Target("linux-x86_64", "3.12", "2.13.0")
    got = download.download(download.IndexSource(f"{server.url}/simple", target), target, tmp_path / "out")
    assert got.exists()


@pytest.mark.parametrize("answer", [b"not json", b'{"assets": 5}', b'{"no": "assets"}', b"[]"])
def test_malformed_answers_are_one_line_not_a_traceback(servers, tmp_path, answer, monkeypatch):
    api, _ = servers
    api.routes["/repos/o/r/releases/tags/v1"] = body(answer, "application/json")
    proc = subprocess.run([sys.executable, "-m", "ci", "download", "--release", "v1", "--repo", "o/r",
                           "--platform", "linux-x86_64", "--python", "3.12", "--torch", "2.13.0", "-o", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 5 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("download: ")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args):
        raise OSError("disk full")
    monkeypatch.setattr(download.os, "replace", fail)
    with pytest.raises(download.DownloadError, match="cannot write .*: disk full"):
        download.save(b"data", tmp_path, "x-0.1.0-py3-none-any.whl")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["../evil.whl", "/etc/evil.whl", ".hidden.whl", "a/b.whl", "a\\\\b.whl",
                                  "evil\x1b[2J.whl", "evil\n.whl"])
def test_file_names_from_the_server_stay_in_the_output_folder(tmp_path, name):
    with pytest.raises(download.DownloadError, match="not a plain file name"):
        download.save(b"data", tmp_path / "out", name)
    assert not (tmp_path / "evil.whl").exists()


@pytest.mark.parametrize("url, allowed", [
    ("http://127.0.0.1:1/x", True), ("http://127.9.9.9/x", True), ("http://[::1]:1/x", True),
    ("http://localhost:1/x", True), ("http://127.evil.example/x", False), ("http://127.0.0.1.evil.example/x", False),
    ("http://10.0.0.1/x", False), ("http://[::ffff:8.8.8.8]/x", False)])
def test_loopback_is_decided_from_the_address_not_a_name_prefix(url, allowed):
    if allowed:
        http_client.check_url(url)
    else:
        with pytest.raises(download.DownloadError, match="only https"):
            http_client.check_url(url)


def test_a_body_cut_short_of_its_content_length_is_an_error(servers):
    api, _ = servers

    def short(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"<html>half a page")
        handler.close_connection = True
    api.routes["/short"] = short
    with pytest.raises(download.DownloadError, match="sent 17 bytes but announced 1000; the transfer was cut short"):
        http_client.fetch(f"{api.url}/short")


def peak_rss_mib_of(code: str) -> tuple[subprocess.CompletedProcess, float]:
    """Run code in a child Python; its peak resident memory in MiB, read by the child itself from
    /proc/self/status VmHWM (ru_maxrss would carry the forking parent's peak across exec)."""
    script = code + "\nimport re, sys\nhwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())\n" \
                    "print(int(hwm[1]) / 1024, file=sys.stderr)\n"
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    return proc, float(proc.stderr.strip().splitlines()[-1])


def zip_of(members: dict[str, int], path: Path) -> Path:
    """A zip whose members are `size` zero bytes each (a few hundred KiB on disk per GiB)."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, size in members.items():
            with zf.open(name, "w", force_zip64=True) as member:
                for _ in range(size >> 24):
                    member.write(bytes(1 << 24))
    return path


def test_an_artifact_that_unpacks_to_gigabytes_is_refused_with_bounded_memory(servers, tmp_path):
    """One small artifact zip holding a 1 GiB "wheel": refused by what it unpacks, memory stays small."""
    api, storage = servers
    name = "torch_segment_ops-0.1.0-py3-none-manylinux_2_28_x86_64.whl"
    archive = zip_of({name: 1 << 30}, tmp_path / "artifact.zip").read_bytes()
    assert len(archive) < 2 << 20
    storage.routes["/a.zip"] = body(archive)
    api.routes["/repos/o/r/actions/runs/1/artifacts?per_page=100"] = body(json.dumps({"artifacts": [
        {"name": "wheels-manylinux_2_28_x86_64", "archive_download_url": f"{storage.url}/a.zip"}]}).encode(),
        "application/json")
    proc, peak = peak_rss_mib_of(
        "import os, sys\nfrom pathlib import Path\n"
        "from ci.publish import download\nfrom ci.publish.pick import Target\n"
        f"os.environ['GITHUB_API_URL'] = {api.url!r}\n"
        "try:\n    download.RunSource('o/r', '1', Target('linux-x86_64', '3.12'))\n"
        "except download.DownloadError as error:\n    print(error)\n")
    assert "unpacks to more than 104857600 bytes; refused" in proc.stdout, proc.stderr
    assert peak < 400, f"peak RSS {peak:.0f} MiB"


def test_a_wheel_with_a_gigabyte_metadata_is_refused_not_a_memory_error(tmp_path):
    wheel = zip_of({"torch_segment_ops-0.1.0.dist-info/METADATA": 1 << 30}, tmp_path / "x.whl").read_bytes()
    proc, peak = peak_rss_mib_of(
        "from pathlib import Path\nfrom ci.publish import download\n"
        f"try:\n    download.wheel_metadata(Path({str(tmp_path / 'x.whl')!r}).read_bytes(), 'x.whl')\n"
        "except download.DownloadError as error:\n    print(error)\n")
    assert len(wheel) < 2 << 20
    assert "x.whl unpacks to more than 4194304 bytes; refused" in proc.stdout, proc.stderr
    assert peak < 200, f"peak RSS {peak:.0f} MiB"


def test_index_reports_a_wheel_without_readable_metadata_in_one_line(tmp_path):
    dist = tmp_path / "dist"
    final_wheels(dist)
    (dist / "torch_segment_ops-0.2.0-py3-none-any.whl").write_bytes(b"not a zip")
    proc = subprocess.run([sys.executable, "-m", "ci", "index", str(dist), str(tmp_path / "site")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == ("index: torch_segment_ops-0.2.0-py3-none-any.whl is not a readable wheel "
                                   "(BadZipFile: File is not a zip file)")


PAGES = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=400).map(str.encode),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(
                     ["files", "filename", "url", "hashes", "sha256", "yanked", "core-metadata", "requires-python"]),
                     inner, max_size=5), max_leaves=20).map(lambda v: json.dumps({"files": v}).encode()),
    st.lists(st.tuples(st.text(max_size=40), st.sampled_from(["", " data-yanked", ' data-core-metadata="sha256=x"',
                                                               ' data-requires-python="&gt;=3"'])), max_size=4)
    .map(lambda links: "".join(f'<a href="{h}"{a}>{h}</a>' for h, a in links).encode()))


@pytest.fixture(scope="module")
def fuzz_server():  # one for all examples (function-scoped loopback would start one per example)
    server = Loopback()
    yield server
    server.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(page=PAGES, json_type=st.booleans())
def test_a_fuzzed_index_page_is_a_download_error_or_nothing(fuzz_server, tmp_path, page, json_type):
    """Whatever the index page says, the verb answers with its one error type (no traceback, no file)."""
    fuzz_server.routes["/simple/torch-segment-ops/"] = body(
        page, "application/vnd.pypi.simple.v1+json" if json_type else "text/html")
    with pytest.raises(download.DownloadError):
        download.run(download.Where(index=f"{fuzz_server.url}/simple"), Target("linux-x86_64", "3.12", "2.13.0"),
                     tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
