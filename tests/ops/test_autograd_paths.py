"""The eager autograd path (plain autograd.Functions) and the ops' registered autograd (what
torch.compile and direct torch.ops calls use) give the same results and gradients, to the bit."""

import pytest
import torch

import torch_segment_ops as ts
from tests import reference as ref

OPS = torch.ops.torch_segment_ops
CALLS = {  # name -> (public call, the same through the registered op)
    **{f"segment_reduce_{r}": (lambda x, p, r=r: ts.segment_reduce(x, p, r),
                               lambda x, p, r=r: OPS.segment_reduce(x, p, r, True)[0])
       for r in ("sum", "mean", "min", "max")},
    "gather_csr": (lambda x, p: ts.gather_csr(x[: p.numel() - 1], p, 30),
                   lambda x, p: OPS.gather_csr(x[: p.numel() - 1], p, 30)),
    "segment_softmax": (ts.segment_softmax, OPS.segment_softmax),
}


@pytest.mark.parametrize("name", CALLS)
def test_eager_path_matches_the_registered_autograd(name):
    public, registered = CALLS[name]
    g = torch.Generator().manual_seed(5)
    indptr = ref.random_indptr(30, 6, g)
    src = torch.randn(30, 3, generator=g)
    results = []
    for call in (public, registered):
        x = src.clone().requires_grad_()
        out = call(x, indptr)
        out.backward(torch.arange(out.numel(), dtype=out.dtype).view_as(out))
        results.append((out.detach(), x.grad, type(out.grad_fn).__name__))
    (out, grad, node), (expected, expected_grad, registered_node) = results
    assert node.startswith("_Eager") and not registered_node.startswith("_Eager")  # two different paths
    assert torch.equal(out, expected) and torch.equal(grad, expected_grad)
