"""Debian packages, fetched and unpacked into a folder without installing them: the CUDA 12 toolkit
(ci/requirements/cuda12.toml) and the stand-in image's mirror. Each .deb is pinned by its SHA-256,
so the mirror is only a place to fetch from: the one apt uses on this machine, else debootstrap's
default, else $TORCH_SEGMENT_OPS_DEBIAN_MIRROR (which also overrides both). No registry host is
written in the project.

Standard library only: cibuildwheel's before-build runs it in the build environment.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ..errors import PipelineError

MIRROR_VARIABLE = "TORCH_SEGMENT_OPS_DEBIAN_MIRROR"
DEBOOTSTRAP = Path("/usr/sbin/debootstrap")
CHUNK = 1 << 20


def mirror() -> str:
    """Where Debian packages come from here (see the module's docstring)."""
    if os.environ.get(MIRROR_VARIABLE):
        return os.environ[MIRROR_VARIABLE].rstrip("/")
    found = default_mirror()
    if not found:
        raise PipelineError(f"no Debian mirror: apt's sources name none and debootstrap is not installed; set "
                            f"{MIRROR_VARIABLE} to one (the workflows pass the repository variable DEBIAN_MIRROR)")
    return found.rstrip("/")


def default_mirror() -> str | None:
    """The Debian archive this machine already knows: apt's, else debootstrap's default."""
    return apt_mirror() or debootstrap_mirror()


def apt_mirror(etc: Path = Path("/etc/apt")) -> str | None:
    """The first Debian archive (a URI ending in /debian) in apt's sources, one-line or deb822."""
    for path in [*etc.glob("sources.list"), *sorted(etc.glob("sources.list.d/*"))]:
        for line in path.read_text(errors="replace").splitlines():
            words = line.split()
            uris = words[1:] if words[:1] == ["URIs:"] else words[1:] if words[:1] == ["deb"] else []
            for uri in uris:
                if uri.startswith(("http://", "https://")) and uri.rstrip("/").endswith("/debian"):
                    return uri
    return None


def debootstrap_mirror(script: Path = DEBOOTSTRAP) -> str | None:
    """debootstrap's DEF_MIRROR, when it is a Debian archive (Ubuntu's debootstrap defaults to Ubuntu's)."""
    if not script.is_file():
        return None
    found = re.search(r'^DEF_MIRROR="([^"]+/debian)/?"', script.read_text(errors="replace"), re.MULTILINE)
    return found[1] if found else None


def fetch(url: str, dest: Path, sha256: str, size: int) -> Path:
    """dest holding url's bytes, checked against the pin (kept when already there and intact); written
    under a temporary name and renamed, so no half-written or unverified file is ever left at dest."""
    if dest.is_file() and dest.stat().st_size == size and file_sha256(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest, got = hashlib.sha256(), 0
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=dest.name + ".", delete=False) as out:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (http mirrors: the hash decides)
                while chunk := response.read(min(CHUNK, size + 1 - got)):
                    got += len(chunk)
                    if got > size:
                        break
                    digest.update(chunk)
                    out.write(chunk)
        except OSError as error:
            Path(out.name).unlink()
            raise PipelineError(f"cannot fetch {url}: {error}") from error
    if got != size or digest.hexdigest() != sha256:
        Path(out.name).unlink()
        raise PipelineError(f"{url}: {'more than ' if got > size else ''}{got} bytes with SHA-256 "
                            f"{digest.hexdigest()}, pinned {size} bytes with {sha256}")
    os.replace(out.name, dest)
    return dest


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def ar_members(deb: Path) -> dict[str, tuple[int, int]]:
    """The members of a .deb (an ar archive): name -> (offset, size)."""
    members = {}
    with deb.open("rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise PipelineError(f"{deb.name}: not a Debian package (no ar header)")
        while header := f.read(60):
            if len(header) < 60 or header[58:60] != b"`\n":
                raise PipelineError(f"{deb.name}: a damaged ar header")
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            members[name] = (f.tell(), size)
            f.seek(size + size % 2, os.SEEK_CUR)
    return members


def unpack(deb: Path, place: Callable[[PurePosixPath], Path | None]) -> int:
    """Files and same-folder links of deb's data archive written where place() says (None: skipped);
    returns how many were written."""
    members = ar_members(deb)
    data = [name for name in members if name.startswith("data.tar")]
    if not data:
        raise PipelineError(f"{deb.name}: no data archive")
    offset, size = members[data[0]]
    written = 0
    with deb.open("rb") as f:
        f.seek(offset)
        with tarfile.open(fileobj=_Window(f, size), mode="r|*") as archive:
            for member in archive:
                name = PurePosixPath(os.path.normpath(member.name.removeprefix("./") or "."))
                if name.is_absolute() or ".." in name.parts:
                    raise PipelineError(f"{deb.name}: a member outside the package: {member.name!r}")
                target = place(name)
                if target is None or not (member.isfile() or member.issym()):
                    continue
                if member.issym() and "/" in member.linkname:
                    continue  # links across folders (compatibility paths) are not needed
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_symlink() or target.exists():
                    target.unlink()
                if member.issym():
                    target.symlink_to(member.linkname)
                else:
                    with archive.extractfile(member) as src, target.open("wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
                    target.chmod(0o755 if member.mode & 0o111 else 0o644)
                written += 1
    return written


class _Window:
    """A read-only view of size bytes of f from its current position (tarfile's stream mode reads it)."""

    def __init__(self, f, size: int):
        self.f, self.left = f, size

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        chunk = self.f.read(n)
        self.left -= len(chunk)
        return chunk
