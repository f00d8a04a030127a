import pytest
import torch

import torch_segment_ops as ts
from tests import reference as ref
from tests.ops.test_segment_reduce import run_both

SHAPES = [(0, 0, ()), (0, 3, (4,)), (1, 1, ()), (17, 5, (3,)), (40, 7, (2, 3)), (300, 4, ()), (5, 3, (0,))]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", ref.DTYPES, ids=str)
def test_matches_reference(dtype, shape):
    rows, segs, feat = shape
    g = torch.Generator().manual_seed(rows * 31 + segs)
    src = torch.randn((segs, *feat), generator=g).to(dtype)
    indptr = ref.random_indptr(rows, segs, g)
    (out, grad), (expected, expected_grad) = run_both(ts.gather_csr, ref.gather_csr, src, indptr)
    assert out.shape == (rows, *feat)
    ref.assert_close(out, expected)
    ref.assert_close(grad, expected_grad)


def test_size_argument_and_int32_non_contiguous():
    src = torch.randn(3, 8).t()  # (8, 3) non-contiguous
    indptr = torch.tensor([0, 2, 2, 5, 5, 5, 9, 9, 12], dtype=torch.int32)
    ref.assert_close(ts.gather_csr(src, indptr, 12), ref.gather_csr(src, indptr))
    with pytest.raises(ValueError, match=r"indptr\[-1\]"):
        ts.gather_csr(src, indptr, 11)


def test_large_skewed():
    lengths = torch.tensor([200_000, 0, 1, 5, 90_000])
    src = torch.randn(5, 3)
    indptr = ts.lengths_to_indptr(lengths)
    assert torch.equal(ts.gather_csr(src, indptr), ref.gather_csr(src, indptr))


def test_gradcheck():
    src = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    indptr = torch.tensor([0, 4, 4, 9, 12])
    assert torch.autograd.gradcheck(lambda x: ts.gather_csr(x, indptr), (src,))
    assert torch.autograd.gradgradcheck(lambda x: ts.gather_csr(x, indptr), (src,))


@pytest.mark.parametrize("size", [None, 12])
def test_opcheck(size):
    src = torch.randn(3, 2, requires_grad=True)
    torch.library.opcheck(torch.ops.torch_segment_ops.gather_csr.default, (src, torch.tensor([0, 4, 4, 12]), size))
