"""`download`: fetch the one wheel that fits a target (platform, CPython,
torch) from a GitHub release, a GitHub Actions run or a package index,
verify its SHA256, and say what was chosen and why (or, when nothing fits,
what exists and why each was rejected).

Public repositories work anonymously; a token in GH_TOKEN / GITHUB_TOKEN is
sent when set (private repositories, and Actions artifacts, which GitHub only
serves to signed-in clients)."""

from __future__ import annotations

import dataclasses
import hashlib
import html.parser
import io
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..declaration import names
from .http_client import CHUNK, MAX_BYTES, DownloadError, fetch, github_api, shown, token
from .pick import (
    PROJECT,
    Candidate,
    Target,
    describe,
    rank,
    reject_reasons,
    requires_python,
    select_versions,
    tag_rank,
    torch_requirement,
)

JSON_ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
MAX_WHEEL_BYTES = 100 << 20  # one wheel (PyPI's default file limit; ours are <= 4 MiB)
MAX_METADATA_BYTES = 4 << 20  # one METADATA file


def github_asset_name(name: str) -> str:
    """GitHub stores release assets with characters outside [A-Za-z0-9._-] replaced by '.'."""
    return re.sub(r"[^A-Za-z0-9._-]", ".", name)


def parse_sums(text: str) -> dict[str, str]:
    """`sha256sum` output -> {file name: lower-case digest}; malformed or conflicting lines are refused."""
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *](\S.*)", line)
        if not match:
            raise DownloadError(f"download: SHA256SUMS line {number} is not '<sha256>  <file>': {line[:80]!r}")
        digest, name = match[1].lower(), match[2]
        if sums.get(name, digest) != digest:
            raise DownloadError(f"download: SHA256SUMS lists {name} twice with different digests; refusing it")
        sums[name] = digest
    return sums


class ReleaseSource:
    def __init__(self, repo: str, tag: str):
        url = f"{github_api()}/repos/{repo}/releases/tags/{tag}"
        self.assets = json.loads(fetch(url, "application/vnd.github+json", auth=True)[0])["assets"]
        by_name = {a["name"]: a for a in self.assets}
        if "SHA256SUMS" not in by_name:
            raise DownloadError(f"download: release {tag} of {repo} has no SHA256SUMS asset to verify against")
        self.sums = parse_sums(self._get(by_name["SHA256SUMS"]).decode())
        real = {github_asset_name(n): n for n in self.sums}  # undo GitHub's renaming via SHA256SUMS
        self.candidates = [
            Candidate(real.get(a["name"], a["name"]), url=a["name"], sha256=self.sums.get(real.get(a["name"], "")))
            for a in self.assets if a["name"] != "SHA256SUMS"
        ]
        self.by_name = by_name

    def _get(self, asset: dict, limit: int = MAX_WHEEL_BYTES) -> bytes:
        if token():  # the API URL serves private assets too
            return fetch(asset["url"], "application/octet-stream", auth=True, limit=limit)[0]
        return fetch(asset["browser_download_url"], limit=limit)[0]

    def get(self, candidate: Candidate) -> bytes:
        return self._get(self.by_name[candidate.url])


class RunSource:
    """Wheels inside the `wheels-*` artifacts of a workflow run. Only the archives stay in memory; a
    wheel is unpacked (bounded by MAX_WHEEL_BYTES, all of them together by MAX_BYTES) when hashed and
    when chosen."""

    def __init__(self, repo: str, run_id: str, target: Target):
        url = f"{github_api()}/repos/{repo}/actions/runs/{run_id}/artifacts?per_page=100"
        artifacts = json.loads(fetch(url, "application/vnd.github+json", auth=True)[0])["artifacts"]
        self.archives: dict[str, tuple[bytes, str]] = {}  # wheel file name -> (artifact archive, member)
        self.candidates = []
        unpacked = 0
        for artifact in artifacts:
            name = artifact["name"]
            platform = names.artifact_platform(name)
            if platform is None:
                continue
            if tag_rank(f"x-0-cp310-abi3-{platform}.whl", target) is None:
                self.candidates.append(Candidate(f"{name} (artifact)", reasons=[f"platform {platform} does not fit"]))
                continue
            archive = fetch(artifact["archive_download_url"], auth=True)[0]
            expected = (artifact.get("digest") or "").removeprefix("sha256:")
            if expected and hashlib.sha256(archive).hexdigest() != expected:
                raise DownloadError(f"download: artifact {shown(name)} does not match its sha256 digest "
                                    f"{shown(expected)}")
            with zipfile.ZipFile(io.BytesIO(archive)) as zf:
                for info in zf.infolist():
                    if not info.filename.endswith(".whl"):
                        continue
                    unpacked += info.file_size
                    if unpacked > MAX_BYTES:
                        raise DownloadError(f"download: the artifacts unpack to more than {MAX_BYTES} bytes; stopped")
                    sha = hashlib.sha256()  # the archive's digest covers the member
                    for chunk in read_member(zf, info, MAX_WHEEL_BYTES, f"artifact {name}"):
                        sha.update(chunk)
                    filename = Path(info.filename).name
                    self.archives[filename] = (archive, info.filename)
                    self.candidates.append(Candidate(filename, url=info.filename, sha256=sha.hexdigest()))

    def get(self, candidate: Candidate) -> bytes:
        archive, member = self.archives[candidate.filename]
        with zipfile.ZipFile(io.BytesIO(archive)) as zf:
            return b"".join(read_member(zf, zf.getinfo(member), MAX_WHEEL_BYTES, "artifact"))


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, where: str):
    """The member's bytes in chunks, refusing one that is (or unpacks to) more than limit bytes."""
    too_big = DownloadError(f"download: {shown(info.filename)} in {shown(where)} unpacks to more than {limit} bytes; "
                            "refused")
    if info.file_size > limit:
        raise too_big
    total = 0
    with zf.open(info) as member:
        while chunk := member.read(CHUNK):
            total += len(chunk)
            if total > limit:
                raise too_big
            yield chunk


