"""`audit`: the gates every wheel must pass before it is merged or published.

Each check returns a list of problems; a wheel passes when all are empty.
The external gates (abi3audit, twine, check-wheel-contents) are the field's
own tools, run as they are.
"""

from __future__ import annotations

import configparser
import fnmatch
import io
import json
import posixpath
import re
import shutil
import subprocess
import tempfile
from pathlib import Path, PurePosixPath

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from ..declaration import matrix, names
from ..util import envs
from . import macho
from .repair import CUDA_LIBRARIES
from .wheels import BrokenWheel, WheelInfo, torch_minor, unsafe_entries

# What torch ships: never to be grafted into our wheel (patterns: repair tools rename grafts).
TORCH_LIBRARIES = ["libtorch*", "libc10*", "libshm*", "libgomp*", "libomp*", "libiomp*", "libcaffe2*"]
# The libraries in torch's own lib folder that an extension may link: `import torch` has loaded them
# from there, so the dynamic loader resolves these sonames to torch's copies. Exact names, as torch's
# Linux and macOS wheels ship them (tests/ci/test_audit.py checks them against installed torches).
TORCH_PROVIDES = {f"{stem}.{suffix}" for stem in ("libc10", "libc10_cuda", "libtorch", "libtorch_cpu",
                                                    "libtorch_cuda", "libtorch_python", "libshm",
                                                    "libtorch_global_deps") for suffix in ("so", "dylib")}
TORCH_PROVIDES |= {"libgomp.so.1", "libomp.dylib"}  # the OpenMP runtime torch ships and loads


def is_torch_library(name: str) -> bool:
    """A (possibly renamed) copy of a torch library: what must never be grafted."""
    return any(fnmatch.fnmatch(Path(name).name, pattern) for pattern in TORCH_LIBRARIES)


def torch_provides(dependency: str) -> bool:
    """A dependency torch's own folder provides: a bare soname (never a path) of a library torch loads."""
    return "/" not in dependency and dependency in TORCH_PROVIDES


def is_cuda_library(name: str) -> bool:
    return any(fnmatch.fnmatch(Path(name).name, pattern) for pattern in CUDA_LIBRARIES)


def is_grafted(name: str) -> bool:
    """In the folder auditwheel (<pkg>.libs) or delocate (.dylibs) copies libraries into."""
    folders = name.split("/")[:-1]
    return any(f.endswith(".libs") or f == ".dylibs" for f in folders)


def check_tags(wheel: WheelInfo, expect_platform: str | None = None) -> list[str]:
    problems = []
    if len(wheel.tags) != 1:
        return [f"expected exactly one tag, got {sorted(map(str, wheel.tags))}"]
    tag = next(iter(wheel.tags))
    expected = matrix.wheel_tag_prefix(matrix.STABLE if wheel.stable else matrix.PER_TORCH)
    if f"{tag.interpreter}-{tag.abi}" != expected:
        problems.append(f"expected tag {expected}, got {tag.interpreter}-{tag.abi}")
    if expect_platform and tag.platform != expect_platform:
        problems.append(f"expected platform {expect_platform}, got {tag.platform}")
    if not tag.platform.startswith(("manylinux_", "macosx_")):
        problems.append(f"platform {tag.platform} is not a repaired manylinux/macOS tag")
    return problems


