import ast
import sys
from pathlib import Path

from ci.stages import repair


def fake_torch_lib(tmp_path: Path) -> Path:
    lib = tmp_path / "torch" / "lib"
    (lib / "libshm").mkdir(parents=True)
    for name in ["libc10.so", "libtorch_cpu.so", "libgomp.so.1", "libomp.dylib", "libtorch.so", "README.txt"]:
        (lib / name).write_bytes(b"")
    return lib


def test_excludes_every_library_with_versioned_names(tmp_path):
    names = repair.excludes(fake_torch_lib(tmp_path))
    assert names == ["libc10.so", "libgomp.so.1", "libomp.dylib", "libtorch.so", "libtorch_cpu.so"]


def test_linux_and_macos_commands(tmp_path):
    lib = fake_torch_lib(tmp_path)
    linux = repair.command(Path("w.whl"), Path("out"), lib, platform="linux", plat="manylinux_2_28_x86_64")
    assert linux[:4] == ["auditwheel", "repair", "--plat", "manylinux_2_28_x86_64"]
    excluded = [linux[i + 1] for i, arg in enumerate(linux) if arg == "--exclude"]
    assert excluded == [*repair.excludes(lib), *repair.CUDA_LIBRARIES]  # torch's, then CUDA's (never grafted)
    assert "libcuda*.so*" in excluded
    mac = repair.command(Path("w.whl"), Path("out"), lib, platform="darwin")
    assert mac[0] == "delocate-wheel" and "libomp.dylib" in mac and mac[-1] == "w.whl"
    assert "libcuda*.so*" not in mac


def imports_of(path: Path) -> set[str]:
    """Top-level modules a file imports; its relative imports (ci's own modules) are followed."""
    nodes = list(ast.walk(ast.parse(path.read_text())))
    found = {alias.name.split(".")[0] for node in nodes if isinstance(node, ast.Import) for alias in node.names}
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                package = path.parents[node.level - 1]
                modules = [node.module] if node.module else [alias.name for alias in node.names]
                for module in modules:
                    found |= imports_of(package.joinpath(*module.split(".")).with_suffix(".py"))
            else:
                found.add(node.module.split(".")[0])
    return found


def test_repair_module_needs_only_the_standard_library():
    """cibuildwheel runs `repair` in build environments that have no extra packages."""
    assert imports_of(Path(repair.__file__)) <= sys.stdlib_module_names | {"__future__"}


def test_delocate_gets_torch_on_the_library_path_only_on_macos(tmp_path, monkeypatch):
    monkeypatch.setenv("DYLD_LIBRARY_PATH", "/elsewhere")
    assert repair.environment(tmp_path, "darwin")["DYLD_LIBRARY_PATH"] == f"{tmp_path}:/elsewhere"
    assert repair.environment(tmp_path, "linux")["DYLD_LIBRARY_PATH"] == "/elsewhere"


def test_a_repair_dates_the_zip_entries_by_the_given_epoch(tmp_path, monkeypatch):
    """`local` passes the build's SOURCE_DATE_EPOCH: without it auditwheel/delocate date the entries now."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1")
    assert repair.environment(tmp_path, epoch="1700000000")["SOURCE_DATE_EPOCH"] == "1700000000"
    assert repair.environment(tmp_path)["SOURCE_DATE_EPOCH"] == "1"
