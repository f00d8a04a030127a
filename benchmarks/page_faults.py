"""One row of bench_ops.py in a fresh process, each call's time with the minor page faults it took:
at E = 1e6 and F >= 16 an output is a fresh mmap of 64 MB or more, and first touching its pages
costs more than the copy (a 4 KiB page per fault).

    python benchmarks/page_faults.py gather 1000000 16 uniform 1   # op E F lengths threads
"""

import resource
import sys

import bench_ops
import torch


def main() -> None:
    op, rows, feat, kind, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    torch.set_num_threads(threads)
    case = bench_ops.Case(rows, feat, kind)
    fns = bench_ops.alternatives(op, case)
    x = case.seg_src if op == "gather" else case.src
    calls: dict[str, list[tuple[float, int]]] = {name: [] for name in fns}

    def timer(fn, x, backward):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        seconds = bench_ops.run(fn, x, backward)
        name = next(n for n, f in fns.items() if f is fn)
        calls[name].append((seconds * 1e3, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
        return seconds

    medians = bench_ops.compare(fns, x, False, 5, timer)
    for name, ms in medians.items():
        runs = ", ".join(f"{t:.1f} ms/{faults} faults" for t, faults in calls[name][1:])  # [0]: the warm-up
        print(f"{name}: median {ms:.2f} ms ({runs})" if ms is not None else f"{name}: cannot run")


if __name__ == "__main__":
    main()