def check_metadata(wheel: WheelInfo) -> list[str]:
    """METADATA agrees with the file name, and Requires-Dist with the builds inside."""
    meta = wheel.metadata
    problems = []
    if canonicalize_name(meta["Name"]) != canonicalize_name(wheel.name):
        problems.append(f"METADATA Name {meta['Name']!r} != file name {wheel.name!r}")
    if meta["Version"] != str(wheel.version):
        problems.append(f"METADATA Version {meta['Version']!r} != file name version {wheel.version}")
    if wheel.dist_info != f"{wheel.name}-{wheel.version}.dist-info":
        problems.append(f"dist-info folder {wheel.dist_info} does not match {wheel.name}-{wheel.version}")
    builds = wheel.builds
    if not builds:
        return problems + [f"no compiled build ({wheel.package}/_builds/*/build.json) in the wheel"]
    minors = sorted({torch_minor(v) for v in builds.values()}, key=matrix.version_key)
    if len(minors) != len(builds):
        problems.append(f"two builds for the same torch minor: {builds}")
    requirement = wheel.torch_requirement
    if requirement is None:
        return problems + ["expected exactly one Requires-Dist on torch"]
    if wheel.stable:  # one build, loading on every torch >= its floor: torch>=floor, no cap
        if len(builds) != 1 or wheel.version.local:
            problems.append(f"a stable-ABI wheel holds one build and no local label, got {sorted(builds)} "
                            f"version {wheel.version}")
        else:
            floor = next(iter(wheel.records.values())).get("floor")
            if requirement.specifier != SpecifierSet(f">={floor}"):
                problems.append(f"Requires-Dist {requirement} should be torch>={floor}")
    elif wheel.version.local:  # a per-torch wheel: 0.1.0+pt213 <-> torch==2.13.*
        label = names.torch_label(minors[0])
        if len(minors) != 1 or wheel.version.local != label:
            problems.append(f"local label +{wheel.version.local} does not match its build(s) for torch {minors}")
        if requirement.specifier != SpecifierSet(f"=={minors[0]}.*"):
            problems.append(f"Requires-Dist {requirement} should be torch=={minors[0]}.*")
    elif requirement.specifier != SpecifierSet(matrix.requires_torch(minors).removeprefix("torch")):
        problems.append(f"Requires-Dist {requirement} should be {matrix.requires_torch(minors)}")
    return problems


def elf_files(wheel: WheelInfo) -> dict[str, ELFFile]:
    return {n: ELFFile(io.BytesIO(c)) for n, c in wheel.files.items() if c[:4] == b"\x7fELF"}


def allowed_libraries(policy: str) -> set[str]:
    """The manylinux policy's whitelist (from auditwheel's own policy file)."""
    import auditwheel.policy

    data = json.loads((Path(auditwheel.policy.__file__).parent / "manylinux-policy.json").read_text())
    name = policy.split("_x86_64")[0].split("_aarch64")[0]
    for entry in data:
        if entry["name"] == name or name in entry["aliases"]:
            return set(entry["lib_whitelist"])
    raise ValueError(f"unknown manylinux policy {policy}")


def dynamic_tags(elf: ELFFile, kind: str) -> list[str]:
    """The values of one dynamic tag (DT_NEEDED, DT_RPATH, DT_RUNPATH) of an ELF file."""
    attribute = {"DT_NEEDED": "needed", "DT_RPATH": "rpath", "DT_RUNPATH": "runpath"}[kind]
    return [getattr(tag, attribute) for section in elf.iter_sections() if isinstance(section, DynamicSection)
            for tag in section.iter_tags() if tag.entry.d_tag == kind]


def needed(elf: ELFFile) -> list[str]:
    return dynamic_tags(elf, "DT_NEEDED")


def search_folders(name: str, elf: ELFFile) -> tuple[list[str], list[str]]:
    """The folders of the wheel the library's RPATH/RUNPATH name ($ORIGIN-relative, inside the wheel),
    and a problem for each entry that points anywhere else (the system, /tmp, above the wheel)."""
    folders, problems = [], []
    here = PurePosixPath(name).parent
    for kind in ("DT_RPATH", "DT_RUNPATH"):
        for entry in (e for value in dynamic_tags(elf, kind) for e in value.split(":")):
            relative = re.fullmatch(r"\$(ORIGIN|\{ORIGIN\})(/.*)?", entry)
            folder = posixpath.normpath(str(here / (relative[2] or "/.").lstrip("/"))) if relative else None
            if folder is None or folder == ".." or folder.startswith("../"):
                problems.append(f"{name} has {kind[3:]} {entry!r}: only $ORIGIN-relative folders inside the "
                                "wheel may be searched")
            else:
                folders.append("" if folder == "." else folder + "/")
    return folders, problems


