"""`local --arch macos-arm64`: the macOS arm64 wheel, cross-built on Linux
and repaired and audited here; it cannot be run here.

- torch: the real macOS torch wheel of each pin (headers and dylibs only),
  fetched once with `pip download --platform` into the cache.
- compiler: zig's clang from PyPI (`ziglang`), `-target aarch64-macos.<target>`.
- flags: exactly what setup.py passes on macOS (setup.py is run with
  sys.platform = "darwin" and its setup() call captured), plus what torch's
  BuildExtension adds, so the flags cannot drift from the real build.
- C++ runtime: the system libc++ that torch itself links, through a .tbd stub
  listing only the libc++ symbols torch's own dylibs import (plus operator
  new/delete): no second C++ runtime, and a symbol torch does not rely on
  fails the link.
- wheel: the metadata setup.py gives (the PEP 517 metadata hook), tagged
  py3-none-macosx_<target>_arm64 (per-torch mode: cp310-abi3), then our real repair verb (delocate,
  with LLVM's otool/install_name_tool/lipo behind small wrappers) and our
  audit verb (which checks arch, minos, linked libraries, symbols and the
  ad-hoc signature).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

from ..declaration import matrix
from ..errors import PipelineError
from ..stages import build, macho
from ..util import envs
from ..util.envs import REQUIREMENTS, ROOT, log

PLATFORM = "macos-arm64"
ZIG_TARGET = "aarch64-macos.{target}"
TORCH_MEMBERS = ("torch/include/", "torch/lib/")
# What torch's BuildExtension.build_extensions adds to every extension's flags
# (torch/utils/cpp_extension.py); the extension's own flags come from setup.py.
BUILD_EXTENSION_FLAGS = ["-DTORCH_API_INCLUDE_EXTENSION_H", "-std=c++20", "-fPIC"]
LIMITED_API_FLAG = "-DPy_LIMITED_API=0x030A0000"
CXX_NEW_DELETE = ["__Znwm", "__Znam", "__ZdlPv", "__ZdaPv", "__ZdlPvm", "__ZdaPvm"]
LLVM_TOOLS = {"otool": "llvm-otool", "install_name_tool": "llvm-install-name-tool", "lipo": "llvm-lipo"}


def cache() -> Path:
    return envs.cache_dir() / "macos"


def platform() -> matrix.Platform:
    return matrix.platform(PLATFORM)


def torch_tree(pin: str) -> Path:
    """torch/include and torch/lib of the macOS arm64 torch wheel `pin` (downloaded once)."""
    tree = cache() / f"torch-{pin}"
    if (tree / ".complete").exists():
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    python = matrix.declaration().local.python
    with tempfile.TemporaryDirectory(prefix="torch-segment-ops-macos-") as tmp:
        log(f"downloading the macOS arm64 torch {pin} wheel (~110 MB) ...")
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--platform", platform().wheel_platform, "--python-version", python, f"torch=={pin}",
                        "-d", tmp], check=True,
                       env=dict(envs.pip_environ(), PIP_CONFIG_FILE=os.devnull))  # no local cap on torch
        (wheel,) = Path(tmp).glob("torch-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tree, [n for n in zf.namelist() if n.startswith(TORCH_MEMBERS)])
    (tree / ".complete").write_text(pin)
    return tree


def zig() -> list[str]:
    env = envs.tools_env(matrix.declaration().local.python, "zig", [REQUIREMENTS / "macos.txt"])
    return [str(env.python), "-m", "ziglang"]


def find_llvm(tool: str) -> str | None:
    return shutil.which(tool) or next((str(p) for p in sorted(Path("/usr/bin").glob(f"{tool}-[0-9]*"))), None)


def missing() -> str | None:
    """Why the lane cannot run here, or None."""
    absent = [tool for tool in LLVM_TOOLS.values() if not find_llvm(tool)]
    return f"missing {', '.join(absent)}: apt-get install llvm" if absent else None


def tool_wrappers() -> Path:
    """otool, install_name_tool, lipo and codesign for delocate, from LLVM. otool: LLVM's has no
    -m and -arch all (thin files only here); codesign: a no-op, because llvm-install-name-tool
    re-signs ad-hoc itself, and the audit checks that signature."""
    if missing():
        raise PipelineError(f"macos lane: {missing()}")
    folder = cache() / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    scripts = {name: f'exec {find_llvm(llvm)} "$@"\n' for name, llvm in LLVM_TOOLS.items()}
    scripts["otool"] = ('args=(); skip=0\nfor a in "$@"; do\n  if [ $skip = 1 ]; then skip=0; continue; fi\n'
                        '  case "$a" in -m) ;; -arch) skip=1 ;; *) args+=("$a") ;; esac\ndone\n'
                        f'exec {find_llvm("llvm-otool")} "${{args[@]}}"\n')
    scripts["codesign"] = "exit 0\n"
    for name, body in scripts.items():
        path = folder / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)
    return folder


CAPTURE = r"""
import json, runpy, sys
import sysconfig, torch  # everything reading the host platform runs before it is switched
from torch.utils.cpp_extension import BuildExtension, CppExtension
import setuptools
sysconfig.get_config_vars()
captured = {}
setuptools.setup = lambda **kwargs: captured.update(kwargs)
sys.platform, sys.argv = "darwin", ["setup.py", "bdist_wheel"]
runpy.run_path("setup.py", run_name="__main__")
(ext,) = captured["ext_modules"]
print(json.dumps({"name": ext.name, "sources": ext.sources, "include_dirs": ext.include_dirs,
                  "libraries": ext.libraries, "compile_args": ext.extra_compile_args,
                  "link_args": ext.extra_link_args, "limited_api": bool(ext.py_limited_api),
                  "torch_include": torch.utils.cpp_extension.include_paths()}))
