"""Reads ci/declaration/matrix.toml and derives every list from it: build cells
(platform x torch in per-torch mode, one per platform in stable mode), verify
cells (platform x CPython x torch), cibuildwheel selectors, the Requires-Dist
of the final wheels and the support table."""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, dataclass, fields
from functools import cache
from pathlib import Path

from ..errors import ConfigurationError, PipelineError
from . import names

try:
    import tomllib
except ImportError:  # CPython 3.10 (cibuildwheel's build env there has tomli: ci/requirements/build.txt)
    import tomli as tomllib

MATRIX = Path(__file__).with_name("matrix.toml")


SOURCE = "ci/declaration/matrix.toml"
STABLE, PER_TORCH = "stable", "per-torch"
SCOPE_RULES = ("newest", "all", "next")
# The index torch's next release comes from in a `next` scope: PyTorch's nightly or test CPU index, given
# by the workflows from the repository variable TORCH_NEXT_INDEX (no registry host is written here).
NEXT_INDEX_VARIABLE = "TORCH_SEGMENT_OPS_NEXT_INDEX"


@dataclass(frozen=True)
class Platform:
    name: str  # e.g. linux-x86_64
    wheel_platform: str  # the platform tag CI's wheels carry
    runner: str
    cibw_platform: str
    arch: str
    torch_index: str
    manylinux_image: str = ""
    deployment_target: str = ""
    cuda: tuple[str, ...] = ()  # CUDA majors built into this platform's wheel (stable mode)


@dataclass(frozen=True)
class Torch:
    minor: str  # "2.13"
    pin: str  # "2.13.0"
    python: tuple[str, ...]  # every supported CPython, oldest first (declared as an inclusive range)
    cuda: str = ""  # torch.version.cuda of its default linux x86_64 build on PyPI
    free_threaded: tuple[str, ...] = ()  # CPythons whose free-threaded build torch publishes wheels for
    free_threaded_pin: tuple[tuple[str, str], ...] = ()  # (CPython, torch release) where `pin` has none

    def pin_for(self, python: str) -> str:
        """The torch release a cell of this CPython installs ("3.13t": free-threaded)."""
        return dict(self.free_threaded_pin).get(python.removesuffix("t"), self.pin) if python.endswith("t") \
            else self.pin

    @property
    def label(self) -> str:
        """Local version label of a per-torch wheel: 2.13 -> pt213."""
        return names.torch_label(self.minor)


@dataclass(frozen=True)
class Cuda:
    major: str  # "13"
    archs: tuple[str, ...]  # compute capabilities with machine code: "7.5", ...
    ptx: str  # the compute capability whose PTX is embedded too
    torch: str  # the first torch minor whose default Linux build on PyPI uses this major

    @property
    def elf_archs(self) -> tuple[str, ...]:
        """The names cuobjdump --list-elf gives the machine code: sm_75, ..."""
        return tuple("sm_" + a.replace(".", "") for a in self.archs)


@dataclass(frozen=True)
class Package:
    abi: str  # stable | per-torch
    torch_floor: str
    build_torch: str
    python_floor: str
    max_wheel_kib: int
    max_cuda_wheel_kib: int


@dataclass(frozen=True)
class Local:
    python: str
    torch: tuple[str, ...]
    matrix_python: tuple[str, ...]
    macos_torch: tuple[str, ...]
    aarch64_torch: tuple[str, ...]
    sid_python: tuple[str, ...] = ()
    free_threaded_python: tuple[str, ...] = ()


@dataclass(frozen=True)
class Release:
    gpu_runner: str = ""  # the label of a GitHub runner with an NVIDIA GPU; "": none, so releases stop


@dataclass(frozen=True)
class Declaration:
    package: Package
    platforms: tuple[Platform, ...]
    torches: tuple[Torch, ...]  # oldest first
    cuda: tuple[Cuda, ...]
    scopes: dict[str, str]  # scope -> newest | all
    local: Local
    release: Release = Release()


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def python_range(first: str, last: str) -> tuple[str, ...]:
    major, lo = version_key(first)
    _, hi = version_key(last)
    return tuple(f"{major}.{minor}" for minor in range(lo, hi + 1))


