"""Random shapes, dtypes and (often invalid) indptrs: every call must either
match the reference or raise a clean Python exception, never crash."""

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import torch_segment_ops as ts
from tests import reference as ref

SRC_DTYPES = [*ref.DTYPES, *ref.DTYPES, torch.int64, torch.bool]
PTR_DTYPES = [torch.int64, torch.int32, torch.int64, torch.int32, torch.float32, torch.int16]
CLEAN_ERRORS = (ValueError, TypeError, RuntimeError, IndexError)


@st.composite
def cases(draw):
    rows = draw(st.integers(0, 12))
    feat = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
    lengths = draw(st.lists(st.integers(0, 5), max_size=6))
    indptr = [0] + torch.tensor(lengths, dtype=torch.long).cumsum(0).tolist()
    mutation = draw(st.sampled_from(["none", "none", "swap", "shift", "negate", "drop_first", "2d"]))
    if mutation == "swap" and len(indptr) > 2:
        i = draw(st.integers(0, len(indptr) - 2))
        indptr[i], indptr[i + 1] = indptr[i + 1], indptr[i]
    elif mutation == "shift":
        indptr = [v + draw(st.integers(-2, 2)) for v in indptr]
    elif mutation == "negate" and len(indptr) > 1:
        indptr[draw(st.integers(0, len(indptr) - 1))] *= -1
    elif mutation == "drop_first":
        indptr = indptr[1:]
    ptr = torch.tensor(indptr, dtype=draw(st.sampled_from(PTR_DTYPES)))
    if mutation == "2d":
        ptr = ptr.view(1, -1)
    if draw(st.booleans()):  # often make the row count consistent with indptr
        rows = indptr[-1] if indptr and indptr[-1] >= 0 else rows
    dtype = draw(st.sampled_from(SRC_DTYPES))
    src = (torch.randn((rows, *feat)) * 4).to(dtype)
    op = draw(st.sampled_from(["sum", "mean", "min", "max", "gather", "softmax", "bogus"]))
    return src, ptr, op


def call(src, ptr, op):
    if op == "gather":
        segs = ptr.shape[-1] - 1 if ptr.dim() else 0
        src = src[: max(segs, 0)]
        return src, ts.gather_csr(src, ptr), lambda: ref.gather_csr(src, ptr)
    if op == "softmax":
        return src, ts.segment_softmax(src, ptr), lambda: ref.segment_softmax(src, ptr)
    return src, ts.segment_reduce(src, ptr, op), lambda: ref.segment_reduce(src, ptr, op)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_result_or_clean_error(case):
    src, ptr, op = case
    try:
        src, out, expected = call(src, ptr, op)
    except CLEAN_ERRORS as error:
        event(f"clean {type(error).__name__}")
        assert "expected" in str(error) or "unknown" in str(error), error
        return
    event("valid input, checked against the reference")
    # it ran: the input must have been valid, and the result right
    assert src.dtype in ref.DTYPES and ptr.dtype in (torch.int64, torch.int32) and op != "bogus"
    ref.assert_close(out, expected(), src.dtype)


@pytest.mark.parametrize("op", ["sum", "max", "gather", "softmax"])
def test_valid_inputs_never_raise(op):
    """The positive half of the fuzz contract, on random valid inputs."""
    g = torch.Generator().manual_seed(1)
    for rows, segs in [(0, 0), (0, 2), (9, 1), (33, 8)]:
        src = torch.randn(rows, 2, generator=g)
        ptr = ref.random_indptr(rows, segs, g)
        src, out, expected = call(src if op != "gather" else torch.randn(segs, 2), ptr, op)
        ref.assert_close(out, expected())
