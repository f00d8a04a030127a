"""What one small call costs in wall time, warm (called back to back) and cold (after writing a
buffer larger than the caches, as in bench_ops.py, where each repeat runs the other alternatives in
between). Instruction counts (count_instructions.py) do not see the cold case: a cache miss is one
instruction. Interleaved rounds, median microseconds per call, 1 thread, a 4-row float32 input:

    python benchmarks/call_cost.py            # the dev env's python, torch_segment_ops installed
    python benchmarks/call_cost.py --quick    # 3 rounds (checks that the script runs)
"""

import argparse
import statistics
import time

import torch

import torch_segment_ops as ts

x, indptr, lengths = torch.randn(4, 1), torch.tensor([0, 1, 4]), torch.tensor([1, 3])
KERNEL = torch.ops.torch_segment_ops.segment_reduce.default
FLUSH = torch.zeros(8 << 20)  # 32 MB


def below_autograd():
    with torch._C._AutoDispatchBelowAutograd():
        return KERNEL(x, indptr, "sum", False)[0]


def with_backward(fn):
    def call():
        leaf = x.detach().requires_grad_()
        out = fn(leaf)
        out.backward(torch.ones_like(out))
    return call


CALLS = {
    "ts.segment_reduce": lambda: ts.segment_reduce(x, indptr),
    "its kernel below autograd (torch.ops)": below_autograd,
    "torch.segment_reduce": lambda: torch.segment_reduce(x, "sum", lengths=lengths, unsafe=True),
    "ts.segment_reduce fwd+bwd": with_backward(lambda t: ts.segment_reduce(t, indptr)),
    "torch.segment_reduce fwd+bwd": with_backward(lambda t: torch.segment_reduce(t, "sum", lengths=lengths,
                                                                                  unsafe=True)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    rounds = 3 if parser.parse_args().quick else 201
    torch.set_num_threads(1)
    warm = {name: [] for name in CALLS}
    cold = {name: [] for name in CALLS}
    for _ in range(rounds):
        for name, call in CALLS.items():
            call()
            start = time.perf_counter()
            call()
            warm[name].append(time.perf_counter() - start)
            FLUSH.add_(1.0)
            start = time.perf_counter()
            call()
            cold[name].append(time.perf_counter() - start)
    print(f"torch {torch.__version__}, median of {rounds} interleaved rounds, microseconds per call")
    print("| call | warm | cold |\n|---|---|---|")
    for name in CALLS:
        print(f"| {name} | {statistics.median(warm[name]) * 1e6:.1f} | {statistics.median(cold[name]) * 1e6:.1f} |")


if __name__ == "__main__":
    main()
