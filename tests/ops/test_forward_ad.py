"""Forward-mode AD and torch.func: jvp / jacfwd and torch.autograd.forward_ad give the reference's
tangents (never the silent zeros of an op without a forward formula), grad / jacrev work, and the
transforms compose (vmap of jvp, jacfwd of jacrev)."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD

import torch_segment_ops as ts
from tests import reference as ref

INDPTR = torch.tensor([0, 2, 2, 6, 7])  # an empty segment and a one-row segment
REDUCTIONS = ("sum", "mean", "min", "max")
OPS = {
    **{f"segment_reduce_{r}": (lambda x, r=r: ts.segment_reduce(x, INDPTR, r),
                               lambda x, r=r: ref.segment_reduce(x, INDPTR, r), 7) for r in REDUCTIONS},
    "gather_csr": (lambda x: ts.gather_csr(x, INDPTR), lambda x: ref.gather_csr(x, INDPTR), 4),
    "gather_csr_size": (lambda x: ts.gather_csr(x, INDPTR, 7), lambda x: ref.gather_csr(x, INDPTR), 4),
    "segment_softmax": (lambda x: ts.segment_softmax(x, INDPTR), lambda x: ref.segment_softmax(x, INDPTR), 7),
}


def inputs(rows, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 3, generator=g, dtype=torch.float64), torch.randn(rows, 3, generator=g,
                                                                                 dtype=torch.float64)


@pytest.mark.parametrize("name", OPS)
def test_jvp_matches_the_reference(name):
    op, reference, rows = OPS[name]
    x, t = inputs(rows)
    out, tangent = torch.func.jvp(op, (x,), (t,))
    expected_out, expected = torch.func.jvp(reference, (x,), (t,))
    ref.assert_close(out, expected_out)
    ref.assert_close(tangent, expected)
    assert tangent.abs().sum() > 0


@pytest.mark.parametrize("name", OPS)
def test_jacfwd_equals_jacrev(name):
    op, _, rows = OPS[name]
    x, _ = inputs(rows, 1)
    ref.assert_close(torch.func.jacfwd(op)(x), torch.func.jacrev(op)(x))


@pytest.mark.parametrize("name", OPS)
def test_dual_tensors_carry_the_tangent(name):
    op, reference, rows = OPS[name]
    x, t = inputs(rows, 2)
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(op(fwAD.make_dual(x, t))).tangent
        expected = fwAD.unpack_dual(reference(fwAD.make_dual(x, t))).tangent
    ref.assert_close(tangent, expected)


@pytest.mark.parametrize("name", OPS)
def test_func_grad_matches_autograd(name):
    op, _, rows = OPS[name]
    x, t = inputs(rows, 4)
    y = x.clone().requires_grad_()
    (op(y) * op(t.detach())).sum().backward()
    ref.assert_close(torch.func.grad(lambda x: (op(x) * op(t)).sum())(x), y.grad)


def test_vmap_of_jvp_and_hessian_of_softmax():
    x, _ = inputs(7, 3)
    tangents = torch.randn(5, 7, 3, dtype=torch.float64)
    batched = torch.func.vmap(lambda t: torch.func.jvp(OPS["segment_softmax"][0], (x,), (t,))[1])(tangents)
    expected = torch.stack([torch.func.jvp(OPS["segment_softmax"][1], (x,), (t,))[1] for t in tangents])
    ref.assert_close(batched, expected)
    loss = lambda x: (ts.segment_softmax(x, INDPTR) ** 2).sum()  # noqa: E731
    ref_loss = lambda x: (ref.segment_softmax(x, INDPTR) ** 2).sum()  # noqa: E731
    ref.assert_close(torch.func.jacfwd(torch.func.jacrev(loss))(x), torch.func.hessian(ref_loss)(x))


def test_without_forward_ad_the_plain_op_path_is_taken(monkeypatch):
    """The autograd.Functions are used only under a dual level (compile cannot trace their jvp)."""
    calls = []
    monkeypatch.setattr(ts.ops._SegmentSoftmaxFn, "apply", lambda *a: calls.append(a))
    x, _ = inputs(7)
    ts.segment_softmax(x, INDPTR)
    assert calls == []
