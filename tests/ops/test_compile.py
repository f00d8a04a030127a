"""The ops under torch.compile(fullgraph=True): no graph breaks, same results."""

import torch

import torch_segment_ops as ts
from tests import reference as ref


def pipeline(x, indptr):
    pooled = ts.segment_reduce(x, indptr, "max")
    centered = x - ts.gather_csr(pooled, indptr, x.shape[0])
    return ts.segment_reduce(ts.segment_softmax(centered, indptr) * x, indptr, "mean")


def test_fullgraph_forward_and_backward():
    torch._dynamo.reset()
    x = torch.randn(30, 4, requires_grad=True)
    indptr = torch.tensor([0, 5, 5, 18, 30])
    compiled = torch.compile(pipeline, fullgraph=True)
    out = compiled(x, indptr)
    expected = pipeline(x, indptr)
    ref.assert_close(out, expected)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    ref.assert_close(grad, expected_grad)


def test_fullgraph_data_dependent_gather_size():
    torch._dynamo.reset()
    src = torch.randn(3, 2)
    indptr = torch.tensor([0, 4, 4, 9])
    out = torch.compile(lambda s, p: ts.gather_csr(s, p) * 2, fullgraph=True, backend="aot_eager")(src, indptr)
    ref.assert_close(out, 2 * ref.gather_csr(src, indptr))
