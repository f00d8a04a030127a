"""torch_segment_ops's CUDA kernels vs the PyTorch ways on the same GPU (needs one).

Run it (the wheel installed into a CUDA torch; `python -m ci gpu-check` runs it):
    python benchmarks/bench_gpu.py --out benchmarks/GPU.md
    python benchmarks/bench_gpu.py --quick          # tiny shapes: checks the script runs
    python benchmarks/bench_gpu.py --quick --device cpu   # the same code path without a GPU (tests)

The alternatives are bench_ops.py's (torch.segment_reduce, scatter_reduce, index_add_, index_select,
sparse-CSR matmul = cuSPARSE), moved to the GPU, timed with CUDA events, interleaved repeat by repeat;
median ms. The bandwidth table compares segment sum / max with a device-to-device copy of the same
input in the same run.
"""

from __future__ import annotations

import argparse

import bench_ops
import torch
from bench_ops import Case, alternatives, run

import torch_segment_ops as ts

MAX_INPUT_BYTES = 4 << 30  # shapes whose input is larger are skipped (fwd+bwd needs several copies)
DEVICE = "cuda"


def on_gpu(case: Case) -> Case:
    for name, value in vars(case).items():
        if isinstance(value, torch.Tensor):
            setattr(case, name, value.to(DEVICE))
    return case


def timed(fn, x: torch.Tensor, backward: bool) -> float:
    """Seconds of fn(x) (and its backward): CUDA events on the GPU, bench_ops' wall clock elsewhere."""
    if DEVICE != "cuda":
        return run(fn, x, backward)
    if backward:
        x = x.detach().requires_grad_()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    out = fn(x)
    if backward:
        out.backward(torch.ones_like(out))
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def compare(fns, x, backward: bool, repeats: int) -> dict[str, float | None]:
    # exactly `repeats` runs: CUDA events are steady, and the GPU check's time is budgeted
    return bench_ops.compare(fns, x, backward, repeats, timer=timed, budget_s=0.0)


def shapes(sizes, feats):
    """(E, F, lengths kind, Case on the device) for every shape within MAX_INPUT_BYTES; frees each after use."""
    for rows_e in sizes:
        for feat in feats:
            if rows_e * feat * 4 > MAX_INPUT_BYTES:
                continue
            for kind in ("uniform", "skewed"):
                yield rows_e, feat, kind, on_gpu(Case(rows_e, feat, kind))
                if DEVICE == "cuda":
                    torch.cuda.empty_cache()


def op_table(op: str, sizes, feats, repeats) -> list[str]:
    rows, names = [], []
    for rows_e, feat, kind, case in shapes(sizes, feats):
        fns = alternatives(op, case)
        names = list(fns)
        x = case.seg_src if op == "gather" else case.src
        for backward in (False, True):
            ms = compare(fns, x, backward, repeats)
            rows.append((rows_e, feat, kind, "fwd+bwd" if backward else "fwd", ms))
            print(op, rows[-1][:4], {k: v and round(v, 3) for k, v in ms.items()}, flush=True)
    header = ["E", "F", "lengths", "pass", *names, "best alternative", "ratio"]
    lines = [f"### {op}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    wins = 0
    for rows_e, feat, kind, passname, ms in rows:
        alts = {k: v for k, v in ms.items() if k != "ours" and v is not None}
        best = min(alts, key=alts.get)
        ratio = alts[best] / ms["ours"]
        wins += ratio >= 1
        cells = [f"{v:.3f}" if v is not None else "n/a" for v in ms.values()]
        lines.append(f"| {rows_e:.0e} | {feat} | {kind} | {passname} | " + " | ".join(cells)
                     + f" | {best} | **{ratio:.2f}x** |")
    return lines + ["", f"ours at least as fast as the best alternative in {wins} of {len(rows)} rows.", ""]


def bandwidth_table(sizes, feats, repeats) -> list[str]:
    lines = ["### segment sum / max vs a device-to-device copy", "",
             "GB/s = (bytes read + bytes written) / time; copy is `dst.copy_(src)` into a preallocated tensor.", "",
             "| E | F | lengths | sum ms | sum GB/s | max ms | max GB/s | copy ms | copy GB/s | sum / copy "
             "| max / copy |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rows_e, feat, kind, case in shapes(sizes, feats):
        dst = torch.empty_like(case.src)
        fns = {"sum": lambda x, c=case: ts.segment_reduce(x, c.indptr),
               "max": lambda x, c=case: ts.segment_reduce(x, c.indptr, "max"),
               "copy": lambda x, d=dst: d.copy_(x)}
        ms = compare(fns, case.src, False, repeats)
        nbytes = case.src.numel() * 4
        reduced = (nbytes + case.segs * feat * 4 + case.indptr.numel() * 8) / 1e6
        bw = {k: reduced / ms[k] for k in ("sum", "max")}
        bw["copy"] = 2 * nbytes / 1e6 / ms["copy"]
        lines.append(f"| {rows_e:.0e} | {feat} | {kind} | {ms['sum']:.3f} | {bw['sum']:.0f} | "
                     f"{ms['max']:.3f} | {bw['max']:.0f} | {ms['copy']:.3f} | {bw['copy']:.0f} | "
                     f"**{bw['sum'] / bw['copy']:.0%}** | **{bw['max'] / bw['copy']:.0%}** |")
        del dst
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 repeats (checks the script runs)")
    parser.add_argument("--out", help="write the markdown report here")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu to check the script without a GPU")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    sizes, feats, repeats = [10**6, 10**7], [1, 16, 64, 256], 10
    if args.quick:
        sizes, feats, repeats = [5000], [1, 16], 2
    command = "python benchmarks/bench_gpu.py" + (" --quick" if args.quick else "")
    device = torch.cuda.get_device_name() if DEVICE == "cuda" else f"none ({DEVICE}: a check of the script)"
    report = ["# GPU benchmark", "",
              f"Command: `{command}` (run by `python -m ci gpu-check`). GPU: {device}, "
              f"torch {torch.__version__} (CUDA {torch.version.cuda}), torch_segment_ops {ts.__version__} "
              f"(build {ts._cuda_build.directory.name if ts._cuda_build else 'none'}), float32, median of "
              f"{repeats} runs, ms (CUDA events on a GPU). Lengths: uniform in [0, 32) (mean 16); skewed = four "
              f"segments hold 80% of the rows. Shapes whose input exceeds {MAX_INPUT_BYTES >> 30} GiB are skipped.", ""]
    for op in ("sum", "mean", "max", "gather", "softmax"):
        report += op_table(op, sizes, feats, repeats)
    report += bandwidth_table(sizes, feats, repeats)
    text = "\n".join(report)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
