"""Which wheel fits a target (platform, CPython, torch): the tag logic pip
uses (`packaging.tags`, abi3 included) plus the torch range in the wheel's
metadata. Pure functions, no I/O."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

from packaging import tags
from packaging.requirements import Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from ..declaration import names

PROJECT = "torch-segment-ops"
LEGACY_MANYLINUX = {"manylinux2014": (2, 17), "manylinux2010": (2, 12), "manylinux1": (2, 5)}


def platform_aliases() -> dict[str, str]:
    """User-facing platform names (ci/declaration/matrix.toml's) -> the platform tag our wheels use."""
    from ..declaration import matrix

    return {p.name: p.wheel_platform for p in matrix.platforms()}


@dataclass(frozen=True)
class Target:
    platform: str  # a platform tag (manylinux_2_28_x86_64, macosx_14_0_arm64, ...) or "native"
    python: str  # "3.12"
    torch: str | None = None  # "2.13.1"; None: any
    version: str | None = None  # a version specifier of our project ("==0.1.0", ">=0.2"); None: any
    pre: bool = False  # pre-releases allowed (pip's --pre); without it only when nothing final fits
    project: str = PROJECT

    def specifier(self) -> SpecifierSet:
        """The version request; a bare version means exactly that version ("0.1.0" -> "==0.1.0")."""
        text = (self.version or "").strip()
        if text and text[0].isdigit():
            text = f"=={text}"
        try:
            return SpecifierSet(text)
        except InvalidSpecifier:
            raise ValueError(f"not a version specifier: {self.version!r}") from None

    def pins(self, version: Version) -> bool:
        """Whether the request names exactly this version (== or ===): the only case a yanked file may be chosen."""
        return any(s.operator in ("==", "===") and "*" not in s.version and s.contains(version, prereleases=True)
                   for s in self.specifier())

    def platforms(self) -> list[str]:
        """Platform tags this target accepts, most specific first (as pip orders them)."""
        plat = platform_aliases().get(self.platform, self.platform)
        if plat == "native":
            return list(dict.fromkeys(t.platform for t in tags.sys_tags()))
        if m := re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", plat):
            major, minor, arch = int(m[1]), int(m[2]), m[3]
            found = [f"manylinux_{major}_{v}_{arch}" for v in range(minor, -1, -1)]
            return found + [legacy + f"_{arch}" for legacy, (ma, mi) in LEGACY_MANYLINUX.items()
                            if (ma, mi) <= (major, minor)]
        if m := re.fullmatch(r"macosx_(\d+)_(\d+)_(\w+)", plat):
            return list(tags.mac_platforms((int(m[1]), int(m[2])), m[3]))
        return [plat]  # e.g. musllinux_1_2_x86_64 or linux_x86_64: only itself

    def tags(self) -> list[tags.Tag]:
        version = tuple(int(p) for p in self.python.split("."))
        platforms = self.platforms()
        return [*tags.cpython_tags(version, platforms=platforms), *tags.compatible_tags(version, platforms=platforms)]


@dataclass
class Candidate:
    filename: str
    url: str = ""
    sha256: str | None = None
    requires_torch: str | None = None  # from the metadata, when known
    requires_python: str | None = None
    yanked: str | None = None  # PEP 592: None, or the reason given ("" when none)
    reasons: list[str] = field(default_factory=list)

    @property
    def version(self) -> Version | None:
        try:
            return parse_wheel_filename(self.filename)[1]
        except InvalidWheelFilename:
            return None


def tag_rank(filename: str, target: Target) -> int | None:
    """Position of the wheel's best tag in the target's preference list, or None."""
    try:
        _, _, _, wheel_tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    order = {tag: i for i, tag in enumerate(target.tags())}
    ranks = [order[t] for t in wheel_tags if t in order]
    return min(ranks) if ranks else None


def torch_requirement(metadata: str) -> str | None:
    """The specifier of the Requires-Dist on torch in a METADATA text (None: no such requirement)."""
    reqs = [Requirement(r) for r in names.metadata(metadata).get_all("Requires-Dist") or []]
    torch = [r for r in reqs if canonicalize_name(r.name) == "torch"]
    return str(torch[0].specifier) if torch else None


def requires_python(metadata: str) -> str | None:
    return names.metadata(metadata)["Requires-Python"]


def reject_reasons(candidate: Candidate, target: Target) -> list[str]:
    """Why this wheel does not fit the target (empty: it fits), versions aside (see select_versions)."""
    if not candidate.filename.endswith(".whl"):
        return ["not a wheel"]
    try:
        project = parse_wheel_filename(candidate.filename)[0]
    except InvalidWheelFilename as error:
        return [f"not a valid wheel file name ({error})"]
    if project != canonicalize_name(target.project):
        return [f"a file of another project ({project})"]
    if candidate.yanked is not None and not target.pins(candidate.version):
        return ["yanked" + (f" ({candidate.yanked})" if candidate.yanked else "") + "; only chosen when its version "
                "is asked for exactly (--version ==X)"]
    if tag_rank(candidate.filename, target) is None:
        tag = candidate.filename[:-4].split("-", 2)[-1]
        return [f"tag {tag} does not fit {target.platform} / CPython {target.python}"]
    reasons = []
    if candidate.requires_python and Version(target.python) not in SpecifierSet(candidate.requires_python):
        reasons.append(f"requires Python {candidate.requires_python}")
    if target.torch and candidate.requires_torch is not None:
        wanted = Version(target.torch).public
        if not SpecifierSet(candidate.requires_torch).contains(wanted, prereleases=True):
            reasons.append(f"requires torch{candidate.requires_torch}, not {target.torch}")
    return reasons


def select_versions(candidates: list[Candidate], target: Target) -> None:
    """pip's version rule over the candidates that fit otherwise: the requested specifier, and
    pre-releases only with --pre, when the specifier names one, or when no final release fits."""
    fitting = [c for c in candidates if not c.reasons]
    specifier = target.specifier()
    allowed = set(specifier.filter({c.version for c in fitting}, prereleases=True if target.pre else None))
    for c in fitting:
        if c.version in allowed:
            continue
        if c.version.is_prerelease and specifier.contains(c.version, prereleases=True):
            c.reasons.append(f"{c.version} is a pre-release (use --pre to allow it)")
        else:
            c.reasons.append(f"version {c.version} was not asked for ({specifier or 'any'})")


def rank(candidates: list[Candidate], target: Target) -> list[Candidate]:
    """Candidates whose tags fit, best first (pip's order: tag priority, then newer version)."""
    fitting = [c for c in candidates if c.filename.endswith(".whl") and tag_rank(c.filename, target) is not None]
    newest_first = sorted(fitting, key=lambda c: parse_wheel_filename(c.filename)[1], reverse=True)
    return sorted(newest_first, key=lambda c: tag_rank(c.filename, target))  # stable: ties stay newest first


def describe(target: Target) -> str:
    torch = f", torch {target.torch}" if target.torch else ""
    version = f", version {target.specifier()}" if target.version else ""
    return f"{platform_aliases().get(target.platform, target.platform)}, CPython {target.python}{torch}{version}"


def default_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"
