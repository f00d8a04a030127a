"""`smoke`: install a wheel into a clean environment and run smoke_check.py
there, from outside the source tree.

The environment is a fresh venv that sees only a cached torch for that
(python, torch) and the wheel (installed without dependencies): no source
tree on the path, no build tools.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import NothingToDo
from ..util import envs
from ..util.envs import log

CHECK = Path(__file__).parents[1] / "scripts" / "smoke_check.py"


@contextlib.contextmanager
def wheel_env(wheel: Path, python: str, torch_pin: str, registry: bool = False) -> Iterator[envs.Env]:
    """A throwaway env with the wheel installed over the cached torch (registry: see envs.base_env)."""
    with wheel_over(envs.base_env(python, torch_pin, registry), wheel) as env:
        yield env


@contextlib.contextmanager
def wheel_over(base: envs.Env, wheel: Path) -> Iterator[envs.Env]:
    """A throwaway env with the wheel installed over the cached env base."""
    with tempfile.TemporaryDirectory(prefix="torch-segment-ops-smoke-") as tmp:
        env = envs.overlay_env(base, "smoke", path=Path(tmp) / "env")
        env.pip("install", "--no-deps", "--no-index", str(wheel))
        yield env


@dataclass
class Result:
    ok: bool
    output: str


def run_check(env: envs.Env, python: str | None = None, check: Path = CHECK, environ: dict | None = None) -> Result:
    """check (default: ci/scripts/smoke_check.py, torch-segment-ops' own) run from an empty folder in env."""
    with tempfile.TemporaryDirectory(prefix="torch-segment-ops-smoke-run-") as cwd:
        script = Path(cwd) / check.name
        shutil.copy(check, script)
        proc = subprocess.run([python or str(env.python), str(script)], cwd=cwd, capture_output=True, text=True,
                              env=dict(envs.pip_environ(), **(environ or {})))
    return Result(proc.returncode == 0 and "SMOKE OK" in proc.stdout, proc.stdout + proc.stderr)


CPU_ONLY = "TORCH_SEGMENT_OPS_CPU_ONLY"  # torch_segment_ops/_loader.py
OP_TESTS = "TORCH_SEGMENT_OPS_OP_TESTS"  # "1": a verify cell runs tests/ops after the smoke check


def unserved_cuda(cuda: str, wheel: Path) -> str:
    """Why the wheel has no CUDA build for a torch built with CUDA `cuda` (a major it was not built for), or ""."""
    from .wheels import WheelInfo

    majors = sorted({r["cuda"].split(".")[0] for r in WheelInfo.read(wheel).cuda_records.values()})
    if not majors or not cuda or cuda.split(".")[0] in majors:
        return ""
    return f"torch uses CUDA {cuda}, the wheel has CUDA {', '.join(majors)} builds"


def torch_cuda(base: envs.Env) -> str:
    """The CUDA version the cached env's torch was built with ("" for a CPU build): imported once per
    env and kept beside it (an `import torch` costs seconds, and the env's torch never changes)."""
    known = base.path / ".torch-segment-ops-torch-cuda"
    if not known.exists():
        probe = [str(base.python), "-c", "import torch; print(torch.version.cuda or '')"]
        cuda = subprocess.run(probe, capture_output=True, text=True, check=True, cwd="/").stdout.strip()
        tmp = known.with_name(f"{known.name}.{os.getpid()}")
        tmp.write_text(cuda)
        os.replace(tmp, known)
    return known.read_text()


def refuses_import(env: envs.Env) -> Result:
    """Importing the package fails with the loader's ImportError naming what to install."""
    proc = subprocess.run([str(env.python), "-c", "import torch_segment_ops"], capture_output=True, text=True,
                          cwd="/", env=envs.pip_environ())
    ok = proc.returncode != 0 and "ImportError: torch_segment_ops" in proc.stderr and CPU_ONLY in proc.stderr
    return Result(ok, proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.stdout)


def op_tests_tree(dest: Path) -> None:
    """dest/tests: what tests/ops needs, copied out of the source tree (so the installed wheel is tested)."""
    tests = envs.ROOT / "tests"
    shutil.copytree(tests / "ops", dest / "tests" / "ops", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("__init__.py", "reference.py"):
        shutil.copy(tests / name, dest / "tests" / name)


def op_test_tools(env: envs.Env, base: envs.Env) -> None:
    """The op tests' tools (ci/requirements/tests.txt) seen by the throwaway env: from a cached env over
    its base (a .pth line), not installed again into every throwaway env."""
    tools = envs.overlay_env(base, "tests", [envs.REQUIREMENTS / "tests.txt"])
    (env.site_packages / "_torch_segment_ops_tests.pth").write_text(f"{tools.site_packages}\n")


def run_op_tests(env: envs.Env, environ: dict | None = None) -> Result:
    """The op test suite (tests/ops: every op against the pure-PyTorch reference, gradients, opcheck,
    compile, bad input, fuzzing) against the installed wheel, from a copy of the tests outside the tree
    (pytest and the other tools: see op_test_tools)."""
    with tempfile.TemporaryDirectory(prefix="torch-segment-ops-op-tests-") as cwd:
        op_tests_tree(Path(cwd))
        proc = subprocess.run([str(env.python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/ops"],
                              cwd=cwd, capture_output=True, text=True, env=dict(envs.pip_environ(), **(environ or {})))
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return Result(proc.returncode == 0, f"op tests: {summary}\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")


def smoke(wheel: Path, python: str, torch_pin: str, op_tests: bool = False, check: Path = CHECK) -> Result:
    """The smoke check (and, with op_tests, the op test suite) in a clean env holding the wheel."""
    from ..declaration import matrix  # not at module level: verify_here runs on CPython 3.10 (no tomllib)

    log(f"smoke-testing {wheel.name} on CPython {python} + torch {torch_pin} ...")
    base = envs.base_env(python, torch_pin, matrix.from_registry(python, torch_pin))
    with wheel_over(base, wheel) as env:
        environ, note = {}, ""
        unserved = unserved_cuda(torch_cuda(base), wheel)
        if unserved:  # the clear ImportError, then the CPU kernels with the documented opt-out
            refused = refuses_import(env)
            if not refused.ok:
                return Result(False, f"{unserved}, but the import was not refused as documented: {refused.output}")
            environ, note = {CPU_ONLY: "1"}, f" [{unserved}: import refused with the clear ImportError; CPU kernels " \
                                            f"tested with {CPU_ONLY}=1]"
        result = run_check(env, check=check, environ=environ)
        first = result.output.splitlines()[0] + note if result.output else ""
        if result.ok and op_tests:
            op_test_tools(env, base)
            tests = run_op_tests(env, environ)
            return Result(tests.ok, f"{first} | {tests.output}" if tests.ok else tests.output)
        return Result(result.ok, first + "\n" + "\n".join(result.output.splitlines()[1:]))


def verify_here(wheel_dir: Path) -> Result:
    """A verify cell on a CI runner: the pinned torch and the final wheel go into
    the running interpreter (a fresh runner is the clean environment)."""
    import sys

    wheels = sorted(wheel_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise NothingToDo(f"verify: expected one wheel in {wheel_dir}, found {[w.name for w in wheels]}")
    envs.install_torch_here()
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", str(wheels[0])], check=True)
    env = envs.Env(Path(sys.prefix))
    result = run_check(env, python=sys.executable)
    if result.ok and os.environ.get(OP_TESTS) == "1":  # the cell asks for the op test suite too (scope `next`)
        env.pip("install", "-q", "-r", str(envs.REQUIREMENTS / "tests.txt"))
        tests = run_op_tests(env)
        return Result(tests.ok, f"{result.output}\n{tests.output}")
    return result
