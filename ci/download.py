"""`download`: fetch the one wheel that fits a target (platform, CPython,
torch) from a GitHub release, a GitHub Actions run or a package index,
verify its SHA256, and say what was chosen and why (or, when nothing fits,
what exists and why each was rejected).

Public repositories work anonymously; a token in GH_TOKEN / GITHUB_TOKEN is
sent when set (private repositories, and Actions artifacts, which GitHub only
serves to signed-in clients)."""

from __future__ import annotations

import hashlib
import html.parser
import http.client
import io
import json
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

from . import names
from .errors import PipelineError
from .pick import Candidate, Target, describe, rank, reject_reasons, requires_python, tag_rank, torch_requirement

PROJECT = "torch-segment-ops"
JSON_ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"


class DownloadError(PipelineError):
    """A clean, one-message failure (non-zero exit); status: the HTTP status, if one came."""

    status: int | None = None


def github_api() -> str:
    return os.environ.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")


def token() -> str | None:
    return os.environ.get("GH_TOKEN") or os.environ.get("GITHUB_TOKEN")


MAX_BYTES = 1 << 30  # per response: far above any wheel or artifact of ours
DEADLINE_S = 600.0  # per response, whole transfer: a server dripping bytes cannot hold us forever
CHUNK = 1 << 16


def check_url(url: str) -> None:
    """https only; plain http only to a loopback address (the tests' fake servers)."""
    parts = urllib.parse.urlsplit(url)
    loopback = parts.hostname in ("localhost", "::1") or (parts.hostname or "").startswith("127.")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise DownloadError(f"download: refusing {url}: only https (or http to loopback) is allowed")


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects (GitHub sends every asset and artifact to a storage host), but only to
    allowed URLs, and never carry the token to another host."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(newurl)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_Redirects)


def fetch(url: str, accept: str | None = None, auth: bool = False, limit: int | None = None) -> tuple[bytes, str]:
    """GET url -> (body, content type); any failure, a body over limit (default MAX_BYTES) bytes or a
    transfer over DEADLINE_S seconds becomes a DownloadError naming the URL. The token goes only to
    the GitHub API host, and never across a redirect to another host."""
    check_url(url)
    headers = {"User-Agent": "torch-segment-ops-ci"}
    if accept:
        headers["Accept"] = accept
    api_host = urllib.parse.urlsplit(github_api()).netloc
    if auth and token() and urllib.parse.urlsplit(url).netloc == api_host:
        headers["Authorization"] = f"Bearer {token()}"
    limit = MAX_BYTES if limit is None else limit
    deadline = time.monotonic() + DEADLINE_S
    try:
        with _OPENER.open(urllib.request.Request(url, headers=headers), timeout=60) as response:
            content_type = response.headers.get("Content-Type", "")
            body = bytearray()
            while chunk := response.read1(CHUNK):  # what has arrived: the deadline is checked as bytes drip
                body += chunk
                if len(body) > limit:
                    raise DownloadError(f"download: {url} sent more than {limit} bytes; stopped")
                if time.monotonic() > deadline:
                    raise DownloadError(f"download: {url} took longer than {DEADLINE_S:.0f} s; stopped")
    except urllib.error.HTTPError as error:
        hint = " (set GH_TOKEN for private repositories and Actions artifacts)" if error.code in (401, 403, 404) else ""
        failure = DownloadError(f"download: {url} answered HTTP {error.code} {error.reason}{hint}")
        failure.status = error.code
        raise failure from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(f"download: could not reach {url}: {reason}") from None
    return bytes(body), content_type


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

    def _get(self, asset: dict) -> bytes:
        if token():  # the API URL serves private assets too
            return fetch(asset["url"], "application/octet-stream", auth=True)[0]
        return fetch(asset["browser_download_url"])[0]

    def get(self, candidate: Candidate) -> bytes:
        return self._get(self.by_name[candidate.url])


class RunSource:
    """Wheels inside the `wheels-*` artifacts of a workflow run."""

    def __init__(self, repo: str, run_id: str, target: Target):
        url = f"{github_api()}/repos/{repo}/actions/runs/{run_id}/artifacts?per_page=100"
        artifacts = json.loads(fetch(url, "application/vnd.github+json", auth=True)[0])["artifacts"]
        self.files: dict[str, bytes] = {}
        self.candidates = []
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
                raise DownloadError(f"download: artifact {name} does not match its sha256 digest {expected}")
            with zipfile.ZipFile(io.BytesIO(archive)) as zf:
                for member in zf.namelist():
                    if member.endswith(".whl"):
                        data = zf.read(member)
                        self.files[Path(member).name] = data
                        sha = hashlib.sha256(data).hexdigest()  # the archive's digest covers it
                        self.candidates.append(Candidate(Path(member).name, url=member, sha256=sha))

    def get(self, candidate: Candidate) -> bytes:
        return self.files[candidate.filename]


