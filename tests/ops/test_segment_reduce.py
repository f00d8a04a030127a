import pytest
import torch

import torch_segment_ops as ts
from tests import reference as ref

REDUCTIONS = ["sum", "mean", "min", "max"]
SHAPES = [  # (E rows, N segments, feature shape)
    (0, 0, ()),
    (0, 3, (4,)),
    (1, 1, ()),
    (17, 5, (3,)),
    (40, 7, (2, 3)),
    (300, 4, ()),
    (5, 3, (0,)),
]


def run_both(op, reference, src, indptr, *args):
    """Forward and backward of op and reference; returns both (out, grad) pairs."""
    x1, x2 = src.clone().requires_grad_(), src.clone().requires_grad_()
    out, expected = op(x1, indptr, *args), reference(x2, indptr, *args)
    # seeded: the unseeded global generator made the result depend on which tests ran before
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(out.numel())).to(out.dtype)
    out.backward(grad)
    expected.backward(grad)
    return (out, x1.grad), (expected, x2.grad)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", ref.DTYPES, ids=str)
@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_matches_reference(reduce, dtype, shape):
    rows, segs, feat = shape
    g = torch.Generator().manual_seed(rows * 31 + segs)
    src = torch.randn((rows, *feat), generator=g).to(dtype)
    indptr = ref.random_indptr(rows, segs, g)
    (out, grad), (expected, expected_grad) = run_both(ts.segment_reduce, ref.segment_reduce, src, indptr, reduce)
    assert out.shape == (segs, *feat)
    ref.assert_close(out, expected)
    ref.assert_close(grad, expected_grad)


@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_int32_indptr_and_non_contiguous_src(reduce):
    src = torch.randn(6, 50).t()[:, ::2]  # (50, 3), neither contiguous nor dense
    assert not src.is_contiguous()
    indptr = torch.tensor([0, 10, 10, 31, 50], dtype=torch.int32)
    (out, grad), (expected, expected_grad) = run_both(ts.segment_reduce, ref.segment_reduce, src, indptr, reduce)
    ref.assert_close(out, expected)
    ref.assert_close(grad, expected_grad)


@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_empty_segments_give_zero(reduce):
    src = torch.full((4, 2), -7.0)
    out = ts.segment_reduce(src, torch.tensor([0, 0, 4, 4]), reduce)
    assert out[0].tolist() == [0.0, 0.0] and out[2].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("reduce", ["min", "max"])
def test_gradient_goes_to_first_extreme_row(reduce):
    src = torch.tensor([[1.0], [3.0], [3.0], [-2.0], [-2.0]], requires_grad=True)
    value = 3.0 if reduce == "max" else -2.0
    out = ts.segment_reduce(src, torch.tensor([0, 5]), reduce)
    out.sum().backward()
    assert out.item() == value
    first = src.detach().squeeze(1).tolist().index(value)
    assert src.grad.squeeze(1).tolist() == [1.0 if i == first else 0.0 for i in range(5)]


@pytest.mark.parametrize("reduce", ["min", "max"])
def test_infinite_segment_still_routes_gradient(reduce):
    inf = float("inf") if reduce == "min" else -float("inf")
    src = torch.tensor([inf, inf], requires_grad=True)
    ts.segment_reduce(src, torch.tensor([0, 2]), reduce).sum().backward()
    assert src.grad.tolist() == [1.0, 0.0]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_skewed_segments_across_chunks(reduce, threads):
    """A few huge segments cross the row chunks the kernel splits work into."""
    lengths = torch.tensor([150_000, 3, 0, 1, 60_000, 0] + [7] * 40)
    indptr = ts.lengths_to_indptr(lengths)
    src = torch.randn(int(lengths.sum()), 2, dtype=torch.float64)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = ts.segment_reduce(src, indptr, reduce)
    finally:
        torch.set_num_threads(before)
    ref.assert_close(out, ref.segment_reduce(src, indptr, reduce))


@pytest.mark.parametrize("dtype", ref.DTYPES, ids=str)
@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_rows_of_16_across_chunks(reduce, dtype):
    """Width 16 has its own sum/mean loop (csrc/segment.h: reduce_fixed_width); segments here cross the
    row chunks, and an empty one and one of a single row sit between them."""
    lengths = torch.tensor([5_000, 0, 1, 3_000] + [9] * 300)
    indptr = ts.lengths_to_indptr(lengths)
    src = torch.randn(int(lengths.sum()), 4, 4, generator=torch.Generator().manual_seed(16)).to(dtype)
    ref.assert_close(ts.segment_reduce(src, indptr, reduce), ref.segment_reduce(src, indptr, reduce))


@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_gradcheck(reduce):
    src = torch.randn(12, 3, dtype=torch.float64, requires_grad=True)
    indptr = torch.tensor([0, 4, 4, 9, 12])
    assert torch.autograd.gradcheck(lambda x: ts.segment_reduce(x, indptr, reduce), (src,))
    assert torch.autograd.gradgradcheck(lambda x: ts.segment_reduce(x, indptr, reduce), (src,))


@pytest.mark.parametrize("return_arg", [True, False])
@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_opcheck(reduce, return_arg):
    src = torch.randn(12, 3, requires_grad=return_arg)
    args = (src, torch.tensor([0, 4, 4, 12]), reduce, return_arg)
    torch.library.opcheck(torch.ops.torch_segment_ops.segment_reduce.default, args)


@pytest.mark.parametrize("reduce", ["min", "max"])
def test_forward_only_skips_arg_but_matches(reduce):
    src = torch.randn(1000, 1)
    indptr = torch.tensor([0, 3, 3, 40, 1000])
    out, arg = torch.ops.torch_segment_ops.segment_reduce(src, indptr, reduce, False)
    assert arg.numel() == 0
    ref.assert_close(out, ref.segment_reduce(src, indptr, reduce))
    with_arg, arg = torch.ops.torch_segment_ops.segment_reduce(src, indptr, reduce, True)
    assert torch.equal(out, with_arg) and arg.shape == out.shape


@pytest.mark.parametrize("reduce", ["min", "max"])
@pytest.mark.parametrize("length", [1, 5, 16, 17, 100])
def test_first_extreme_and_nan_in_long_columns(reduce, length):
    """F=1 columns take a lane-split path: ties and NaN must still pick the first row."""
    src = torch.zeros(length)
    out, arg = torch.ops.torch_segment_ops.segment_reduce(src, torch.tensor([0, length]), reduce, True)
    assert out.item() == 0 and arg.item() == 0
    if length > 3:
        src[length - 2] = src[length - 1] = float("nan")
        for return_arg in (True, False):
            out, arg = torch.ops.torch_segment_ops.segment_reduce(src, torch.tensor([0, length]), reduce, return_arg)
            assert out.isnan().all() and (not return_arg or arg.item() == length - 2)
