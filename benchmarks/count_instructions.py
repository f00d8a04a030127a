"""Per-call and per-row costs counted in instructions (callgrind), which, unlike times, do not
depend on a development machine's load. Run each case twice, with 0 and with n repeats, and divide
the difference:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null python count_instructions.py CASE 0
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python count_instructions.py CASE 2000

(`Collected : <count>` on valgrind's last line; 1 thread). Cases on a 4-row input (the cost of a
call): reduce, gather, softmax, torch (torch.segment_reduce), and *_bwd for forward + backward
of `out.backward(ones)`. Cases on E = 1e5 rows with uniform lengths (divide by n * 1e5 for a
row's cost): big_softmax F, big_sum F, big_torch_sum F, big_sparse_sum F (sparse CSR matmul),
big_max F, big_torch_max F, big_gather F, big_index_select F, big_repeat_interleave F with F the
row width.
"""

import sys

import bench_ops
import torch

import torch_segment_ops as ts


def small_cases() -> dict:
    x, indptr, lengths = torch.randn(4, 3), torch.tensor([0, 1, 2, 3, 4]), torch.ones(4, dtype=torch.long)
    leaf = x.clone().requires_grad_()

    def backward(fn):
        out = fn(leaf)
        out.backward(torch.ones_like(out))

    ops = {
        "reduce": lambda t: ts.segment_reduce(t, indptr, "sum"),
        "max": lambda t: ts.segment_reduce(t, indptr, "max"),
        "gather": lambda t: ts.gather_csr(t, indptr, 4),
        "softmax": lambda t: ts.segment_softmax(t, indptr),
        "torch": lambda t: torch.segment_reduce(t, "sum", lengths=lengths, unsafe=True),
    }
    cases = {name: (lambda fn=fn: fn(x)) for name, fn in ops.items()}
    cases.update({f"{name}_bwd": (lambda fn=fn: backward(fn)) for name, fn in ops.items()})
    return cases


def big_cases(feat: int) -> dict:
    c = bench_ops.Case(100_000, feat, "uniform")  # the benchmark's inputs for that row
    x, indptr, lengths = c.src, c.indptr, c.lengths
    return {
        "big_gather": lambda: ts.gather_csr(c.seg_src, indptr, 100_000),
        "big_index_select": lambda: c.seg_src.index_select(0, c.index),
        "big_repeat_interleave": lambda: c.seg_src.repeat_interleave(lengths, 0, output_size=100_000),
        "big_softmax": lambda: ts.segment_softmax(x, indptr),
        "big_sum": lambda: ts.segment_reduce(x, indptr, "sum"),
        "big_torch_sum": lambda: torch.segment_reduce(x, "sum", lengths=lengths, unsafe=True),
        "big_sparse_sum": lambda: c.csr @ x,
        "big_max": lambda: ts.segment_reduce(x, indptr, "max"),
        "big_torch_max": lambda: torch.segment_reduce(x, "max", lengths=lengths, unsafe=True),
    }


def main() -> None:
    torch.set_num_threads(1)
    case, repeats = sys.argv[1], int(sys.argv[2])
    cases = big_cases(int(sys.argv[3])) if case.startswith("big_") else small_cases()
    call = cases[case]
    call()  # the first call loads and resolves what later calls reuse
    for _ in range(repeats):
        call()


if __name__ == "__main__":
    main()
