import pytest
import torch

import torch_segment_ops as ts
from tests import reference as ref
from tests.ops.test_segment_reduce import SHAPES, run_both


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", ref.DTYPES, ids=str)
def test_matches_reference(dtype, shape):
    rows, segs, feat = shape
    g = torch.Generator().manual_seed(rows * 31 + segs)
    src = (3 * torch.randn((rows, *feat), generator=g)).to(dtype)
    indptr = ref.random_indptr(rows, segs, g)
    (out, grad), (expected, expected_grad) = run_both(ts.segment_softmax, ref.segment_softmax, src, indptr)
    ref.assert_close(out, expected)
    ref.assert_close(grad, expected_grad)


def test_stable_for_large_values():
    src = torch.tensor([1000.0, 1001.0, -1000.0, 5.0])
    out = ts.segment_softmax(src, torch.tensor([0, 2, 4]))
    assert torch.isfinite(out).all()
    ref.assert_close(out, ref.segment_softmax(src, torch.tensor([0, 2, 4])))


def test_large_skewed_non_contiguous():
    lengths = torch.tensor([120_000, 1, 0, 30_000, 2])
    indptr = ts.lengths_to_indptr(lengths).int()
    src = torch.randn(2, int(lengths.sum()), dtype=torch.float64).t()
    ref.assert_close(ts.segment_softmax(src, indptr), ref.segment_softmax(src, indptr))


def test_gradcheck():
    src = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    indptr = torch.tensor([0, 4, 4, 9, 12])
    assert torch.autograd.gradcheck(lambda x: ts.segment_softmax(x, indptr), (src,))
    assert torch.autograd.gradgradcheck(lambda x: ts.segment_softmax(x, indptr), (src,))


def test_opcheck():
    src = torch.randn(12, 3, requires_grad=True)
    torch.library.opcheck(torch.ops.torch_segment_ops.segment_softmax.default, (src, torch.tensor([0, 4, 4, 12])))