class _Anchors(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.links.append({k: v or "" for k, v in attrs})


def index_files(index_url: str, project: str = PROJECT) -> list[dict]:
    """The files a PEP 503 (HTML) / PEP 691 (JSON) index lists for project: filename, url,
    sha256, requires_python and whether PEP 658 metadata is offered (url + ".metadata")."""
    page_url = f"{index_url.rstrip('/')}/{project}/"
    body, content_type = fetch(page_url, JSON_ACCEPT)
    files = []
    if "json" in content_type:
        for f in json.loads(body)["files"]:
            meta = f.get("core-metadata") or f.get("dist-info-metadata")
            files.append({"filename": f["filename"], "url": urllib.parse.urljoin(page_url, f["url"]),
                          "sha256": f["hashes"].get("sha256"), "requires_python": f.get("requires-python"),
                          "has_metadata": bool(meta)})
    else:
        parser = _Anchors()
        parser.feed(body.decode())
        for link in parser.links:
            url, _, fragment = urllib.parse.urljoin(page_url, link["href"]).partition("#")
            meta = link.get("data-core-metadata") or link.get("data-dist-info-metadata")
            files.append({"filename": urllib.parse.unquote(url.rsplit("/", 1)[-1]), "url": url,
                          "sha256": fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None,
                          "requires_python": link.get("data-requires-python"),
                          "has_metadata": bool(meta) and meta != "false"})
    return files


class IndexSource:
    """A PEP 503 / PEP 691 simple index (PEP 658 metadata used when offered)."""

    def __init__(self, index_url: str):
        self.candidates = [
            self._candidate(f["filename"], f["url"], f["sha256"], f["requires_python"], f["has_metadata"])
            for f in index_files(index_url)
        ]

    @staticmethod
    def _candidate(filename, url, sha, python, has_metadata) -> Candidate:
        candidate = Candidate(filename, url=url, sha256=sha, requires_python=python or None)
        if has_metadata and filename.endswith(".whl"):
            metadata = fetch(url + ".metadata")[0].decode()
            candidate.requires_torch = torch_requirement(metadata)
        return candidate

    def get(self, candidate: Candidate) -> bytes:
        return fetch(candidate.url)[0]


def wheel_metadata(data: bytes) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        (name,) = [n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        return zf.read(name).decode()


def download(source, target: Target, out_dir: Path) -> Path:
    candidates = source.candidates
    for c in candidates:
        c.reasons = c.reasons or reject_reasons(c, target)
    for c in rank(candidates, target):
        if c.reasons:
            continue
        data = source.get(c)
        digest = hashlib.sha256(data).hexdigest()
        if c.sha256 is None:
            raise DownloadError(f"download: no SHA256 published for {c.filename}; refusing an unverified file")
        if digest != c.sha256.lower():
            raise DownloadError(f"download: SHA256 mismatch for {c.filename}: expected {c.sha256}, got {digest}; "
                                "nothing was saved")
        metadata = wheel_metadata(data)
        c.requires_torch, c.requires_python = torch_requirement(metadata), requires_python(metadata)
        c.reasons = reject_reasons(c, target)
        if c.reasons:
            continue
        target_path = save(data, out_dir, c.filename)
        tag = c.filename[:-4].split("-", 2)[-1]
        print(f"chose {c.filename} for {describe(target)}:\n"
              f"  tag {tag} is the best fit among {len(rank(candidates, target))} compatible file(s)\n"
              f"  requires torch{c.requires_torch or ' (any)'}, Python {c.requires_python or '(any)'}\n"
              f"  sha256 {digest} verified\n  saved to {target_path}")
        return target_path
    lines = [f"download: no wheel fits {describe(target)}. Available:"]
    lines += [f"  {c.filename}: {'; '.join(c.reasons) or 'fits by tag but was not checked'}" for c in candidates]
    raise DownloadError("\n".join(lines))


def save(data: bytes, out_dir: Path, name: str) -> Path:
    """Write out_dir/name atomically (a .part file renamed); on any failure nothing is left behind."""
    if Path(name).name != name or name.startswith(".") or "\\" in name:
        raise DownloadError(f"download: refusing the file name {name!r} (not a plain file name)")
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.NamedTemporaryFile(dir=out_dir, delete=False, prefix=".download-", suffix=".part")
    try:
        with tmp:
            tmp.write(data)
        os.replace(tmp.name, out_dir / name)
    except BaseException:
        Path(tmp.name).unlink(missing_ok=True)
        raise
    return out_dir / name


def run(args, target: Target, out_dir: Path) -> Path:
    """The download verb: any malformed answer (JSON, page, metadata, specifier, archive) is one line."""
    try:
        return download(open_source(args, target), target, out_dir)
    except DownloadError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, zipfile.BadZipFile) as error:
        raise DownloadError(f"download: malformed answer from the server: {type(error).__name__}: {error}"[:300]) \
            from None


def open_source(args, target: Target):
    if args.index:
        return IndexSource(args.index)
    if not args.repo:
        raise DownloadError("download: --release and --run need --repo OWNER/NAME")
    return ReleaseSource(args.repo, args.release) if args.release else RunSource(args.repo, args.run, target)
