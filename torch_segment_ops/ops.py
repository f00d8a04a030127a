"""Python API of the ops, their fake (meta) kernels and their autograd formulas.

The kernels live in ``csrc/`` and are registered as ``torch.ops.torch_segment_ops.*``.
Registering fake kernels and autograd here (not in C++) is what makes the ops
work under ``torch.compile(fullgraph=True)`` and pass ``torch.library.opcheck``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _cuda_build

_KERNELS = {name: getattr(torch.ops.torch_segment_ops, name).default
            for name in ("segment_reduce", "gather_csr", "segment_softmax")}
# Where kernels are registered: the CPU always, CUDA when the CUDA build for torch's CUDA major is loaded.
DEVICES = ("cpu", "cuda") if _cuda_build else ("cpu",)
REDUCTIONS = ("sum", "mean", "min", "max")


def segment_reduce(src: Tensor, indptr: Tensor, reduce: str = "sum") -> Tensor:
    """Reduce the rows of ``src`` (shape ``(E, *F)``) within each CSR segment.

    Segment ``i`` holds rows ``indptr[i]:indptr[i + 1]``; the result has shape
    ``(N, *F)`` with ``N = indptr.numel() - 1``. ``reduce`` is one of ``"sum"``,
    ``"mean"``, ``"min"``, ``"max"``. Empty segments give 0 for every reduction.
    The gradient of ``min``/``max`` flows to the first row reaching the extreme.
    """
    _check_args("segment_reduce", src, indptr)
    if reduce not in REDUCTIONS:
        raise ValueError(f"segment_reduce(): expected `reduce` to be one of {', '.join(map(repr, REDUCTIONS))}, "
                         f"got {reduce!r}")
    return _segment_reduce(src, indptr, reduce)


def gather_csr(src: Tensor, indptr: Tensor, size: int | None = None) -> Tensor:
    """Repeat row ``i`` of ``src`` (shape ``(N, *F)``) for every row of segment ``i``.

    The result has shape ``(E, *F)`` with ``E = indptr[-1]``. Passing ``size=E``
    when it is known avoids a data-dependent output shape under ``torch.compile``.
    """
    _check_args("gather_csr", src, indptr)
    if src.shape[0] != indptr.shape[0] - 1:
        raise ValueError(f"gather_csr(): expected `src` to have one row per segment ({indptr.shape[0] - 1} = "
                         f"indptr.numel() - 1), got {src.shape[0]} rows")
    return _gather_csr(src, indptr, size)


def segment_softmax(src: Tensor, indptr: Tensor) -> Tensor:
    """Softmax over the rows of each segment of ``src`` (shape ``(E, *F)``), per column."""
    _check_args("segment_softmax", src, indptr)
    route = _route(src)
    if route == "op":
        return _KERNELS["segment_softmax"](src, indptr)
    if route == "transform":
        return _SegmentSoftmaxFn.apply(src, indptr)
    if route == "eager":
        return _EagerSoftmax.apply(src, indptr)
    return _call("segment_softmax", src, indptr)


def lengths_to_indptr(lengths: Tensor) -> Tensor:
    """CSR offsets (int64, ``numel() + 1`` entries) from 1-D non-negative segment lengths."""
    if lengths.dim() != 1 or lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise ValueError(
            f"lengths_to_indptr(): expected `lengths` to be a 1-D integer tensor, "
            f"got {lengths.dim()}-D {lengths.dtype}"
        )
    if lengths.dtype in _UNSIGNED:  # torch has few kernels for them: widen; a uint64 past int64 is negative then
        lengths = lengths.to(torch.int64)
        if lengths.numel() and bool((lengths < 0).any()):
            raise ValueError("lengths_to_indptr(): the sum of `lengths` overflows int64")
    if lengths.numel() and bool((lengths < 0).any()):
        raise ValueError("lengths_to_indptr(): expected `lengths` to be non-negative")
    indptr = lengths.new_zeros(lengths.numel() + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=indptr[1:])
    if lengths.numel() and bool((indptr[1:] < indptr[:-1]).any()):  # int64 wrapped around
        raise ValueError("lengths_to_indptr(): the sum of `lengths` overflows int64")
    return indptr


# The ops on arguments already checked (the public functions above, the derivative formulas below).


def _segment_reduce(src: Tensor, indptr: Tensor, reduce: str) -> Tensor:
    route = _route(src)
    if route == "op":  # min/max only find the arg-extreme rows when backward will need them
        return _KERNELS["segment_reduce"](src, indptr, reduce, src.requires_grad and torch.is_grad_enabled())[0]
    if route == "transform":
        return _SegmentReduceFn.apply(src, indptr, reduce)[0]
    if route == "eager":
        return _EagerReduce.apply(src, indptr, reduce)
    return _call("segment_reduce", src, indptr, reduce, False)[0]


def _gather_csr(src: Tensor, indptr: Tensor, size: int | None) -> Tensor:
    route = _route(src)
    if route == "op":
        return _KERNELS["gather_csr"](src, indptr, size)
    if route == "transform":
        return _GatherCsrFn.apply(src, indptr, size)
    if route == "eager":
        return _EagerGather.apply(src, indptr, size)
    return _call("gather_csr", src, indptr, size)


def _route(src: Tensor) -> str:
    """How a call runs: "op", the registered op with its registered autograd (torch.compile traces it);
    "transform", an autograd.Function with forward-AD and vmap rules (forward AD or a torch.func transform
    is active, below); "eager", a plain autograd.Function (a gradient is recorded, below); "below", the
    kernel below the Autograd key (no gradient is recorded: the registered autograd kernel is a Python
    function torch would run on every call, a third of a small call's cost, only to pass it on)."""
    if torch.compiler.is_compiling():
        return "op"
    if getattr(torch.autograd.forward_ad, "_current_level", 0) >= 0 or \
            torch._C._functorch.is_functorch_wrapped_tensor(src):
        return "transform"
    return "eager" if src.requires_grad and torch.is_grad_enabled() else "below"


# Argument checks. The kernels check everything too, but a stable-ABI kernel
# can only raise RuntimeError (STD_TORCH_CHECK); the public API promises
# TypeError/ValueError naming the argument, so what needs no data is checked
# here and the kernels' data-dependent indptr errors are re-raised as ValueError.

_UNSIGNED = tuple(getattr(torch, name) for name in ("uint16", "uint32", "uint64") if hasattr(torch, name))
SRC_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
INDPTR_DTYPES = (torch.int64, torch.int32)


def _check_args(op: str, src: Tensor, indptr: Tensor) -> None:
    for name, tensor in (("src", src), ("indptr", indptr)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{op}(): expected `{name}` to be a Tensor, got {type(tensor).__name__}")
    _check_devices(op, src, indptr)
    if src.dtype not in SRC_DTYPES:
        raise TypeError(f"{op}(): expected `src` to be float32, float64, bfloat16 or float16, got {src.dtype}")
    if src.dim() < 1:
        raise ValueError(f"{op}(): expected `src` to have at least 1 dimension (rows along dim 0), got a 0-d tensor")
    if indptr.dtype not in INDPTR_DTYPES:
        raise TypeError(f"{op}(): expected `indptr` to be int64 or int32, got {indptr.dtype}")
    if indptr.dim() != 1:
        raise ValueError(f"{op}(): expected `indptr` to be 1-D, got {indptr.dim()}-D with shape {tuple(indptr.shape)}")
    if indptr.numel() < 1:
        raise ValueError(f"{op}(): expected `indptr` to have at least one element (indptr[0] == 0)")


def _check_devices(op: str, src: Tensor, indptr: Tensor) -> None:
    # Without this check a tensor on a device we have no kernels for would get the
    # dispatcher's "Could not run ... with arguments from the '...' backend", which names no argument.
    if src.device.type not in DEVICES:
        where = "on the CPU (only CPU kernels are loaded)" if DEVICES == ("cpu",) else "on the CPU or a CUDA device"
        raise ValueError(f"{op}(): expected `src` {where}, got {src.device}")
    if indptr.device != src.device:
        raise ValueError(f"{op}(): expected `indptr` on the same device as `src` ({src.device}), got {indptr.device}")


def _call(op: str, *args):
    """torch.ops.torch_segment_ops.<op>(*args) for a call that records no gradient (see _route), its
    argument errors re-raised as ValueError. A tensor wrapped by a torch.func transform goes through the
    dispatcher's transform keys; any other below the Autograd key."""
    kernel = _KERNELS[op]
    try:
        if torch._C._functorch.is_functorch_wrapped_tensor(args[0]):
            return kernel(*args)
        with _BelowAutograd():
            return kernel(*args)
    except RuntimeError as error:
        message = str(error)
        start = message.find(f"{op}(): expected `")
        if start < 0:
            raise
        raise ValueError(message[start:].splitlines()[0]) from None


# Fake kernels: output metadata only, for torch.compile and meta tensors.


def _check_same_device(op: str, src: Tensor, indptr: Tensor) -> None:
    torch._check_value(
        src.device == indptr.device,
        lambda: f"{op}(): expected `indptr` on the same device as `src` ({src.device}), got {indptr.device}",
    )


@torch.library.register_fake("torch_segment_ops::segment_reduce")
def _(src, indptr, reduce="sum", return_arg=True):
    _check_same_device("segment_reduce", src, indptr)
    torch._check_value(reduce in REDUCTIONS, lambda: f"segment_reduce(): unknown reduce {reduce!r}")
    torch._check_value(indptr.dim() == 1, lambda: "segment_reduce(): expected `indptr` to be 1-D")
    shape = (indptr.shape[0] - 1, *src.shape[1:])
    arg_shape = shape if return_arg and reduce in ("min", "max") else (0,)
    return src.new_empty(shape), src.new_empty(arg_shape, dtype=torch.int64)


@torch.library.register_fake("torch_segment_ops::gather_csr")
def _(src, indptr, size=None):
    _check_same_device("gather_csr", src, indptr)
    torch._check(indptr.dim() == 1, lambda: "gather_csr(): expected `indptr` to be 1-D")
    rows = torch.library.get_ctx().new_dynamic_size() if size is None else size
    return src.new_empty((rows, *src.shape[1:]))


@torch.library.register_fake("torch_segment_ops::segment_softmax")
def _(src, indptr):
    _check_same_device("segment_softmax", src, indptr)
    return torch.empty_like(src, memory_format=torch.contiguous_format)


# Autograd. Backward formulas are built from the ops themselves (and stock
# torch ops), so they are differentiable again and traceable by compile.


def _per_row(values: Tensor, like: Tensor) -> Tensor:
    """Shape a 1-D per-segment tensor to broadcast against ``like`` (N, *F)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _reduce_setup(ctx, inputs, output):
    src, indptr, reduce, _ = inputs
    ctx.reduce = reduce
    ctx.rows = src.shape[0]
    ctx.save_for_backward(indptr, output[1])


def _reduce_backward(ctx, grad_out, _grad_arg):
    indptr, arg = ctx.saved_tensors
    if ctx.reduce in ("min", "max"):
        if arg.numel() != grad_out.numel():
            raise RuntimeError("segment_reduce(): backward of min/max needs the op called with return_arg=True")
        # arg is the winning row per (segment, column); empty segments point at
        # row E, which lands in the extra row we drop.
        grad = grad_out.new_zeros((ctx.rows + 1, *grad_out.shape[1:]))
        return grad.scatter_(0, arg, grad_out)[: ctx.rows], None, None, None  # in place: one (E+1, F) buffer
    if ctx.reduce == "mean":
        counts = (indptr[1:] - indptr[:-1]).clamp(min=1).to(grad_out.dtype)
        grad_out = grad_out / _per_row(counts, grad_out)
    return _gather_csr(grad_out, indptr, ctx.rows), None, None, None


def _gather_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _gather_backward(ctx, grad_out):
    (indptr,) = ctx.saved_tensors
    return _segment_reduce(grad_out, indptr, "sum"), None, None


def _softmax_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1], output)


def _softmax_backward(ctx, grad_out):
    indptr, out = ctx.saved_tensors
    weighted = grad_out * out
    dot = _segment_reduce(weighted, indptr, "sum")
    return weighted - out * _gather_csr(dot, indptr, out.shape[0]), None


torch.library.register_autograd("torch_segment_ops::segment_reduce", _reduce_backward, setup_context=_reduce_setup)
torch.library.register_autograd("torch_segment_ops::gather_csr", _gather_backward, setup_context=_gather_setup)
torch.library.register_autograd("torch_segment_ops::segment_softmax", _softmax_backward, setup_context=_softmax_setup)


# Eager autograd. Outside torch.compile and the transforms below, a call that records a gradient goes
# through these plain autograd.Functions rather than the ops' registered autograd: the same formulas, one
# Python node and no per-call wrapping by torch.library (a sum's forward + backward on 10 rows: 84 -> 63 us,
# torch's own segment_reduce 28 us; best of 21 interleaved rounds). Their backward calls the ops below
# the Autograd key when no graph of the backward is recorded, and the differentiable ops otherwise
# (create_graph=True), so double backward still works.


class _EagerReduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src, indptr, reduce):
        out, arg = _call("segment_reduce", src, indptr, reduce, reduce in ("min", "max"))
        ctx.reduce, ctx.rows = reduce, src.shape[0]
        ctx.save_for_backward(indptr, arg)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return _reduce_backward(ctx, grad_out, None)[:3]


class _EagerGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src, indptr, size):
        ctx.save_for_backward(indptr)
        return _call("gather_csr", src, indptr, size)

    @staticmethod
    def backward(ctx, grad_out):
        return _gather_backward(ctx, grad_out)


class _EagerSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, src, indptr):
        out = _call("segment_softmax", src, indptr)
        ctx.save_for_backward(indptr, out)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return _softmax_backward(ctx, grad_out)


# Forward-mode AD and torch.func. The custom ops' autograd (register_autograd) has no forward-mode
# formula, so torch silently gave zero tangents (torch.func.jvp, jacfwd, torch.autograd.forward_ad), and
# torch.func.grad / jacrev refused it (its generated autograd.Function has no setup_context). While a
# dual level is active (forward AD is only possible then) or src is wrapped by a torch.func transform,
# the ops go through these autograd.Functions: jvp and backward rules built from the ops themselves (so
# they compose: jacfwd of jacrev, vmap of jvp), vmap rules generated. Otherwise the plain path is kept:
# it is cheaper, and torch.compile does not trace an autograd.Function with a custom jvp.


_BelowAutograd = torch._C._AutoDispatchBelowAutograd


def _max_min_tangent(tangent: Tensor, arg: Tensor) -> Tensor:
    """The tangent of the arg-extreme row per (segment, column); empty segments point at row E -> 0."""
    padded = torch.cat([tangent, tangent.new_zeros((1, *tangent.shape[1:]))])
    return padded.gather(0, arg)


class _SegmentReduceFn(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(src, indptr, reduce):
        return tuple(_call("segment_reduce", src, indptr, reduce, reduce in ("min", "max")))

    @staticmethod
    def setup_context(ctx, inputs, output):
        src, indptr, reduce = inputs
        ctx.reduce, ctx.rows = reduce, src.shape[0]
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(indptr, output[1])
        ctx.save_for_forward(indptr, output[1])

    @staticmethod
    def backward(ctx, grad_out, _grad_arg):
        return _reduce_backward(ctx, grad_out, None)[:3]

    @staticmethod
    def jvp(ctx, tangent, _indptr_tangent, _reduce_tangent):
        indptr, arg = ctx.saved_tensors
        if ctx.reduce in ("min", "max"):
            return _max_min_tangent(tangent, arg), None
        return _segment_reduce(tangent, indptr, ctx.reduce), None


class _GatherCsrFn(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(src, indptr, size):
        return _call("gather_csr", src, indptr, size)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.rows = output.shape[0]
        ctx.save_for_backward(inputs[1])
        ctx.save_for_forward(inputs[1])

    @staticmethod
    def backward(ctx, grad_out):
        return _gather_backward(ctx, grad_out)

    @staticmethod
    def jvp(ctx, tangent, _indptr_tangent, _size_tangent):
        (indptr,) = ctx.saved_tensors
        return _gather_csr(tangent, indptr, ctx.rows)


class _SegmentSoftmaxFn(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(src, indptr):
        return _call("segment_softmax", src, indptr)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[1], output)
        ctx.save_for_forward(inputs[1], output)

    @staticmethod
    def backward(ctx, grad_out):
        return _softmax_backward(ctx, grad_out)

    @staticmethod
    def jvp(ctx, tangent, _indptr_tangent):
        return _softmax_backward(ctx, tangent)[0]  # the softmax Jacobian is symmetric
