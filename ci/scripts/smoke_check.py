"""The smoke test of an installed torch-segment-ops wheel: standalone, needs only
torch and torch_segment_ops, and is run from outside the source tree (by
`python -m ci smoke`, cibuildwheel's test-command and the verify cells).

Checks: it imports (the build for the running torch is picked, and under a
CUDA build of torch the CUDA build for its CUDA major, whose kernels are then
registered), every op matches a pure-PyTorch reference (on the CPU, and on the
GPU when there is one), one backward, opcheck, every op used from 8 Python threads at
once agrees with one thread (on a free-threaded CPython the GIL must stay disabled), and
the version guard refuses a torch it has no build for. Prints one line per check.
"""

import os
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor

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


OPS = ("segment_reduce", "gather_csr", "segment_softmax")


def check_cuda_build() -> None:
    """Under a CUDA torch the CUDA build of its major is loaded (unless opted out) and registers
    every op for CUDA; on a real GPU the CUDA kernels match the CPU ones."""
    cuda, uses = ts._cuda_build, f"torch uses CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU torch"
    if os.environ.get(_loader.CPU_ONLY) == "1" or not torch.version.cuda:
        assert cuda is None, cuda
        print(f"no CUDA build loaded ({uses}; {_loader.CPU_ONLY}={os.environ.get(_loader.CPU_ONLY, '')})")
        return
    if not any(build.cuda for build in _loader.find_builds()):
        assert cuda is None, cuda
        print(f"no CUDA build in this wheel ({uses})")
        return
    assert cuda is not None and cuda.cuda_major == torch.version.cuda.split(".")[0], (cuda, torch.version.cuda)
    registered = [torch._C._dispatch_has_kernel_for_dispatch_key(f"torch_segment_ops::{op}", "CUDA") for op in OPS]
    assert all(registered), dict(zip(OPS, registered))
    print(f"CUDA build {cuda.directory.name} (nvcc {cuda.cuda}) loaded, {uses}: {', '.join(OPS)} registered for CUDA")
    if torch.cuda.is_available():
        src, indptr = torch.randn(1000, 8, dtype=torch.float64), torch.tensor([0, 10, 10, 999, 1000])
        for reduce in ("sum", "mean", "min", "max"):
            torch.testing.assert_close(ts.segment_reduce(src.cuda(), indptr.cuda(), reduce).cpu(),
                                       ts.segment_reduce(src, indptr, reduce))
        torch.testing.assert_close(ts.gather_csr(src[:4].cuda(), indptr.cuda()).cpu(), ts.gather_csr(src[:4], indptr))
        torch.testing.assert_close(ts.segment_softmax(src.cuda(), indptr.cuda()).cpu(), ts.segment_softmax(src, indptr))
        print(f"CUDA kernels match the CPU kernels on {torch.cuda.get_device_name()}")


def every_op(seed: int) -> list:
    """Every op (and a backward) on inputs of its own: what each thread computes."""
    gen = torch.Generator().manual_seed(seed)
    src = torch.randn(2000, 16, generator=gen, dtype=torch.float64)
    indptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.randint(0, 2001, (63,), generator=gen).sort().values,
                        torch.full((1,), 2000)])
    out = [ts.segment_reduce(src, indptr, reduce) for reduce in ("sum", "mean", "min", "max")]
    out += [ts.gather_csr(src[:64], indptr), ts.segment_softmax(src, indptr)]
    x = src.clone().requires_grad_()
    ts.segment_softmax(x, indptr).mul(src).sum().backward()
    return [*out, x.grad]


def check_threads(threads: int = 8, rounds: int = 4) -> None:
    """Every op from `threads` Python threads at once gives what one thread gives; on a free-threaded
    CPython the GIL is still disabled after importing torch and this package."""
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    if free_threaded and sys._is_gil_enabled():
        raise AssertionError("the GIL was enabled on a free-threaded CPython (a module asked for it)")
    seeds = [seed % threads for seed in range(threads * rounds)]
    expected = {seed: every_op(seed) for seed in range(threads)}
    with ThreadPoolExecutor(threads) as pool:
        for seed, got in zip(seeds, pool.map(every_op, seeds)):
            assert all(torch.equal(a, b) for a, b in zip(got, expected[seed])), f"thread result {seed} differs"
    gil = "free-threaded CPython, GIL disabled" if free_threaded else "GIL enabled"
    print(f"threads ok: every op from {threads} Python threads at once agrees with one thread ({gil})")


def main() -> int:
    cuda = f" + {ts._cuda_build.directory.name}" if ts._cuda_build else ""
    print(f"torch {torch.__version__}, torch_segment_ops {ts.__version__}, build {ts._build.directory.name}{cuda} "
          f"(python {sys.version.split()[0]}, from {ts.__file__})")
    check_cuda_build()
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
    check_threads()  # before opcheck: it imports torch.compile's stack (triton may ask for the GIL)

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