@cache
def load(path: Path = MATRIX) -> dict:
    """The declaration as TOML data (parse() validates it)."""
    return tomllib.loads(path.read_text())


def declaration() -> Declaration:
    return parse(load())


def invalid(where: str, message: str) -> PipelineError:
    return ConfigurationError(f"{SOURCE}: {where}: {message}")


def make(cls, table, where: str, **given):
    """cls from a TOML table: every key a field of cls (given fields are the caller's), none missing,
    each of its annotated type (str, int, or a list of strings, kept as a tuple)."""
    if not isinstance(table, dict):
        raise invalid(where, "expected a table")
    known = {f.name: f for f in fields(cls) if f.name not in given}
    unknown = sorted(set(table) - set(known) - set(given))
    if unknown:
        raise invalid(f"{where}.{unknown[0]}", f"unknown key (known: {', '.join(known)})")
    values = dict(given)
    for name, field in known.items():
        if name not in table:
            if field.default is MISSING:
                raise invalid(f"{where}.{name}", "missing")
            continue
        value, kind = table[name], field.type
        if kind.startswith("tuple"):
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise invalid(f"{where}.{name}", f"expected a list of strings, got {value!r}")
            value = tuple(value)
        elif kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
            raise invalid(f"{where}.{name}", f"expected an integer, got {value!r}")
        elif kind == "str" and not isinstance(value, str):
            raise invalid(f"{where}.{name}", f"expected a string, got {value!r}")
        values[name] = value
    return cls(**values)


def parse(data: dict) -> Declaration:
    """The validated declaration: unknown or missing keys, values of the wrong type and references to
    undeclared torch minors, CUDA majors or scope rules are errors naming the key."""
    tables = {"package", "platforms", "torch", "cuda", "scopes", "local", "release"}
    unknown = sorted(set(data) - tables)
    if unknown:
        raise invalid(unknown[0], f"unknown table (known: {', '.join(sorted(tables))})")
    for name in tables - {"cuda", "release"}:
        if not isinstance(data.get(name), dict):
            raise invalid(name, "missing table")
    package = make(Package, data["package"], "package")
    platforms = tuple(make(Platform, t, f"platforms.{n}", name=n) for n, t in data["platforms"].items())
    cuda = tuple(make(Cuda, t, f'cuda."{m}"', major=m) for m, t in data.get("cuda", {}).items())
    torches = []
    for minor, table in data["torch"].items():
        bounds = table.get("python") if isinstance(table, dict) else None
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(isinstance(b, str) for b in bounds)):
            raise invalid(f'torch."{minor}".python', f"expected [oldest, newest] CPython, got {bounds!r}")
        pins = table.get("free_threaded_pin", {})
        if not (isinstance(pins, dict) and all(isinstance(v, str) for v in pins.values())):
            raise invalid(f'torch."{minor}".free_threaded_pin', f"expected a table CPython = release, got {pins!r}")
        torches.append(make(Torch, table, f'torch."{minor}"', minor=minor, python=python_range(*bounds),
                            free_threaded_pin=tuple(sorted(pins.items()))))
    torches.sort(key=lambda t: version_key(t.minor))
    scopes = data["scopes"]
    local = make(Local, data["local"], "local")
    release = make(Release, data.get("release", {}), "release")
    decl = Declaration(package, platforms, tuple(torches), cuda, dict(scopes), local, release)
    check(decl)
    return decl