class _Anchors(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links.append({k: v or "" for k, v in attrs})


def _metadata_hash(offered) -> str | None:
    """PEP 658/714: the .metadata file's sha256 from `core-metadata` (JSON dict, or HTML "sha256=...")."""
    if isinstance(offered, dict):
        return offered.get("sha256")
    if isinstance(offered, str) and offered.startswith("sha256="):
        return offered.removeprefix("sha256=")
    return None


def _yanked(value) -> str | None:
    """PEP 592: JSON `yanked` (false, true or a reason) / HTML `data-yanked` (present: yanked) -> reason or None."""
    if value is None or value is False:
        return None
    return value if isinstance(value, str) else ""


def index_files(index_url: str, project: str = PROJECT) -> list[dict]:
    """The files a PEP 503 (HTML) / PEP 691 (JSON) index lists for project: filename, url, sha256,
    requires_python, yanked (PEP 592) and the PEP 658 metadata offer (has_metadata, metadata_sha256)."""
    page_url = f"{index_url.rstrip('/')}/{project}/"
    body, content_type = fetch(page_url, JSON_ACCEPT)
    files = []
    if "json" in content_type:
        for f in json.loads(body)["files"]:
            meta = f.get("core-metadata") or f.get("dist-info-metadata")
            files.append({"filename": f["filename"], "url": urllib.parse.urljoin(page_url, f["url"]),
                          "sha256": f["hashes"].get("sha256"), "requires_python": f.get("requires-python"),
                          "yanked": _yanked(f.get("yanked")), "has_metadata": bool(meta),
                          "metadata_sha256": _metadata_hash(meta)})
    else:
        parser = _Anchors()
        parser.feed(body.decode())
        for link in parser.links:
            url, _, fragment = urllib.parse.urljoin(page_url, link["href"]).partition("#")
            meta = link.get("data-core-metadata") or link.get("data-dist-info-metadata")
            files.append({"filename": urllib.parse.unquote(url.rsplit("/", 1)[-1]), "url": url,
                          "sha256": fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None,
                          "requires_python": link.get("data-requires-python"),
                          "yanked": link.get("data-yanked"),  # the attribute's presence is what counts
                          "has_metadata": bool(meta) and meta != "false", "metadata_sha256": _metadata_hash(meta)})
    return files


class IndexSource:
    """A PEP 503 / PEP 691 simple index (PEP 658 metadata used when offered, checked against its hash)."""

    def __init__(self, index_url: str, target: Target):
        self.candidates = []
        for f in index_files(index_url, target.project):
            candidate = Candidate(f["filename"], url=f["url"], sha256=f["sha256"],
                                  requires_python=f["requires_python"] or None, yanked=f["yanked"])
            candidate.reasons = reject_reasons(candidate, target)
            if f["has_metadata"] and not candidate.reasons:  # only files that could be chosen are asked about
                self._read_metadata(candidate, f["metadata_sha256"], target)
            self.candidates.append(candidate)

    @staticmethod
    def _read_metadata(candidate: Candidate, expected: str | None, target: Target) -> None:
        data = fetch(candidate.url + ".metadata", limit=MAX_METADATA_BYTES)[0]
        if expected and hashlib.sha256(data).hexdigest() != expected.lower():
            candidate.reasons.append("its .metadata file does not match the sha256 the index gives for it")
            return
        metadata = decode_metadata(data, candidate.filename)
        candidate.reasons += identity_problems(metadata, candidate, target)
        candidate.requires_torch = torch_requirement(metadata)

    def get(self, candidate: Candidate) -> bytes:
        return fetch(candidate.url, limit=MAX_WHEEL_BYTES)[0]


def decode_metadata(data: bytes, filename: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DownloadError(f"download: the METADATA of {shown(filename)} is not UTF-8") from None


def wheel_metadata(data: bytes, filename: str = "the wheel") -> str:
    """The METADATA text of a wheel (its bytes), read with a size bound; anything unreadable is a DownloadError."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            found = [i for i in zf.infolist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", i.filename)]
            if len(found) != 1:
                raise DownloadError(f"download: {shown(filename)} has {len(found)} .dist-info/METADATA files, "
                                    "not one")
            text = b"".join(read_member(zf, found[0], MAX_METADATA_BYTES, filename))
    except DownloadError:
        raise
    except Exception as error:  # noqa: BLE001 (zipfile, zlib: whatever a damaged archive makes them raise)
        raise DownloadError(f"download: {shown(filename)} is not a readable wheel ({type(error).__name__}: "
                            f"{shown(error)})"[:500]) from None
    return decode_metadata(text, filename)


def identity_problems(metadata: str, candidate: Candidate, target: Target) -> list[str]:
    """A file is ours only if its METADATA names our project and the version in its file name."""
    headers = names.metadata(metadata)
    name, version = headers["Name"] or "", headers["Version"] or ""
    problems = []
    if canonicalize_name(name) != canonicalize_name(target.project):
        problems.append(f"its METADATA names another project ({name!r})")
    try:
        same = Version(version) == candidate.version
    except InvalidVersion:
        same = False
    if not same:
        problems.append(f"its METADATA gives version {version!r}, its file name {candidate.version}")
    return problems


def download(source, target: Target, out_dir: Path) -> Path:
    candidates = source.candidates
    for c in candidates:
        c.reasons = c.reasons or reject_reasons(c, target)
    select_versions(candidates, target)
    for c in rank(candidates, target):
        if c.reasons:
            continue
        data = source.get(c)
        digest = hashlib.sha256(data).hexdigest()
        if c.sha256 is None:
            raise DownloadError(f"download: no SHA256 published for {shown(c.filename)}; refusing an unverified file")
        if digest != c.sha256.lower():
            raise DownloadError(f"download: SHA256 mismatch for {shown(c.filename)}: expected {shown(c.sha256)}, "
                                f"got {digest}; nothing was saved")
        metadata = wheel_metadata(data, c.filename)
        c.requires_torch, c.requires_python = torch_requirement(metadata), requires_python(metadata)
        c.reasons = identity_problems(metadata, c, target) or reject_reasons(c, target)
        if c.reasons:
            continue
        target_path = save(data, out_dir, c.filename)
        tag = c.filename[:-4].split("-", 2)[-1]
        yanked = f"\n  yanked ({shown(c.yanked) or 'no reason given'}), chosen as asked for exactly" \
            if c.yanked is not None else ""
        print(f"chose {shown(c.filename)} for {describe(target)}:\n"
              f"  tag {shown(tag)} is the best fit among {len(rank(candidates, target))} compatible file(s)\n"
              f"  requires torch{shown(c.requires_torch or ' (any)')}, Python {shown(c.requires_python or '(any)')}"
              f"{yanked}\n  sha256 {digest} verified\n  saved to {shown(target_path)}")
        return target_path
    lines = [f"download: no wheel fits {describe(target)}. Available:"]
    lines += [f"  {shown(c.filename)}: {shown('; '.join(c.reasons) or 'fits by tag but was not checked')}"
              for c in candidates]
    raise DownloadError("\n".join(lines))


def save(data: bytes, out_dir: Path, name: str) -> Path:
    """Write out_dir/name atomically (a .part file renamed); on any failure nothing is left behind."""
    if Path(name).name != name or name.startswith(".") or "\\" in name or not name.isprintable():
        raise DownloadError(f"download: refusing the file name {shown(name)!r} (not a plain file name)")
    tmp = None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, delete=False, prefix=".download-", suffix=".part") as tmp:
            tmp.write(data)
        os.replace(tmp.name, out_dir / name)  # a folder of that name in the way: IsADirectoryError
    except BaseException as error:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise DownloadError(f"download: cannot write {out_dir / name}: {error.strerror or error}") from None
        raise
    return out_dir / name


@dataclasses.dataclass(frozen=True)
class Where:
    """Where the verb looks: a GitHub release tag or Actions run of repo, or a simple index."""

    release: str | None = None
    run: str | None = None
    index: str | None = None
    repo: str | None = None

    def open(self, target: Target):
        if self.index:
            return IndexSource(self.index, target)
        if not self.repo:
            raise DownloadError("download: --release and --run need --repo OWNER/NAME")
        return ReleaseSource(self.repo, self.release) if self.release else RunSource(self.repo, self.run, target)


def run(where: Where, target: Target, out_dir: Path) -> Path:
    """The download verb: any malformed answer (JSON, page, metadata, specifier, archive) is one line.
    A release tag that is a version (v0.1.0) asks for exactly that version unless --version says otherwise."""
    if where.release and not target.version:
        try:
            target = dataclasses.replace(target, version=f"=={Version(where.release.removeprefix('v'))}")
        except InvalidVersion:
            pass
    try:
        target.specifier()
    except ValueError as error:
        raise DownloadError(f"download: --version: {error}") from None
    try:
        return download(where.open(target), target, out_dir)
    except DownloadError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, zipfile.BadZipFile) as error:
        message = f"download: malformed answer from the server: {type(error).__name__}: {error}"
        raise DownloadError(shown(message)[:300]) from None
