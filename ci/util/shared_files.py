"""Identical files among the cached environments, hard-linked into one file.

A torch release ships the same libtorch_cuda.so (~0.5 GB) in its wheel for every CPython, and the
CUDA libraries reach the envs by several routes (uv's cache, pip from local disk, uv --target into a
rootfs). Copies are separate files to the kernel: a test run that imports torch 2.15 under five
CPythons reads that library from disk five times and keeps five copies in the page cache, which is
what a warm run waits on (CONTRIBUTING.md, "What the disk does in a warm run"). After one pass each
content is one file. Only finished envs take part (a stamp beside or inside them), and only files of
at least MIN_SIZE; a file is replaced by an atomic rename, so a process reading it keeps its copy.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
from collections import defaultdict
from pathlib import Path

from .envs import cache_dir, log

MIN_SIZE = 1 << 20
STATE = "shared-files.json"  # in cache_dir(): the envs the last pass saw


def ready_roots(cache: Path) -> dict[str, int]:
    """The finished env folders under cache, each with its stamp's mtime (a rebuilt env is a new one)."""
    found = {}
    for path in sorted((cache / "envs").glob("*/.torch-segment-ops-spec")):
        found[str(path.parent)] = path.stat().st_mtime_ns
    for folder in (cache / "newest" / "free-threaded", cache / "newest" / "sid-rootfs" / "opt"):
        for path in sorted(folder.glob(".*.spec")):  # ci/lanes/newest.py's uv_install stamps
            root = path.with_name(path.name[1:-len(".spec")])
            if root.is_dir() and not root.name.startswith("run-"):
                found[str(root)] = path.stat().st_mtime_ns
    return found


def share_once(cache: Path | None = None) -> int:
    """Link identical files among the ready envs, unless the last pass saw the same envs; share's bytes.
    An optimisation: a pass that fails says why and lets the run go on."""
    cache = cache or cache_dir()
    if not cache.is_dir():
        return 0
    with (cache / (STATE + ".lock")).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # lanes in other processes may start their own pass
        roots = ready_roots(cache)
        state_file = cache / STATE
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        if state.get("roots") == roots:
            return 0
        log(f"hard-linking identical files among {len(roots)} cached envs (once per change of the envs) ...")
        digests = state.get("digests", {})
        try:
            saved = share([Path(r) for r in roots], digests=digests)
        except OSError as err:
            log(f"... skipped: {err}")
            return 0
        log(f"... {saved / 2**30:.2f} GiB of copies now links to one file")
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"roots": roots, "digests": digests}))
        os.replace(tmp, state_file)
        return saved


def share(roots: list[Path], min_size: int = MIN_SIZE, digests: dict[str, str] | None = None) -> int:
    """Make every set of same-content files (same size, mode and bytes) under roots one inode; the bytes
    of the paths relinked (what a run no longer reads twice). digests: sha256 by file identity (ident),
    read and extended, so that a later pass hashes only files it has not seen."""
    digests = {} if digests is None else digests
    groups = big_files(roots, min_size)
    saved = 0
    for paths in same_content(groups, digests):
        keep = max(paths, key=lambda p: (p.stat().st_nlink, -len(str(p))))  # the file the most paths hold already
        for path in paths:
            if not path.samefile(keep):
                saved += path.stat().st_size
                link(keep, path)
    live = {ident(path.stat()) for paths in groups.values() for path in paths}
    for key in set(digests) - live:  # files gone since
        del digests[key]
    return saved


def big_files(roots: list[Path], min_size: int) -> dict[tuple[int, int, int], list[Path]]:
    """Regular files of at least min_size under roots (symlinks not followed), by (device, size, mode)."""
    groups = defaultdict(list)
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                path = Path(folder, name)
                st = path.lstat()
                if st.st_size >= min_size and stat.S_ISREG(st.st_mode):
                    groups[(st.st_dev, st.st_size, st.st_mode)].append(path)
    return groups


def ident(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def same_content(groups: dict[tuple[int, int, int], list[Path]], digests: dict[str, str]) -> list[list[Path]]:
    """The paths of each content held by more than one inode (each inode hashed once)."""
    out = []
    for paths in groups.values():
        if len({path.stat().st_ino for path in paths}) < 2:
            continue
        by_digest = defaultdict(list)
        for path in paths:
            key = ident(path.stat())
            if key not in digests:
                with path.open("rb") as f:
                    digests[key] = hashlib.file_digest(f, "sha256").hexdigest()
            by_digest[digests[key]].append(path)
        out += [same for same in by_digest.values() if len({p.stat().st_ino for p in same}) > 1]
    return out


def link(keep: Path, path: Path) -> None:
    """path becomes a hard link to keep, atomically: a temporary link beside it, renamed over it."""
    tmp = path.with_name(f".{path.name}.shared-tmp")
    tmp.unlink(missing_ok=True)
    os.link(keep, tmp)
    os.replace(tmp, path)