"""


def setup_args(env: envs.Env, tree: Path) -> dict:
    """The extension setup.py declares on macOS, read by running setup.py in env (torch of the same pin)."""
    out = subprocess.run([str(env.python), "-c", CAPTURE], cwd=tree, capture_output=True, text=True,
                         env=envs.pip_environ())
    if out.returncode != 0:
        raise PipelineError(f"macos lane: running setup.py for darwin failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def libcxx_stub(torch_lib: Path, out: Path) -> Path:
    """A .tbd for /usr/lib/libc++.1.dylib exporting what torch's dylibs import from it."""
    symbols = set(CXX_NEW_DELETE)
    for name in ("libc10.dylib", "libtorch_cpu.dylib"):
        info = macho.read((torch_lib / name).read_bytes())
        symbols |= {s for s, o in info["undefined"] if 1 <= o <= len(info["dylibs"])
                    and info["dylibs"][o - 1] == "/usr/lib/libc++.1.dylib"}
    quoted = ", ".join(f"'{s}'" for s in sorted(symbols))
    out.write_text("--- !tapi-tbd\ntbd-version: 4\ntargets: [ arm64-macos ]\n"
                   "install-name: '/usr/lib/libc++.1.dylib'\ncurrent-version: 1700\nexports:\n"
                   f"  - targets: [ arm64-macos ]\n    symbols: [ {quoted} ]\n...\n")
    return out


def compile_library(args: dict, tree: Path, torch: Path, work: Path) -> Path:
    """Compile and link the extension for macOS arm64 with zig; returns the library."""
    target = platform().deployment_target
    host_include = [Path(p) for p in args["torch_include"]]
    includes = [str(torch / "torch" / "include" / p.relative_to(host_include[0])) if p.is_relative_to(
        host_include[0]) else p for p in map(Path, args["include_dirs"])]
    module = args["name"].rsplit(".", 1)[-1]
    flags = [*BUILD_EXTENSION_FLAGS, f"-DTORCH_EXTENSION_NAME={module}",
             *([LIMITED_API_FLAG] if args["limited_api"] else []), *args["compile_args"],
             *(f"-I{p}" for p in includes), f"-I{sysconfig_include()}"]
    objects = []
    for source in args["sources"]:
        obj = work / (Path(source).stem + ".o")
        log(f"compiling {source} for arm64 macOS {target} ...")
        run([*zig(), "c++", "-target", ZIG_TARGET.format(target=target), *flags, "-c", str(tree / source),
             "-o", str(obj)])
        objects.append(str(obj))
    stable = matrix.abi() == matrix.STABLE
    library = work / (f"{module}.so" if stable else f"{module}.abi3.so")  # setup.py's names
    lib_dir = torch / "torch" / "lib"
    # per-torch: the CPython C API is looked up at load time, as in every macOS extension module; a
    # stable build uses none, so every symbol must resolve at link time
    lookup = [] if stable else ["-Wl,-undefined,dynamic_lookup"]
    run([*zig(), "c++", "-target", ZIG_TARGET.format(target=target), "-shared", "-nostdlib++", *lookup,
         f"-Wl,-install_name,@rpath/{library.name}", *args["link_args"], *objects,
         str(libcxx_stub(lib_dir, work / "libc++.tbd")), *(str(lib_dir / f"lib{n}.dylib") for n in args["libraries"]),
         "-o", str(library)])
    return library


