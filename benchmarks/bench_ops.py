"""torch_segment_ops's ops vs the pure-PyTorch ways users have today.

Run it (builds and installs the package into the dev env first):
    python3.11 -m ci bench                 # full run, writes benchmarks/RESULTS.md
    python3.11 -m ci bench --quick         # tiny shapes, a smoke run of this script

Every alternative runs side by side with ours in one process, interleaved
repeat by repeat, so machine noise hits all of them alike; the tables give
median milliseconds and the ratio best-alternative / ours (> 1: ours faster).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from shapes import make_lengths

import torch_segment_ops as ts

try:  # optional: torch-scatter's segment_csr, when installed
    import torch_scatter
except ImportError:
    torch_scatter = None

Fn = Callable[[torch.Tensor], torch.Tensor]


class Case:
    """One input shape, with the index forms each alternative needs."""

    def __init__(self, rows: int, feat: int, kind: str):
        gen = torch.Generator().manual_seed(0)
        self.kind = kind
        self.lengths = make_lengths(rows, kind, gen)
        self.indptr = ts.lengths_to_indptr(self.lengths)
        self.segs = self.lengths.numel()
        self.index = torch.repeat_interleave(torch.arange(self.segs), self.lengths)
        self.src = torch.randn(rows, feat, generator=gen)  # (E, F)
        self.seg_src = torch.randn(self.segs, feat, generator=gen)  # (N, F), for gather
        self.expanded = self.index.view(-1, 1).expand(rows, feat)
        ones = torch.ones(rows)
        self.csr = torch.sparse_csr_tensor(self.indptr, torch.arange(rows), ones, (self.segs, rows))
        inv = 1.0 / self.lengths.clamp(min=1).float()
        self.csr_mean = torch.sparse_csr_tensor(self.indptr, torch.arange(rows), inv[self.index], (self.segs, rows))

    def empty_out(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(self.segs, x.shape[1])


def scatter_softmax(c: Case, x: torch.Tensor) -> torch.Tensor:
    seg_max = c.empty_out(x).scatter_reduce(0, c.expanded, x, "amax", include_self=False)
    e = (x - seg_max.index_select(0, c.index)).exp()
    return e / c.empty_out(x).index_add(0, c.index, e).index_select(0, c.index)


def alternatives(op: str, c: Case) -> dict[str, Fn]:
    """name -> function of the op's input; "ours" first."""
    if op == "gather":
        alts = {
            "ours": lambda x: ts.gather_csr(x, c.indptr, c.src.shape[0]),
            "index_select": lambda x: x.index_select(0, c.index),
            "repeat_interleave": lambda x: x.repeat_interleave(c.lengths, 0, output_size=c.src.shape[0]),
        }
        if torch_scatter:
            alts["torch_scatter"] = lambda x: torch_scatter.gather_csr(x, c.indptr)
        return alts
    if op == "softmax":
        return {"ours": lambda x: ts.segment_softmax(x, c.indptr), "scatter+exp": lambda x: scatter_softmax(c, x)}
    reduce = {"sum": "sum", "mean": "mean", "max": "amax"}[op]
    alts = {
        "ours": lambda x: ts.segment_reduce(x, c.indptr, op),
        "scatter_reduce": lambda x: c.empty_out(x).scatter_reduce(0, c.expanded, x, reduce, include_self=False),
        "torch.segment_reduce": lambda x: torch.segment_reduce(x, op, lengths=c.lengths, unsafe=True),
    }
    if op == "sum":
        alts["index_add"] = lambda x: c.empty_out(x).index_add(0, c.index, x)
        alts["sparse_csr@"] = lambda x: c.csr @ x
    if op == "mean":
        alts["sparse_csr@"] = lambda x: c.csr_mean @ x
    if torch_scatter:
        alts["torch_scatter"] = lambda x: torch_scatter.segment_csr(x, c.indptr, reduce=op)
    return alts


def run(fn: Fn, x: torch.Tensor, backward: bool) -> float:
    if not backward:
        start = time.perf_counter()
        fn(x)
        return time.perf_counter() - start
    x = x.detach().requires_grad_()
    start = time.perf_counter()
    out = fn(x)
    out.backward(torch.ones_like(out))
    return time.perf_counter() - start


THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
ROW_BUDGET_S = 0.5  # a fast row is repeated until its calls took about this long together (up to MAX_REPEATS)
MAX_REPEATS = 41
# the full run's sizes, feature widths, thread counts, repeats and row budget (page_faults.py reruns it)
FULL_GRID = ([10**5, 10**6], [1, 16, 64], [1, 2], 5, ROW_BUDGET_S)


def compare(fns: dict[str, Fn], x: torch.Tensor, backward: bool, repeats: int,
            timer: Callable[[Fn, torch.Tensor, bool], float] = run,
            budget_s: float = ROW_BUDGET_S) -> dict[str, float | None]:
    """Median ms per function, interleaved; None where the function cannot run. timer(fn, x, backward)
    returns seconds (default: the wall clock; bench_gpu.py passes CUDA events). A row whose calls take
    under budget_s together gets more than `repeats` runs (up to MAX_REPEATS): a median of 5
    sub-millisecond calls moved by up to 2x between runs; budget_s=0: exactly `repeats`."""
    times: dict[str, list[float]] = {}
    total = 0.0
    for name, fn in fns.items():
        try:
            total += timer(fn, x, backward)  # warm-up
            times[name] = []
        except (RuntimeError, NotImplementedError):
            pass
    names = list(times)
    repeats = max(repeats, min(MAX_REPEATS, int(budget_s / max(total, 1e-9))))
    for repeat in range(repeats if names else 0):  # rotated: no function always runs right after the same other one,
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:  # whose freed memory it may reuse
            times[name].append(timer(fns[name], x, backward))
    return {name: (statistics.median(times[name]) * 1e3 if name in times else None) for name in fns}


