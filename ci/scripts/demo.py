"""A short demo of the installed package (run from outside the source tree)."""

import torch

import torch_segment_ops as ts

src = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
lengths = torch.tensor([2, 0, 2])
indptr = ts.lengths_to_indptr(lengths)
print(f"torch {torch.__version__}, torch_segment_ops {ts.__version__} ({ts._build.directory})")
print("indptr:", indptr.tolist())
for reduce in ("sum", "mean", "min", "max"):
    print(f"segment_reduce {reduce:4}:", ts.segment_reduce(src, indptr, reduce).tolist())
print("gather_csr:", ts.gather_csr(torch.tensor([10.0, 20.0, 30.0]), indptr).tolist())
print("segment_softmax:", ts.segment_softmax(src[:, 0], indptr).tolist())
