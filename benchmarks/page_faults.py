"""One row of bench_ops.py, each call's time with the minor page faults it took and where glibc's
malloc put its output: at E = 1e6 and F >= 16 an output is 64 MB or more, and first touching fresh
pages costs more than the copy (a 4 KiB page per fault).

    python benchmarks/page_faults.py gather 1000000 16 skewed 1                     # a fresh process
    python benchmarks/page_faults.py gather 1000000 16 skewed 1 --tables sum,gather  # inside bench_ops' tables
    python benchmarks/page_faults.py sum 100000 64 uniform 1 --backward --tables sum  # a fwd+bwd row

Each call: its milliseconds, the system (kernel) milliseconds within them, its minor faults, and for
a forward call where its output lies.

"heap": the output came from a free chunk of the main heap, whose pages are already resident (no faults);
"mmap": a fresh mapping (one fault per page). "fill": `torch.empty` of the output's shape filled with
ones, the floor for writing that many fresh pages. In a fresh process every large output is "mmap". With
--tables the row is recorded where bench_ops' full tables (for those ops, in that order) run it, after
the earlier rows, whose freed memory leaves free chunks in the heap: which call finds one big enough
depends on that history, not on the op. With THP_MEM_ALLOC_ENABLE=1 in the environment torch asks for
transparent huge pages for large tensors (where the kernel allows it: "madvise" or "always" in
/sys/kernel/mm/transparent_hugepage/enabled), one fault per 2 MiB instead of per 4 KiB (what that did
on a development VM, and why our ops do not ask for huge pages themselves: docs/performance.md).
"""

import argparse
import ctypes
import ctypes.util
import resource
import statistics
import time

import bench_ops
import torch


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def _mmapped_bytes():
    """A function giving glibc's bytes in mmapped chunks (mallinfo2().hblkhd, glibc >= 2.33), or None elsewhere."""
    try:
        mallinfo2 = ctypes.CDLL(ctypes.util.find_library("c")).mallinfo2
    except (AttributeError, OSError, TypeError):
        return None
    mallinfo2.restype = _MallInfo2
    return lambda: mallinfo2().hblkhd


MMAPPED = _mmapped_bytes()


def recorded(fn, calls: list, threads: int, backward: bool):
    """fn, recording (ms, system-time ms, faults, where) for each call made on `threads` threads with
    (backward) or without a gradient; with one, the record ends when the output's backward() returns."""

    def call(x):
        if x.requires_grad != backward or torch.get_num_threads() != threads:
            return fn(x)
        before, in_mmaps, start = resource.getrusage(resource.RUSAGE_SELF), MMAPPED and MMAPPED(), time.perf_counter()
        out = fn(x)

        def record(where=""):
            seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
            calls.append((seconds * 1e3, (after.ru_stime - before.ru_stime) * 1e3,
                          after.ru_minflt - before.ru_minflt, where))

        if not backward:
            record("" if MMAPPED is None else "/mmap" if MMAPPED() > in_mmaps else "/heap")  # out is still alive
            return out
        plain_backward = out.backward

        def backward_then_record(*args, **kwargs):
            plain_backward(*args, **kwargs)
            record()
        out.backward = backward_then_record
        return out
    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("op", choices=["sum", "mean", "max", "gather", "softmax"])
    parser.add_argument("rows", type=int)
    parser.add_argument("feat", type=int)
    parser.add_argument("kind", choices=["uniform", "skewed"])
    parser.add_argument("threads", type=int)
    parser.add_argument("--backward", action="store_true", help="the row's fwd+bwd pass (default: fwd)")
    parser.add_argument("--tables", default="", help="comma-separated ops whose bench_ops tables to run")
    args = parser.parse_args()
    calls: dict[str, list] = {}
    plain = bench_ops.alternatives

    def alternatives(op, case):
        fns = plain(op, case)
        if op != args.op or (case.src.shape[0], case.src.shape[1], case.kind) != (args.rows, args.feat, args.kind):
            return fns
        shape = (case.segs, args.feat) if op in ("sum", "mean", "max") else case.src.shape
        fns = fns if args.backward else {**fns, "fill": lambda x: torch.empty(shape).fill_(1.0)}
        return {name: recorded(fn, calls.setdefault(name, []), args.threads, args.backward)
                for name, fn in fns.items()}

    bench_ops.alternatives = alternatives
    for op in filter(None, args.tables.split(",")):
        bench_ops.op_table(op, *bench_ops.FULL_GRID)
    if not calls:  # a fresh process, or the tables did not hold the row
        torch.set_num_threads(args.threads)
        case = bench_ops.Case(args.rows, args.feat, args.kind)
        x = case.seg_src if args.op == "gather" else case.src
        bench_ops.compare(alternatives(args.op, case), x, args.backward, 5)
    for name, runs in calls.items():
        runs = runs[1:]  # [0]: the warm-up
        listed = ", ".join(f"{ms:.1f} ms/{sys:.0f} sys/{faults} faults{where}" for ms, sys, faults, where in runs[:9])
        listed += ", ..." if len(runs) > 9 else ""
        print(f"{name}: median {statistics.median(run[0] for run in runs):.2f} ms ({listed})" if runs else
              f"{name}: cannot run")


if __name__ == "__main__":
    main()