def check(decl: Declaration) -> None:
    """What the types cannot say: the values refer to what is declared."""
    package, minors = decl.package, [t.minor for t in decl.torches]
    if package.abi not in (STABLE, PER_TORCH):
        raise invalid("package.abi", f"must be {STABLE!r} or {PER_TORCH!r}, got {package.abi!r}")
    if package.build_torch not in minors or version_key(package.build_torch) < version_key(package.torch_floor):
        raise invalid("package.build_torch", f"{package.build_torch!r} must be a declared torch >= torch_floor")
    for scope, rule in decl.scopes.items():
        if rule not in SCOPE_RULES:
            raise invalid(f"scopes.{scope}", f"must be one of {', '.join(map(repr, SCOPE_RULES))}, got {rule!r}")
    majors = {c.major for c in decl.cuda}
    for plat in decl.platforms:
        for major in plat.cuda:
            if major not in majors:
                raise invalid(f"platforms.{plat.name}.cuda", f"CUDA {major} has no [cuda.\"{major}\"] section")
    for t in decl.torches:
        for python in [*t.free_threaded, *dict(t.free_threaded_pin)]:
            if python not in t.python:
                raise invalid(f'torch."{t.minor}".free_threaded', f"CPython {python} is not in its python range")
        for python in dict(t.free_threaded_pin):
            if python not in t.free_threaded:
                raise invalid(f'torch."{t.minor}".free_threaded_pin', f"CPython {python} is not in free_threaded")
    for key in ("torch", "macos_torch", "aarch64_torch"):
        for minor in getattr(decl.local, key):
            if minor not in minors:
                raise invalid(f"local.{key}", f"torch {minor} is not declared")


def abi() -> str:
    """The declared ABI mode: stable (one build per platform) or per-torch (one per torch minor, merged)."""
    return declaration().package.abi


def torch_floor() -> str:
    return declaration().package.torch_floor


def build_torch() -> Torch:
    """Stable mode: the one torch every platform builds against."""
    return torch(declaration().package.build_torch)


def wheel_tag_prefix(mode: str | None = None) -> str:
    """interpreter-abi of a wheel of `mode` (default: the declared one): py3-none (stable: no
    CPython symbol at all) or cp3X-abi3 (per-torch: torch's BuildExtension compiles with
    Py_LIMITED_API of the floor)."""
    if (mode or abi()) == STABLE:
        return "py3-none"
    return "cp" + declaration().package.python_floor.replace(".", "") + "-abi3"


def platforms() -> list[Platform]:
    return list(declaration().platforms)


def platform(name: str) -> Platform:
    for plat in platforms():
        if name in (plat.name, plat.wheel_platform):
            return plat
    raise ConfigurationError(f"unknown platform {name!r}; known: {', '.join(p.name for p in platforms())}")


def platform_of_tag(tag_platform: str) -> Platform | None:
    """The declared platform a wheel's platform tag (manylinux_2_28_x86_64, linux_x86_64, macosx_14_0_arm64) is for."""
    system = "macos" if tag_platform.startswith("macosx_") else "linux" if "linux" in tag_platform else ""
    return next((p for p in platforms() if p.cibw_platform == system and tag_platform.endswith("_" + p.arch)), None)


def torches() -> list[Torch]:
    return list(declaration().torches)


def torch(minor: str) -> Torch:
    for candidate in torches():
        if candidate.minor == minor or candidate.pin == minor:
            return candidate
    raise ConfigurationError(f"torch {minor} is not in {SOURCE}; supported: {', '.join(t.minor for t in torches())}")


def cuda_builds() -> list[Cuda]:
    return list(declaration().cuda)


def cuda(major: str) -> Cuda:
    for build in cuda_builds():
        if build.major == major:
            return build
    raise ConfigurationError(f"CUDA {major} is not declared in {SOURCE}; declared: "
                        f"{', '.join(c.major for c in cuda_builds()) or 'none'}")


def from_registry(python: str, pin: str) -> bool:
    """Whether torch `pin` for CPython `python` must come from the registry (not on local disk)."""
    local = declaration().local
    return python != local.python or pin not in {torch(m).pin for m in local.torch}


def local_matrix_cells() -> list[tuple[str, Torch]]:
    """The (CPython, torch) cells `local --matrix` runs: every declared torch on [local] python,
    and every CPython of [local] matrix_python on the newest torch that supports it."""
    local = declaration().local
    cells = [(local.python, t) for t in torches()]
    for python in local.matrix_python:
        newest = [t for t in torches() if python in t.python][-1]
        if (python, newest) not in cells:
            cells.append((python, newest))
    return cells


