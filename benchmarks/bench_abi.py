"""The stable-ABI build vs the ATen build it replaced, side by side in one process.

Run:  python3.11 -m ci bench --abi        (writes benchmarks/ABI.md; ~15 min on 2 cores)
      python3.11 -m ci bench --abi --quick (tiny shapes, writes nothing: checks the script runs)

Both are compiled here against the same torch (the declared build torch, on [local] python), each
compile timed: the current tree, and the last commit with the ATen kernels (ATEN_REVISION, from
git), whose op namespace is renamed to torch_segment_ops_aten so that both libraries load into one
process. Each op's kernel (the raw torch.ops call: what forward and backward are made of) is then
timed interleaved, repeat by repeat, on every shape of RESULTS.md. Also measured: compiles per
release in each ABI mode, wheel sizes, and `pip install` time of each wheel.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))

import torch  # noqa: E402
from bench_pipeline import timed_install  # noqa: E402
from shapes import make_lengths  # noqa: E402

from ci.declaration import matrix  # noqa: E402
from ci.stages import build  # noqa: E402
from ci.util import envs  # noqa: E402

ATEN_REVISION = "2d4acba"  # the last commit whose csrc/ used the ATen C++ API (one build per torch minor)
OPS = ("sum", "mean", "max", "max+arg", "gather", "softmax")


def compile_timed(tree: Path, env: envs.Env, out: Path) -> tuple[Path, float]:
    """pip wheel of tree in the build env; (wheel, seconds)."""
    start = time.perf_counter()
    subprocess.run([str(env.python), "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps", "-w", str(out),
                    str(tree)], check=True, env=envs.pip_environ(), capture_output=True)
    return next(out.glob("*.whl")), time.perf_counter() - start


def aten_tree(tmp: Path) -> Path:
    """ATEN_REVISION's source tree, its ops renamed into the torch_segment_ops_aten namespace."""
    tree = tmp / "aten"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", ATEN_REVISION], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    for source in (tree / "csrc").iterdir():
        source.write_text(source.read_text().replace("torch_segment_ops", "torch_segment_ops_aten"))
    return tree


def library(wheel: Path, folder: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".so")]
        return Path(zf.extract(name, folder))


class Case:
    """One input shape: src (E, F) and seg_src (N, F) with CSR offsets over E rows."""

    def __init__(self, rows: int, feat: int, kind: str):
        gen = torch.Generator().manual_seed(0)
        lengths = make_lengths(rows, kind, gen)
        self.indptr = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        self.src = torch.randn(rows, feat, generator=gen)
        self.seg_src = torch.randn(lengths.numel(), feat, generator=gen)


def kernel(ns, op: str, c: Case):
    if op == "gather":
        return lambda: ns.gather_csr(c.seg_src, c.indptr, c.src.shape[0])
    if op == "softmax":
        return lambda: ns.segment_softmax(c.src, c.indptr)
    reduce, with_arg = op.split("+")[0], op.endswith("+arg")
    return lambda: ns.segment_reduce(c.src, c.indptr, reduce, with_arg)