def sysconfig_include() -> str:
    """CPython's headers, for module.cpp's PyInit (limited API: no platform-specific layout is used)."""
    import sysconfig

    return sysconfig.get_paths()["include"]


def run(cmd: list[str]) -> None:
    zig_cache = str(cache() / "zig-cache")  # zig's caches stay in ours
    environ = dict(os.environ, ZIG_GLOBAL_CACHE_DIR=zig_cache, ZIG_LOCAL_CACHE_DIR=zig_cache)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=environ)
    if proc.returncode != 0:
        raise PipelineError(f"macos lane: {' '.join(cmd[:6])} ... failed:\n{proc.stderr[-3000:]}")


def metadata_dir(env: envs.Env, tree: Path, out: Path) -> Path:
    """The .dist-info setup.py gives for a wheel: the PEP 517 metadata hook, run by `build` in env."""
    from build import BuildBackendException, ProjectBuilder
    from pyproject_hooks import quiet_subprocess_runner

    try:
        builder = ProjectBuilder(tree, python_executable=str(env.python), runner=quiet_subprocess_runner)
        return Path(builder.metadata_path(out))
    except BuildBackendException as error:
        raise PipelineError(f"macos lane: the metadata hook failed: {error}") from None


def build_record(t: matrix.Torch) -> dict:
    """The build.json setup.py writes for a build against t."""
    if matrix.abi() == matrix.STABLE:
        return {"abi": "stable", "floor": matrix.torch_floor(), "torch": t.pin}
    return {"torch": t.pin}


def build_wheel(minor: str, dist: Path) -> Path:
    """Cross-build the macOS arm64 wheel against torch `minor` into dist."""
    from wheel.wheelfile import WheelFile

    t = matrix.torch(minor)
    torch = torch_tree(t.pin)
    env = build.build_env(matrix.declaration().local.python, t.pin)
    with tempfile.TemporaryDirectory(prefix="torch-segment-ops-macos-build-") as tmp:
        tree, work = Path(tmp) / "src", Path(tmp) / "work"
        shutil.copytree(ROOT, tree, ignore=build.IGNORED)
        work.mkdir()
        args = setup_args(env, tree)
        library = compile_library(args, tree, torch, work)
        meta = metadata_dir(env, tree, work / "meta")
        name, version = meta.name.removesuffix(".dist-info").split("-")
        tag = f"{matrix.wheel_tag_prefix()}-{platform().wheel_platform}"
        dist.mkdir(parents=True, exist_ok=True)
        path = dist / f"{name}-{version}-{tag}.whl"
        package_dir = "/".join(args["name"].split(".")[:-1])
        with WheelFile(path, "w") as wf:
            for source in sorted((tree / "torch_segment_ops").glob("*.py")):
                wf.write(str(source), f"torch_segment_ops/{source.name}")
            wf.write(str(library), f"{package_dir}/{library.name}")
            wf.writestr(f"{package_dir}/build.json", json.dumps(build_record(t), indent=2) + "\n")
            for item in sorted(meta.iterdir()):
                if item.is_file():
                    wf.write(str(item), f"{meta.name}/{item.name}")
            wf.writestr(f"{meta.name}/WHEEL", f"Wheel-Version: 1.0\nGenerator: torch-segment-ops-ci (zig cross "
                                              f"build)\nRoot-Is-Purelib: false\nTag: {tag}\n")
    return path


@contextmanager
def delocate_tools():
    """PATH with the LLVM wrappers first, for our repair verb's delocate-wheel."""
    before = os.environ["PATH"]
    os.environ["PATH"] = f"{tool_wrappers()}{os.pathsep}{before}"
    try:
        yield
    finally:
        os.environ["PATH"] = before