def oldest_and_newest(python: str, candidates: list[Torch] | None = None) -> list[Torch]:
    """The oldest and the newest of candidates (default: every declared torch) publishing wheels for
    `python` ("3.13t": its free-threaded build); one torch if only one does."""
    ft, version = python.endswith("t"), python.removesuffix("t")
    found = [t for t in candidates or torches() if version in (t.free_threaded if ft else t.python)]
    return list(dict.fromkeys(found[:1] + found[-1:]))


def newest_cells() -> list[tuple[str, Torch, str]]:
    """The (CPython, torch, torch release) cells `local --newest` runs: each [local] sid_python and
    free-threaded CPython ("3.13t") with the oldest and the newest torch that publishes wheels for it."""
    local = declaration().local
    pythons = [*local.sid_python, *(f"{v}t" for v in local.free_threaded_python)]
    return [(py, t, t.pin_for(py)) for py in pythons for t in oldest_and_newest(py)]


def free_threaded_pythons(candidates: list[Torch]) -> list[str]:
    """Every free-threaded CPython ("3.14t") some of candidates publishes wheels for, oldest first."""
    versions = {v for t in candidates for v in t.free_threaded}
    return [f"{v}t" for v in sorted(versions, key=version_key)]


def scope_torches(scope: str) -> list[Torch]:
    """The torch minors a scope verifies (and, in per-torch mode, builds)."""
    rule = scope_rule(scope)
    all_torches = torches()
    if rule == "next":
        return [next_torch()]
    return all_torches[-1:] if rule == "newest" else all_torches


def scope_rule(scope: str) -> str:
    scopes = declaration().scopes
    if scope not in scopes:
        raise ConfigurationError(f"unknown scope {scope!r}; {SOURCE} declares {', '.join(scopes)}")
    return scopes[scope]


def next_torch() -> Torch:
    """torch's next release, not declared yet: the minor after the newest declared one, any release of it
    (pin "2.16.*": nightly and test builds are pre-releases), on the newest one's CPythons."""
    newest = torches()[-1]
    major, minor = version_key(newest.minor)
    return Torch(minor=f"{major}.{minor + 1}", pin=f"{major}.{minor + 1}.*", python=newest.python)


def is_next_pin(pin: str) -> bool:
    return pin.endswith(".*")


def builds_for(torches: list[Torch]) -> list[Torch]:
    """What to compile to serve these torch minors: the one build torch (stable mode) or each of them."""
    return [build_torch()] if abi() == STABLE else torches


def cibw_build_selector(t: Torch) -> str:
    """Build on the oldest CPython this torch has: one build (abi3, or py3-none in stable mode),
    reused (and tested) for every later CPython that cibuildwheel then selects."""
    return " ".join(f"cp{v.replace('.', '')}-*" for v in t.python)


def artifact_name(plat: Platform, t: Torch | None = None) -> str:
    """wheels-manylinux_2_28_aarch64-torch2.14 (a per-torch build) or wheels-<platform> (final)."""
    return names.artifact(plat.wheel_platform, t.minor if t else None)


def build_cells(scope: str) -> list[dict]:
    stable = abi() == STABLE
    if not stable and scope_rule(scope) == "next":
        raise ConfigurationError(f"scope {scope!r}: torch's next release can only be verified in stable mode "
                                 "(a per-torch build needs that torch to build against)")
    return [
        {
            "platform": p.name,
            "wheel_platform": p.wheel_platform,
            "runner": p.runner,
            "torch": t.minor,
            "torch_pin": t.pin,
            "torch_index": p.torch_index,
            "cibw_platform": p.cibw_platform,
            "cibw_archs": p.arch,
            "cibw_build": cibw_build_selector(t),
            "artifact": artifact_name(p, None if stable else t),  # a stable build is already final
        }
        for p in platforms()
        for t in builds_for(scope_torches(scope))
    ]