def check_libraries(wheel: WheelInfo) -> list[str]:
    """Nothing of torch or CUDA grafted; every ELF dependency resolves the way the dynamic loader will
    resolve it: a bare soname that the manylinux policy, torch's own folder or the wheel itself (through
    an $ORIGIN-relative RPATH/RUNPATH) provides, or for a CUDA build the CUDA runtime of its own major.
    A dependency by path, or a search path outside the wheel, is refused."""
    problems = [f"grafted torch/OpenMP library {n}" for n in wheel.files if is_grafted(n) and is_torch_library(n)]
    problems += [f"grafted CUDA library {n}" for n in wheel.files if is_grafted(n) and is_cuda_library(n)]
    if not wheel.platform.startswith("manylinux_"):
        return problems
    policy = allowed_libraries(wheel.platform) | {"ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}  # the loader
    cuda = {f"{wheel.package}/_builds/{name}/": record["cuda"].split(".")[0]
            for name, record in wheel.cuda_records.items()}
    for name, elf in elf_files(wheel).items():
        folders, found = search_folders(name, elf)
        problems += found
        major = next((m for folder, m in cuda.items() if name.startswith(folder)), None)
        for library in needed(elf):
            if "/" in library:
                problems.append(f"{name} needs {library} by path: a dependency must be a bare soname found in the "
                                "policy, torch's folder or the wheel")
            elif library in policy or torch_provides(library) or any(f + library in wheel.files for f in folders):
                continue
            elif major and library == f"libcudart.so.{major}":
                continue
            else:
                problems.append(f"{name} needs {library}: " + (
                    f"a CUDA {major} build may link only libcudart.so.{major}" if major and is_cuda_library(library)
                    else f"neither in the {wheel.platform} policy, torch's folder nor the wheel"))
    return problems


def fatbin_listing(content: bytes, what: str) -> list[str]:
    """The cubin (--list-elf) or PTX (--list-ptx) architectures in a library's fatbin: sm_90, ..."""
    with tempfile.NamedTemporaryFile(suffix=".so") as tmp:
        tmp.write(content)
        tmp.flush()
        result = subprocess.run([envs.nvidia_tool("cuobjdump"), f"--list-{what}", tmp.name], capture_output=True,
                                text=True)
    if result.returncode != 0:
        return []  # no fatbin at all
    return sorted(set(re.findall(r"\.(sm_\d+a?)\.(?:cubin|ptx)", result.stdout)), key=lambda a: int(a[3:].rstrip("a")))


def check_cuda(wheel: WheelInfo) -> list[str]:
    """Each CUDA build: of a CUDA major the declaration builds for this platform, its fatbin holding
    machine code for exactly the declared architectures and PTX of the declared newest; and every
    declared CUDA build present (stable wheels of a Linux platform that declares them)."""
    problems = []
    plat = matrix.platform_of_tag(wheel.platform)
    if wheel.stable and plat and plat.cuda:
        have = {record["cuda"].split(".")[0] for record in wheel.cuda_records.values()}
        problems += [f"no CUDA {major} build (ci/declaration/matrix.toml declares it for {plat.name})"
                     for major in plat.cuda if major not in have]
    if wheel.cuda_records and envs.nvidia_tool("cuobjdump") is None:
        return problems + ["cuobjdump is not installed (nvidia-cuda-cuobjdump, ci/requirements/pipeline.txt)"]
    for folder, record in wheel.cuda_records.items():
        major = record["cuda"].split(".")[0]
        if not plat or major not in plat.cuda:
            problems.append(f"{folder}: CUDA {major} is not declared for {wheel.platform}")
            continue
        spec = matrix.cuda(major)
        library = wheel.files.get(f"{wheel.package}/_builds/{folder}/_C.so", b"")
        elf, ptx = fatbin_listing(library, "elf"), fatbin_listing(library, "ptx")
        if elf != list(spec.elf_archs):
            problems.append(f"{folder}: machine code for {elf or 'no architecture'}, declared {list(spec.elf_archs)}")
        want_ptx = "sm_" + spec.ptx.replace(".", "")
        if ptx != [want_ptx]:
            problems.append(f"{folder}: PTX for {ptx or 'no architecture'}, declared {want_ptx}")
        if record.get("archs") != list(spec.elf_archs):
            problems.append(f"{folder}: build.json archs {record.get('archs')} != declared {list(spec.elf_archs)}")
    return problems


def check_macho(wheel: WheelInfo) -> list[str]:
    """macOS libraries: arm64, minos = the tag's deployment target, only system and torch libraries
    linked, no stray unresolved symbol, a valid ad-hoc signature (see ci/stages/macho.py)."""
    libraries = {n: c for n, c in wheel.files.items() if macho.is_macho(c)}
    if libraries and not wheel.platform.startswith("macosx_"):
        return [f"Mach-O file {n} in a {wheel.platform} wheel" for n in libraries]
    if not wheel.platform.startswith("macosx_"):
        return []
    target = macho.deployment_target(wheel.platform)
    return [p for n, c in libraries.items() for p in macho.problems(n, c, target, torch_provides)]


ELF_MACHINES = {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}


def check_elf_platform(wheel: WheelInfo) -> list[str]:
    """A manylinux_X_Y_<arch> tag must be true of every ELF file: its machine is <arch>, and the glibc
    symbol versions it needs (read with auditwheel's own helper) are at most X.Y."""
    match = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", wheel.platform)
    libraries = elf_files(wheel)
    if libraries and not match:
        return [f"ELF file {n} in a {wheel.platform} wheel" for n in libraries]
    if not match:
        return []
    from auditwheel.elfutils import elf_find_versioned_symbols

    glibc_max, arch = (int(match[1]), int(match[2])), match[3]
    problems = []
    for name, elf in libraries.items():
        machine = elf.header["e_machine"]
        if machine != ELF_MACHINES.get(arch):
            problems.append(f"{name} is {machine}, but the tag says {arch}")
        needed = [tuple(map(int, v.split("_", 1)[1].split(".")[:2])) for _, v in elf_find_versioned_symbols(elf)
                  if re.fullmatch(r"GLIBC_\d+\.\d+(\.\d+)?", v)]
        if needed and max(needed) > glibc_max:
            problems.append(f"{name} needs GLIBC_{'.'.join(map(str, max(needed)))}, but the tag promises "
                            f"glibc {glibc_max[0]}.{glibc_max[1]} (manylinux_{glibc_max[0]}_{glibc_max[1]})")
    return problems


DIST_INFO_FILES = r"(METADATA|WHEEL|RECORD|top_level\.txt|entry_points\.txt|licenses/.+|LICENSE[^/]*)"


def allowed(package: str) -> re.Pattern:
    """What a wheel of the package may hold (any package name: read from the wheel); build folders are
    named as the loader finds them (names.BUILD_NAME)."""
    p = re.escape(package)
    return re.compile(rf"^({p}/[^/]+\.py|{p}/_builds/{names.BUILD_NAME}/(build\.json|_C[^/]*\.so)|{p}\.libs/[^/]+"
                      rf"|{p}/\.dylibs/[^/]+|[^/]+\.dist-info/{DIST_INFO_FILES})$")


def check_contents(wheel: WheelInfo) -> list[str]:
    """Only what a wheel of ours contains: the package's modules, one record and one library per build
    folder (what the loader needs), repair tools' grafts, dist-info; no .pth, no stray library, no
    unsafe, duplicate, case-colliding or linked entry."""
    problems = unsafe_entries(wheel.path)
    pattern = allowed(wheel.package)
    problems += [f"unexpected file {n} (not one of ours)" for n in wheel.files if not pattern.match(n)]
    folders: dict[str, list[str]] = {}
    for name in wheel.files:
        if match := names.BUILD_DIR.match(name):
            folders.setdefault(match[2], []).append(name.rsplit("/", 1)[1])
    for folder, files in sorted(folders.items()):
        libraries = [f for f in files if f.startswith("_C")]
        if "build.json" not in files or len(libraries) != 1:
            problems.append(f"build folder {folder} holds {sorted(files)}: the loader needs build.json and one "
                            "_C library")
    return problems


def check_wheel_file(wheel: WheelInfo) -> list[str]:
    """The WHEEL file: version 1.x of the format, a platform wheel (Root-Is-Purelib: false) and exactly
    the tags of the file name."""
    headers = names.metadata(wheel.files[f"{wheel.dist_info}/WHEEL"].decode())
    problems = []
    if not re.fullmatch(r"1\.\d+", headers["Wheel-Version"] or ""):
        problems.append(f"WHEEL: Wheel-Version {headers['Wheel-Version']!r} (installers understand 1.x)")
    if (headers["Root-Is-Purelib"] or "").lower() != "false":
        problems.append(f"WHEEL: Root-Is-Purelib {headers['Root-Is-Purelib']!r}; a wheel with compiled code is "
                        "'false'")
    tags = {str(t) for t in wheel.tags}
    declared = set(headers.get_all("Tag") or [])
    if declared != tags:
        problems.append(f"WHEEL: Tag {sorted(declared)} != the file name's {sorted(tags)}")
    return problems


def check_entry_points(wheel: WheelInfo) -> list[str]:
    """Scripts a wheel installs carry the project's name, so installing it never shadows another
    command (python3, pip ...)."""
    text = wheel.files.get(f"{wheel.dist_info}/entry_points.txt")
    if text is None:
        return []
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str
    try:
        parser.read_string(text.decode())
    except (configparser.Error, UnicodeDecodeError) as error:
        return [f"entry_points.txt is unreadable ({type(error).__name__})"]
    prefixes = (canonicalize_name(wheel.name), wheel.package.lower())
    return [f"entry_points.txt installs a {group} command {script!r}, not named after the project "
            f"(it would shadow another command)"
            for group in ("console_scripts", "gui_scripts") if parser.has_section(group)
            for script in parser[group] if not canonicalize_name(script).startswith(prefixes)]


FOREIGN_CXX = re.compile(r"\b(at|c10|torch)::")  # the C++ API of ATen, c10 and libtorch (demangled)
CPYTHON = re.compile(r"_?_?Py[A-Z_]")


def undefined_symbols(content: bytes) -> list[str]:
    """`nm --undefined-only -C -j` of a library (ELF: its dynamic symbols), demangled, names only."""
    elf = content[:4] == b"\x7fELF"
    nm = "nm" if elf else (shutil.which("llvm-nm") or "nm")  # GNU nm cannot read Mach-O
    with tempfile.NamedTemporaryFile() as tmp:
        tmp.write(content)
        tmp.flush()
        out = subprocess.run([nm, *(["-D"] if elf else []), "--undefined-only", "-C", "-j", tmp.name],
                             capture_output=True, text=True, check=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def check_stable_abi(wheel: WheelInfo) -> list[str]:
    """A stable-ABI build imports only torch's C shim (aoti_torch_*, torch_*) and the C/C++ runtimes:
    no C++ symbol of libtorch/c10/ATen (whose ABI changes between minors), and no CPython symbol when
    the tag (py3-none) promises any interpreter."""
    if not wheel.stable:
        return []
    any_python = next(iter(wheel.tags)).abi == "none"
    problems = []
    for name, content in wheel.files.items():
        if not (content[:4] == b"\x7fELF" or macho.is_macho(content)) or is_grafted(name):
            continue
        for symbol in undefined_symbols(content):
            if FOREIGN_CXX.search(symbol):
                problems.append(f"{name} imports {symbol}: a C++ symbol of libtorch/c10/ATen, not the stable ABI")
            elif any_python and CPYTHON.match(symbol):
                problems.append(f"{name} imports the CPython symbol {symbol}, but the tag promises any interpreter")
    return problems


def check_stripped(wheel: WheelInfo) -> list[str]:
    return [f"{name} is not stripped (has {section.name})" for name, elf in elf_files(wheel).items()
            for section in elf.iter_sections() if section.name.startswith(".debug") or section.name == ".symtab"]


def check_size(wheel: WheelInfo) -> list[str]:
    package = matrix.declaration().package
    budget = (package.max_cuda_wheel_kib if wheel.cuda_records else package.max_wheel_kib) * 1024
    return [f"{wheel.size / 1024:.0f} KiB is over the {budget // 1024} KiB budget"] if wheel.size > budget else []


def tool(*cmd: str) -> list[str]:
    if shutil.which(cmd[0]) is None:
        return [f"{cmd[0]} is not installed"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    return [] if result.returncode == 0 else [f"{cmd[0]} failed:\n{result.stdout}{result.stderr}".rstrip()]


def check_external(wheel: WheelInfo) -> list[str]:
    """abi3audit for an abi3 wheel (a py3-none wheel has no CPython ABI to audit: check_stable_abi
    refuses any CPython symbol instead), twine and check-wheel-contents for every wheel."""
    path = str(wheel.path)
    abi3 = next(iter(wheel.tags)).abi == "abi3"
    return [*(tool("abi3audit", "--strict", "--report", path) if abi3 else []),
            *tool("twine", "check", "--strict", path), *tool("check-wheel-contents", path)]


CHECKS = [check_tags, check_wheel_file, check_metadata, check_contents, check_entry_points, check_libraries,
          check_elf_platform, check_macho, check_stable_abi, check_cuda, check_stripped, check_size, check_external]


def audit(path: Path, expect_platform: str | None = None) -> list[str]:
    """Every problem of one wheel; a wheel that cannot be read, or that makes a check fail to run, is
    reported as such (never an exception: the next wheel is still audited)."""
    try:
        wheel = WheelInfo.read(path)
    except BrokenWheel as error:
        return [f"not an intact wheel ({error})"]
    problems = []
    for check in CHECKS:
        try:
            problems += check(wheel, expect_platform) if check is check_tags else check(wheel)
        except Exception as error:  # noqa: BLE001 (a crafted wheel must not stop the audit of the next one)
            problems.append(f"{check.__name__} could not read the wheel ({type(error).__name__}: {error})"[:500])
    return problems
