"""The declared stable-ABI floor is the lowest torch the kernels compile for: the sources compile
with TORCH_TARGET_VERSION at the floor and not one minor below (the stable headers hide what an
older torch lacks). That the build then loads and passes the op tests under the floor's torch is
shown by `local --matrix` (tests/e2e/test_local_matrix_e2e.py)."""

import re
import subprocess
from pathlib import Path

import pytest
import torch.utils.cpp_extension

from ci.declaration import matrix

ROOT = Path(__file__).resolve().parent.parent
SETUP = (ROOT / "setup.py").read_text()


def compiles_for(minor: str) -> subprocess.CompletedProcess:
    major, minor_part = map(int, minor.split("."))
    flags = [f"-DTORCH_TARGET_VERSION=0x{major:02x}{minor_part:02x}000000000000", "-std=c++17", "-fsyntax-only"]
    includes = [f"-I{p}" for p in torch.utils.cpp_extension.include_paths()] + [f"-I{ROOT / 'csrc'}"]
    return subprocess.run(["g++", *flags, *includes, str(ROOT / "csrc" / "segment_reduce.cpp")],
                          capture_output=True, text=True)


def test_the_sources_compile_at_the_floor():
    result = compiles_for(matrix.torch_floor())
    assert result.returncode == 0, result.stderr[-2000:]


def test_they_do_not_compile_one_minor_below():
    major, minor = map(int, matrix.torch_floor().split("."))
    result = compiles_for(f"{major}.{minor - 1}")
    assert result.returncode != 0
    quote = "['\u2018\u2019]"  # GCC quotes with ' or with typographic quotes, by locale
    assert re.search(f"{quote}(parallel_for|get_num_threads|contiguous|to|new_empty){quote} is not a member of "
                     f"{quote}torch::stable{quote}", result.stderr), result.stderr[-2000:]


@pytest.mark.parametrize("fact", ["TORCH_TARGET_VERSION", "FLOOR = matrix.torch_floor()", "torch>={FLOOR}"])
def test_setup_py_takes_the_floor_from_the_declaration(fact):
    assert fact in SETUP
