"""The benchmark shapes, shared by the benchmark scripts (no import of torch_segment_ops here:
bench_abi.py loads two builds of the ops by hand)."""

import torch


def make_lengths(rows: int, kind: str, gen: torch.Generator) -> torch.Tensor:
    """Segment lengths summing to rows: uniform in [0, 32) (mean 16), or skewed:
    four segments hold 80% of the rows, the rest are uniform like above."""
    small_rows = rows if kind == "uniform" else rows // 5
    lengths = torch.randint(0, 32, (max(small_rows // 16, 1),), generator=gen)
    lengths[-1] = 0
    lengths[-1] = max(small_rows - int(lengths.sum()), 0)
    if kind == "skewed":
        big = torch.full((4,), (rows - int(lengths.sum())) // 4)
        big[-1] += rows - int(lengths.sum()) - int(big.sum())
        lengths = torch.cat([lengths, big])[torch.randperm(lengths.numel() + 4, generator=gen)]
    assert int(lengths.sum()) == rows
    return lengths
