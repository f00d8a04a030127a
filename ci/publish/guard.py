"""`release-guard`: publish only under a name that is ours.

Before the release workflow uploads, the distribution name must be either
free on the target index or already ours: every existing release there must
name our repository (pyproject's `[project.urls] Source`) in its metadata
(Project-URL or Home-page). Anything else - an unrelated project of that
name, a release we cannot read, an empty project page, the version we are
about to publish already being there - stops the release with one message.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tarfile
import zipfile

import tomllib
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    canonicalize_version,
    parse_sdist_filename,
    parse_wheel_filename,
)

from ..declaration import names
from ..errors import CheckFailed
from ..util.envs import ROOT
from .download import index_files, wheel_metadata
from .http_client import DownloadError, fetch
from .release import package_version

METADATA_LIMIT = 1 << 20  # a METADATA / PKG-INFO file
ARCHIVE_LIMIT = 512 << 20  # a wheel or sdist read only when the index offers no PEP 658 metadata


class GuardError(CheckFailed):
    """The release must not go on; the message says why."""


def project() -> tuple[str, str]:
    """(distribution name, source repository URL) as pyproject.toml declares them."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return meta["name"], meta["urls"]["Source"]


def repo_key(url: str) -> str | None:
    """'owner/name' (lower case) of a GitHub repository URL, else None."""
    match = re.match(r"(?:git\+)?(?:https?|git|ssh)://(?:[^@/]+@)?(?:www\.)?github\.com[/:]([^/]+)/([^/#?]+)",
                     url.strip(), re.IGNORECASE)
    if not match:
        return None
    return f"{match[1]}/{match[2].removesuffix('.git')}".lower()


def default_index() -> str:
    """The index pip uses here: PIP_INDEX_URL or pip's configuration, else pip's built-in default."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(".index-url"):
            return value.strip().strip("'\"")
    try:
        from pip._internal.models.index import PyPI  # pip's default, so no host is written here
    except ImportError:
        raise GuardError("release-guard: pip is not available to name the default index; pass --index-url") from None
    return PyPI.simple_url


def version_of(filename: str) -> str | None:
    try:
        if filename.endswith(".whl"):
            return str(parse_wheel_filename(filename)[1])
        return str(parse_sdist_filename(filename)[1])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None


def read_metadata(file: dict) -> str:
    """The core metadata of one index file: PEP 658 if offered, else from inside the archive."""
    if file["has_metadata"]:
        return fetch(file["url"] + ".metadata", limit=METADATA_LIMIT)[0].decode("utf-8", "replace")
    data = fetch(file["url"], limit=ARCHIVE_LIMIT)[0]
    try:
        if file["filename"].endswith(".whl"):
            return wheel_metadata(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = next((m for m in tar.getmembers() if re.fullmatch(r"[^/]+/PKG-INFO", m.name) and m.isfile()), None)
            return tar.extractfile(member).read(METADATA_LIMIT).decode("utf-8", "replace") if member else ""
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, ValueError):  # unreadable: names nothing
        return ""


def sources(metadata: str) -> list[str]:
    """The URLs a release names: every Project-URL and the Home-page."""
    headers = names.metadata(metadata)
    urls = [value.partition(",")[2].strip() for value in headers.get_all("Project-URL") or []]
    return urls + [headers["Home-page"].strip()] if headers["Home-page"] else urls


def check(index_url: str, name: str, source: str, version: str) -> str:
    """A one-line report if the release may go on; GuardError otherwise."""
    ours = repo_key(source)
    where = f"{name} on {index_url}"
    try:
        files = index_files(index_url, canonicalize_name(name))
    except DownloadError as error:
        if error.status == 404:
            return f"release-guard: ok: {where} is free; {version} will be its first release"
        raise GuardError(f"release-guard: cannot tell whether {where} is ours: {error}") from None
    if not files:
        raise GuardError(f"release-guard: {where} exists but lists no files, so it cannot be shown to be ours "
                         f"({source}); refusing to publish there")
    by_version: dict[str, dict] = {}
    for file in files:
        by_version.setdefault(version_of(file["filename"]) or file["filename"], file)
    foreign = []
    for release, file in sorted(by_version.items()):
        try:
            named = sources(read_metadata(file))
        except DownloadError as error:
            raise GuardError(f"release-guard: cannot read the metadata of {where} {release}: {error}") from None
        if ours not in {repo_key(url) for url in named}:
            foreign.append(f"{release} ({', '.join(named) or 'no source URL'})")
    if foreign:
        raise GuardError(f"release-guard: {where} is not ours: release(s) {'; '.join(foreign)} do not name {source} "
                         "as their source. Publishing there would mix our wheels into another project: choose "
                         "another name in pyproject.toml.")
    if canonicalize_version(version) in {canonicalize_version(v) for v in by_version}:
        raise GuardError(f"release-guard: {where} already has version {version}; bump "
                         "torch_segment_ops/_version.py and tag again")
    return f"release-guard: ok: {where} has {len(by_version)} release(s), all from {source}; {version} is new"


def run(index_url: str | None, github_repository: str | None) -> str:
    """Check this project's name against index_url (default: pip's) for its next version."""
    name, source = project()
    if github_repository and repo_key(f"https://github.com/{github_repository}") != repo_key(source):
        raise GuardError(f"release-guard: this release runs in {github_repository}, but pyproject.toml names "
                         f"{source} as the project's source; releases come only from that repository")
    return check(index_url or default_index(), name, source, package_version())
