"""The names we gave up (`torch-segment` on PyPI is an unrelated project): none may remain in what we ship."""

import re
import tarfile
import zipfile
from pathlib import Path

OLD = re.compile(rb"torch[_-]segment(?![_-]ops)", re.IGNORECASE)
ALLOWED = b"unrelated project"  # the README's one-line note about the other project


def members(archive: Path) -> dict[str, bytes]:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            return {name: zf.read(name) for name in zf.namelist()}
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() if m.isfile() else b"" for m in tar.getmembers()}


def old_names(archive: Path) -> list[str]:
    """Every member name or line of archive that still uses an old name."""
    hits = []
    for name, data in members(archive).items():
        if OLD.search(name.encode()):
            hits.append(name)
        hits += [f"{name}: {line[:100]!r}" for line in data.splitlines() if OLD.search(line) and ALLOWED not in line]
    return hits
