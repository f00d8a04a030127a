"""Bad input raises a Python exception naming the argument; it never crashes."""

import pytest
import torch

import torch_segment_ops as ts

E = 6
GOOD_PTR = torch.tensor([0, 2, 6])
CALLS = {  # op name -> call(src_rows, indptr)
    "segment_reduce": lambda src, indptr: ts.segment_reduce(src, indptr, "sum"),
    "segment_softmax": ts.segment_softmax,
    "gather_csr": lambda src, indptr: ts.gather_csr(src[: indptr.numel() - 1] if src.dim() else src, indptr),
}
BAD_INPUTS = [  # (id, src, indptr, exception, message)
    ("int src", torch.ones(E, dtype=torch.int64), GOOD_PTR, TypeError, "`src` to be float32"),
    ("bool src", torch.ones(E, dtype=torch.bool), GOOD_PTR, TypeError, "`src` to be float32"),
    ("0-d src", torch.tensor(1.0), GOOD_PTR, ValueError, "`src` to have at least 1 dimension"),
    ("float indptr", torch.ones(E), GOOD_PTR.float(), TypeError, "`indptr` to be int64 or int32"),
    ("2-D indptr", torch.ones(E), GOOD_PTR.view(1, -1), ValueError, "`indptr` to be 1-D"),
    ("empty indptr", torch.ones(E), torch.tensor([], dtype=torch.long), ValueError, "`indptr` to have at least one"),
    ("not starting at 0", torch.ones(E), torch.tensor([1, 2, 6]), ValueError, r"`indptr\[0\] == 0`"),
    ("not monotonic", torch.ones(E), torch.tensor([0, 4, 2, 6]), ValueError, "`indptr` to be non-decreasing"),
    ("negative", torch.ones(E), torch.tensor([0, -1, 6]), ValueError, "`indptr` to be non-negative"),
    ("meta src", torch.ones(E, device="meta"), GOOD_PTR, ValueError, "`src` on the CPU"),
    ("meta indptr", torch.ones(E), GOOD_PTR.to("meta"), ValueError, "`indptr` on the same device as `src`"),
]


@pytest.mark.parametrize("op", list(CALLS))
@pytest.mark.parametrize("case", BAD_INPUTS, ids=lambda c: c[0])
def test_bad_input(op, case):
    _, src, indptr, exc, message = case
    with pytest.raises(exc, match=f"{op}\\(\\): expected {message}"):
        CALLS[op](src, indptr)


@pytest.mark.parametrize("op", ["segment_reduce", "segment_softmax"])
def test_indptr_not_ending_at_rows(op):
    with pytest.raises(ValueError, match=r"expected `indptr\[-1\]` to equal the number of rows \(6\), got 5"):
        CALLS[op](torch.ones(E), torch.tensor([0, 2, 5]))


def test_gather_rows_must_match_segments():
    with pytest.raises(ValueError, match="gather_csr\\(\\): expected `src` to have one row per segment"):
        ts.gather_csr(torch.ones(3), GOOD_PTR)


def test_unknown_reduce():
    with pytest.raises(ValueError, match="expected `reduce` to be one of 'sum', 'mean', 'min', 'max', got 'prod'"):
        ts.segment_reduce(torch.ones(E), GOOD_PTR, "prod")


@pytest.mark.parametrize("case", BAD_INPUTS[:-2], ids=lambda c: c[0])  # the meta cases go to the fake kernels
def test_raw_op_checks_too(case):
    """torch.ops.torch_segment_ops.* (bypassing the Python wrappers) validates as well, with the same
    message; a stable-ABI kernel can only raise RuntimeError (documented in docs/api.md)."""
    _, src, indptr, _, message = case
    with pytest.raises(RuntimeError, match=f"segment_reduce\\(\\): expected {message}"):
        torch.ops.torch_segment_ops.segment_reduce(src, indptr, "sum", False)


def test_raw_op_on_meta_tensors_checks_the_device():
    with pytest.raises(ValueError, match="same device"):
        torch.ops.torch_segment_ops.segment_softmax(torch.ones(E), GOOD_PTR.to("meta"))