def verify_cells(scope: str) -> list[dict]:
    """Every (platform, CPython, torch) of the scope, then its free-threaded cells: each free-threaded
    CPython ("3.14t") with the oldest and the newest torch of the scope that publishes wheels for it."""
    in_scope = scope_torches(scope)
    pairs = [(py, t) for t in in_scope for py in t.python]
    pairs += [(py, t) for py in free_threaded_pythons(in_scope) for t in oldest_and_newest(py, in_scope)]
    if scope_rule(scope) == "next":  # the oldest and newest CPython, each running the op test suite
        pairs = [(py, t) for t in in_scope for py in dict.fromkeys((t.python[0], t.python[-1]))]
    index = os.environ.get(NEXT_INDEX_VARIABLE, "") if scope_rule(scope) == "next" else None
    return [
        {
            "platform": p.name,
            "wheel_platform": p.wheel_platform,
            "runner": p.runner,
            "python": py,
            "torch": t.minor,
            "torch_pin": t.pin_for(py),
            "torch_index": p.torch_index if index is None else index,
            "op_tests": "" if index is None else "1",  # torch's next release: the whole op test suite
            "artifact": artifact_name(p),
        }
        for p in platforms()
        for py, t in pairs
    ]


def platform_cells(scope: str) -> list[dict]:
    """One merge job per platform, with the per-torch artifacts it combines (none in stable mode)."""
    if abi() == STABLE:
        return []
    return [
        {
            "platform": p.name,
            "wheel_platform": p.wheel_platform,
            "artifact": artifact_name(p),
            "inputs": [artifact_name(p, t) for t in scope_torches(scope)],
        }
        for p in platforms()
    ]


def github_matrix(scope: str, kind: str) -> str:
    cells = {"build": build_cells, "verify": verify_cells, "merge": platform_cells}[kind](scope)
    return json.dumps({"include": cells}, separators=(",", ":"))


def requires_torch(minors: list[str]) -> str:
    """The Requires-Dist of a merged per-torch wheel holding builds for these torch minors (a stable
    wheel requires torch>=its floor, with no cap: future torch included)."""
    ordered = sorted(minors, key=version_key)
    major, last = version_key(ordered[-1])
    return f"torch>={ordered[0]},<{major}.{last + 1}"


def cuda_cell(t: Torch) -> str:
    """Which CUDA build serves torch t's default Linux build on PyPI."""
    built = {major for p in platforms() for major in p.cuda} if abi() == STABLE else set()
    major = t.cuda.split(".")[0]
    if not t.cuda:
        return "-"
    if major in built:
        return f"CUDA {t.cuda}: the cu{major} build"
    return f"CUDA {t.cuda}: none (a clear ImportError; a CPU-only torch works)"


def support_table() -> str:
    """Markdown table for the README (checked against it by a test): one column per platform."""
    plats = platforms()
    lines = ["| torch | CPython | GPU kernels (Linux; the CUDA of PyPI's default torch) | "
             + " | ".join(p.name for p in plats) + " |", "|---|---|---|" + "---|" * len(plats)]
    prefix = wheel_tag_prefix()
    for t in torches():
        built = f"the stable build (against {build_torch().pin})" if abi() == STABLE else f"built against {t.pin}"
        threaded = f" (free-threaded: {', '.join(f'{v}t' for v in t.free_threaded)})" if t.free_threaded else ""
        lines.append(f"| {t.minor}: {built} | {t.python[0]}-{t.python[-1]}{threaded} | {cuda_cell(t)} | "
                     + " | ".join(f"{prefix}-{p.wheel_platform}" for p in plats) + " |")
    if abi() == STABLE:
        lines.append(f"| newer than {torches()[-1].minor} | as torch publishes | the build of its CUDA major, if any "
                     f"| the same wheels: `torch>={torch_floor()}` has no upper bound; not verified until declared "
                     "here |||")
    return "\n".join(lines)


def write_github_output(scope: str, path: Path) -> None:
    """abi=..., build=..., merge=..., verify=... lines for $GITHUB_OUTPUT."""
    with path.open("a") as out:
        out.write(f"abi={abi()}\n")
        for kind in ("build", "merge", "verify"):
            out.write(f"{kind}={github_matrix(scope, kind)}\n")