def timed(fns: dict, repeats: int) -> dict[str, float]:
    """Median ms of each function, interleaved repeat by repeat (after one warm-up each)."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def kernel_table(sizes, feats, threads, repeats) -> tuple[list[str], dict]:
    namespaces = {"ATen": torch.ops.torch_segment_ops_aten, "stable": torch.ops.torch_segment_ops}
    lines = ["| op | E | F | lengths | threads | ATen ms | stable ms | ATen / stable |", "|" + "---|" * 8]
    stable_ms = {}
    ratios = []
    for rows in sizes:
        for feat in feats:
            for kind in ("uniform", "skewed"):
                case = Case(rows, feat, kind)
                for nthreads in threads:
                    torch.set_num_threads(nthreads)
                    for op in OPS:
                        ms = timed({k: kernel(ns, op, case) for k, ns in namespaces.items()}, repeats)
                        ratios.append(ms["ATen"] / ms["stable"])
                        stable_ms[op, rows, feat, kind, nthreads] = ms["stable"]
                        lines.append(f"| {op} | {rows:.0e} | {feat} | {kind} | {nthreads} | {ms['ATen']:.2f} | "
                                     f"{ms['stable']:.2f} | **{ratios[-1]:.2f}x** |")
                        print(lines[-1], flush=True)
    ratios.sort()
    lines += ["", f"ATen / stable over {len(ratios)} rows: median **{statistics.median(ratios):.2f}x**, "
              f"min {ratios[0]:.2f}x, max {ratios[-1]:.2f}x (> 1: the stable build is faster)."]
    return lines, stable_ms


def scaling_table(stable_ms: dict, rows: int, threads) -> list[str]:
    if len(threads) < 2:
        return []
    lines = ["| op | F | lengths | stable ms, 1 thread | 2 threads | speed-up |", "|---|---|---|---|---|---|"]
    for (op, e, feat, kind, nthreads), ms in stable_ms.items():
        if e == rows and nthreads == 1:
            two = stable_ms[op, e, feat, kind, 2]
            lines.append(f"| {op} | {feat} | {kind} | {ms:.2f} | {two:.2f} | **{ms / two:.2f}x** |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 repeats; writes nothing")
    args = parser.parse_args()
    sizes, feats, threads, repeats = ([10**5, 10**6], [1, 16, 64], [1, 2], 5)
    if args.quick:
        sizes, feats, threads, repeats = [2000], [1, 4], [1], 2
    python, t = matrix.declaration().local.python, matrix.build_torch()
    env = build.build_env(python, t.pin)
    with tempfile.TemporaryDirectory(prefix="bench-abi-") as tmp:
        tmp = Path(tmp)
        stable_tree = tmp / "stable"
        shutil.copytree(ROOT, stable_tree, ignore=build.IGNORED)
        aten_wheel, aten_s = compile_timed(aten_tree(tmp), env, tmp / "aten-wheel")
        stable_wheel, stable_s = compile_timed(stable_tree, env, tmp / "stable-wheel")
        torch.ops.load_library(str(library(aten_wheel, tmp / "lib-aten")))
        torch.ops.load_library(str(library(stable_wheel, tmp / "lib-stable")))
        base = envs.base_env(python, t.pin)
        install = {name: min(timed_install(base, w, []) for _ in range(3)) for name, w in
                   (("ATen", aten_wheel), ("stable", stable_wheel))}
        sizes_kib = {"ATen": aten_wheel.stat().st_size / 1024, "stable": stable_wheel.stat().st_size / 1024}
        kernels, stable_ms = kernel_table(sizes, feats, threads, repeats)
    stable_builds = len(matrix.platforms())
    per_torch_builds = len(matrix.platforms()) * len(matrix.torches())
    command = "python3.11 -m ci bench --abi" + (" --quick" if args.quick else "")
    report = [
        "# The stable-ABI build vs the ATen build", "",
        f"Command: `{command}`. Machine: {torch.get_num_threads()} threads available, torch {torch.__version__}, "
        f"CPython {python}; float32; median of {repeats} interleaved runs. ATen = commit {ATEN_REVISION} "
        "(csrc/ on the ATen C++ API, OpenMP), stable = this tree (LibTorch stable ABI, "
        "torch::stable::parallel_for); both compiled here against the same torch.", "",
        "## Build and package", "",
        "| | ATen (per-torch mode) | stable |", "|---|---|---|",
        f"| compiles per release ({len(matrix.platforms())} platforms, torch {matrix.torches()[0].minor}-"
        f"{matrix.torches()[-1].minor}) | {per_torch_builds} | {stable_builds} |",
        f"| compile time of the extension (`pip wheel`, 2 cores) | {aten_s:.1f} s | {stable_s:.1f} s "
        f"(**{aten_s / stable_s:.1f}x** faster) |",
        f"| linux x86_64 wheel (unrepaired), one build | {sizes_kib['ATen']:.0f} KiB | {sizes_kib['stable']:.0f} KiB |",
        f"| merged wheel for every declared torch | ~{sizes_kib['ATen'] * len(matrix.torches()):.0f} KiB "
        f"({len(matrix.torches())} builds) | {sizes_kib['stable']:.0f} KiB (one build) |",
        f"| `pip install --no-deps` of the wheel (best of 3) | {install['ATen']:.2f} s | {install['stable']:.2f} s |",
        "", "## Kernels", "",
        "`max+arg` is max with the arg-extreme rows (what forward computes when backward will run); the "
        "backward passes are these same kernels (gather for sum/mean, sum for gather) plus identical Python.", "",
        *kernels, "", f"## Thread scaling of the stable build (E = {sizes[-1]:.0e})", "",
        *scaling_table(stable_ms, sizes[-1], threads), "",
    ]
    text = "\n".join(report)
    print(text)
    if not args.quick:
        (ROOT / "benchmarks" / "ABI.md").write_text(text)


if __name__ == "__main__":
    main()