def op_table(op: str, sizes, feats, threads, repeats, budget_s: float) -> list[str]:
    names: list[str] = []
    rows = []
    for rows_e in sizes:
        for feat in feats:
            for kind in ("uniform", "skewed"):
                case = Case(rows_e, feat, kind)
                fns = alternatives(op, case)
                names = list(fns)
                x = case.seg_src if op == "gather" else case.src
                for nthreads in threads:
                    torch.set_num_threads(nthreads)
                    for backward in (False, True):
                        ms = compare(fns, x, backward, repeats, budget_s=budget_s)
                        rows.append((rows_e, feat, kind, nthreads, "fwd+bwd" if backward else "fwd", ms))
                        print(op, rows[-1][:5], {k: v and round(v, 2) for k, v in ms.items()}, flush=True)
    header = ["E", "F", "lengths", "threads", "pass", *names, "best alternative", "ratio"]
    lines = [f"### {op}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    wins = 0
    for rows_e, feat, kind, nthreads, passname, ms in rows:
        alts = {k: v for k, v in ms.items() if k != "ours" and v is not None}
        best = min(alts, key=alts.get)
        ratio = alts[best] / ms["ours"]
        wins += ratio >= 1
        cells = [f"{v:.2f}" if v is not None else "n/a" for v in ms.values()]
        lines.append(f"| {rows_e:.0e} | {feat} | {kind} | {nthreads} | {passname} | " + " | ".join(cells)
                     + f" | {best} | **{ratio:.2f}x** |")
    lines += ["", f"ours at least as fast as the best alternative in {wins} of {len(rows)} rows.", ""]
    return lines


def bandwidth_table(sizes, feats, threads, repeats, budget_s: float) -> list[str]:
    lines = ["### segment sum vs memory copy", "",
             "GB/s = (bytes read + bytes written) / time; copy is `dst.copy_(src)` into a preallocated tensor.", "",
             "| E | F | threads | segment sum ms | GB/s | copy ms | GB/s | sum / copy bandwidth |",
             "|---|---|---|---|---|---|---|---|"]
    for rows_e in sizes:
        for feat in feats:
            case = Case(rows_e, feat, "uniform")
            dst = torch.empty_like(case.src)
            for nthreads in threads:
                torch.set_num_threads(nthreads)
                fns = {"sum": lambda x, c=case: ts.segment_reduce(x, c.indptr), "copy": lambda x, d=dst: d.copy_(x)}
                ms = compare(fns, case.src, False, repeats, budget_s=budget_s)
                nbytes = case.src.numel() * 4
                sum_bw = (nbytes + case.segs * feat * 4) / ms["sum"] / 1e6
                copy_bw = 2 * nbytes / ms["copy"] / 1e6
                lines.append(f"| {rows_e:.0e} | {feat} | {nthreads} | {ms['sum']:.2f} | {sum_bw:.1f} | "
                             f"{ms['copy']:.2f} | {copy_bw:.1f} | **{sum_bw / copy_bw:.0%}** |")
    return lines + [""]


def thp_mode() -> str:
    """The kernel's transparent-huge-page mode, e.g. `madvise`, or why it is unknown."""
    try:
        return re.search(r"\[(\w+)\]", THP.read_text()).group(1)
    except (OSError, AttributeError):
        return "unknown (no " + str(THP) + ")"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 repeats (checks the script runs)")
    parser.add_argument("--out", help="write the markdown report here")
    args = parser.parse_args()
    sizes, feats, threads, repeats, budget_s = FULL_GRID
    if args.quick:
        sizes, feats, threads, repeats, budget_s = [2000], [1, 4], [1], 2, 0.0
    command = "python3.11 -m ci bench" + (" --quick" if args.quick else "")
    report = [
        "# Benchmark results", "",
        f"Command: `{command}`. Machine: {platform.machine()}, {torch.get_num_threads()} threads available, "
        f"torch {torch.__version__}, torch_segment_ops {ts.__version__}, float32, median of {repeats} runs in ms "
        f"(up to {MAX_REPEATS} in rows whose calls take under {budget_s / repeats:.1f} s together).",
        "Lengths: uniform = segment lengths uniform in [0, 32) (mean 16); skewed = four segments hold 80% "
        "of the rows. `fwd+bwd` times forward plus backward of `out.sum()`-like ones gradient.",
        f"Transparent huge pages: {thp_mode()}; THP_MEM_ALLOC_ENABLE (torch's opt-in to them for its tensors): "
        f"{os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')}.", "",
    ]
    if torch_scatter is None:
        why = os.environ.get("TORCH_SCATTER_SKIPPED", "it is not installed")
        report += [f"torch-scatter's column is absent: {why}.", ""]
    else:
        report += [f"torch-scatter {torch_scatter.__version__} (built from its sdist against this torch by "
                   "`python -m ci bench`) is one of the alternatives.", ""]
    for op in ("sum", "mean", "max", "gather", "softmax"):
        report += op_table(op, sizes, feats, threads, repeats, budget_s)
    report += bandwidth_table(sizes[-1:], [16, 64], threads, repeats, budget_s)
    text = "\n".join(report)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
