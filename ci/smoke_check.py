"""The smoke test of an installed torch-segment-ops wheel: standalone, needs only
torch and torch_segment_ops, and is run from outside the source tree (by
`python -m ci smoke`, cibuildwheel's test-command and the verify cells).

Checks: it imports (the build for the running torch is picked), every op
matches a pure-PyTorch reference, one backward, opcheck, and the version guard
refuses a torch it has no build for. Prints one line per check.
"""

import sys

import torch

import torch_segment_ops as ts
from torch_segment_ops import _loader


def reference_reduce(src, indptr, reduce):
    rows = []
    for a, b in zip(indptr[:-1].tolist(), indptr[1:].tolist()):
        part = src[a:b]
        if a == b:
            rows.append(torch.zeros(src.shape[1:], dtype=src.dtype))
        else:
            rows.append({"sum": part.sum(0), "mean": part.mean(0), "min": part.amin(0), "max": part.amax(0)}[reduce])
    return torch.stack(rows)


def main() -> int:
    print(f"torch {torch.__version__}, torch_segment_ops {ts.__version__}, build {ts._build.directory.name} "
          f"(python {sys.version.split()[0]}, from {ts.__file__})")
    src = torch.randn(40, 3, dtype=torch.float64)
    indptr = torch.tensor([0, 5, 5, 17, 40])
    for reduce in ("sum", "mean", "min", "max"):
        torch.testing.assert_close(ts.segment_reduce(src, indptr, reduce), reference_reduce(src, indptr, reduce))
    lengths = indptr.diff()
    torch.testing.assert_close(ts.gather_csr(src[:4], indptr), src[:4].repeat_interleave(lengths, 0))
    soft = torch.cat([torch.softmax(src[a:b], 0) for a, b in zip(indptr[:-1].tolist(), indptr[1:].tolist())])
    torch.testing.assert_close(ts.segment_softmax(src, indptr), soft)
    print("ops match the pure-PyTorch reference")

    x = src.clone().requires_grad_()
    ts.segment_reduce(x, indptr, "mean").sum().backward()
    expected = (1 / lengths.clamp(min=1).double()).repeat_interleave(lengths)[:, None].expand(40, 3)
    torch.testing.assert_close(x.grad, expected)
    print("backward ok")

    args = (x.detach().float().requires_grad_(), indptr, "max", True)
    torch.library.opcheck(torch.ops.torch_segment_ops.segment_reduce.default, args)
    print("opcheck ok")

    try:
        _loader.select(_loader.find_builds(), "1.0.0", ts.__version__)
    except ImportError as error:
        # a per-torch build names the torch it was built for; a stable build names its floor
        assert "built for torch" in str(error) or "needs torch>=" in str(error), error
        print("version guard ok")
    else:
        raise AssertionError("the loader accepted torch 1.0.0")
    print("SMOKE OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
