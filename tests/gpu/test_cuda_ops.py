"""The CUDA kernels on a real GPU, against the CPU kernels (themselves tested against the pure-PyTorch
reference in tests/ops) and the reference. Skipped without a GPU and the CUDA build for torch's CUDA
major: run by `python -m ci gpu-check` on a machine with one (see docs/gpu.md)."""

import pytest
import torch

import torch_segment_ops as ts
from tests import reference as ref

if not (torch.cuda.is_available() and ts._cuda_build):
    pytest.skip("needs a CUDA GPU and the wheel's CUDA build for torch's CUDA major", allow_module_level=True)
REDUCTIONS = ["sum", "mean", "min", "max"]
raw = torch.ops.torch_segment_ops


def lengths_indptr(lengths, device="cpu", dtype=torch.int64):
    return ts.lengths_to_indptr(torch.tensor(lengths)).to(device=device, dtype=dtype)


def cases():
    """(id, E rows, lengths) covering empty, tiny, uniform, skewed and huge segments."""
    yield "empty", 0, [0, 0, 0]
    yield "one row", 1, [1]
    yield "empties around", 50, [0, 0, 20, 0, 30, 0]
    yield "uniform", 10_000, [10] * 1000
    yield "skewed", 220_000, [150_000] + [1] * 40_000 + [0] * 100 + [10_000] + [1] * 10_000  # the rest: one more
    yield "one huge", 1_000_000, [1_000_000]
    yield "huge and tiny", 1_000_003, [3, 999_999, 1]
    yield "many empties", 1000, [0] * 50_000 + [1000] + [0] * 50_000


CASES = []
for case_id, rows, lengths in cases():
    total = sum(lengths)
    if total < rows:
        lengths = [*lengths, rows - total]
    CASES.append(pytest.param(rows, lengths, id=case_id))


def src_for(rows, feat, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((rows, *feat), generator=g, dtype=torch.float64)
    x[::97] = x[::97].round()  # ties for min/max
    return x.to(dtype)


@pytest.mark.parametrize("feat", [(), (16,), (3, 4)], ids=str)
@pytest.mark.parametrize("dtype", ref.DTYPES, ids=str)
@pytest.mark.parametrize("rows, lengths", CASES)
@pytest.mark.parametrize("reduce", REDUCTIONS)
def test_segment_reduce_matches_the_cpu_kernel(reduce, rows, lengths, dtype, feat):
    src, indptr = src_for(rows, feat, dtype), lengths_indptr(lengths)
    out, arg = raw.segment_reduce(src.cuda(), indptr.cuda(), reduce, True)
    expected, expected_arg = raw.segment_reduce(src, indptr, reduce, True)
    if reduce in ("min", "max"):  # exact: the same value and the same (first) row
        assert torch.equal(out.cpu(), expected) and torch.equal(arg.cpu(), expected_arg)
    else:
        ref.assert_close(out.cpu(), expected)


@pytest.mark.parametrize("dtype", ref.DTYPES, ids=str)
@pytest.mark.parametrize("rows, lengths", CASES)
def test_gather_csr_is_exact(rows, lengths, dtype):
    indptr = lengths_indptr(lengths)
    src = src_for(len(lengths), (5,), dtype)
    assert torch.equal(ts.gather_csr(src.cuda(), indptr.cuda()).cpu(), ts.gather_csr(src, indptr))
    assert torch.equal(ts.gather_csr(src.cuda(), indptr.cuda(), rows).cpu(), ref.gather_csr(src, indptr))


@pytest.mark.parametrize("feat", [(), (16,), (64,)], ids=str)
@pytest.mark.parametrize("dtype", ref.DTYPES, ids=str)
@pytest.mark.parametrize("rows, lengths", CASES)
def test_segment_softmax_matches_the_cpu_kernel(rows, lengths, dtype, feat):
    src, indptr = src_for(rows, feat, dtype), lengths_indptr(lengths)
    ref.assert_close(ts.segment_softmax(src.cuda(), indptr.cuda()).cpu(), ts.segment_softmax(src, indptr))


@pytest.mark.parametrize("F", [1, 16, 64, 256])
def test_wide_rows_and_the_reference(F):
    src, indptr = src_for(20_000, (F,), torch.float32), lengths_indptr([5000, 1, 0, 14_999])
    for reduce in REDUCTIONS:
        ref.assert_close(ts.segment_reduce(src.cuda(), indptr.cuda(), reduce).cpu(),
                         ref.segment_reduce(src, indptr, reduce))
    ref.assert_close(ts.segment_softmax(src.cuda(), indptr.cuda()).cpu(), ref.segment_softmax(src, indptr))


def test_non_contiguous_src_and_int32_indptr():
    base = src_for(3000, (8,), torch.float32)
    src, indptr = base.t().contiguous().t(), lengths_indptr([1000, 0, 2000], dtype=torch.int32)
    assert not src.is_contiguous()
    for reduce in REDUCTIONS:
        ref.assert_close(ts.segment_reduce(src.cuda(), indptr.cuda(), reduce).cpu(),
                         ts.segment_reduce(src.contiguous(), indptr.long(), reduce))
    ref.assert_close(ts.segment_softmax(src.cuda(), indptr.cuda()).cpu(), ts.segment_softmax(src, indptr))


def test_nan_and_infinities_like_the_cpu_kernel():
    src = torch.tensor([[1.0], [float("nan")], [3.0], [float("-inf")], [float("-inf")], [float("nan")]])
    indptr = lengths_indptr([3, 2, 1])
    for reduce in ("min", "max"):
        out, arg = raw.segment_reduce(src.cuda(), indptr.cuda(), reduce, True)
        expected, expected_arg = raw.segment_reduce(src, indptr, reduce, True)
        assert torch.equal(out.cpu().isnan(), expected.isnan()) and torch.equal(arg.cpu(), expected_arg)


def test_the_ops_run_on_the_current_stream():
    """The input is written on a side stream that is held back (torch.cuda._sleep) with no wait on the
    default stream: only ops that run on the current (side) stream see the written values."""
    src, indptr = src_for(100_000, (16,), torch.float32).cuda(), lengths_indptr([50_000, 50_000], "cuda")
    expected = ts.segment_reduce(src, indptr, "max") * 2
    torch.cuda.synchronize()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of spinning on the side stream only
        doubled = src * 2
        out = ts.segment_reduce(doubled, indptr, "max")
        gathered = ts.gather_csr(out, indptr, 100_000)
        softmax = ts.segment_softmax(doubled, indptr)
    stream.synchronize()
    assert torch.equal(out, expected)
    assert torch.equal(gathered, ts.gather_csr(expected, indptr, 100_000))
    assert torch.equal(softmax, ts.segment_softmax(src * 2, indptr))


@pytest.mark.parametrize("op", [lambda x, i: ts.segment_reduce(x, i, "max"),
                                lambda x, i: ts.segment_reduce(x, i, "mean"), lambda x, i: ts.gather_csr(x[:4], i),
                                lambda x, i: ts.segment_softmax(x, i)], ids=["max", "mean", "gather", "softmax"])
def test_forward_mode_ad_on_cuda_matches_the_cpu(op):
    indptr = lengths_indptr([3, 0, 4, 1])
    x, t = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    on_cpu = torch.func.jvp(lambda x: op(x, indptr), (x,), (t,))[1]
    on_gpu = torch.func.jvp(lambda x: op(x, indptr.cuda()), (x.cuda(),), (t.cuda(),))[1]
    torch.testing.assert_close(on_gpu.cpu(), on_cpu)


def test_gradcheck_and_gradgradcheck_on_cuda():
    src = torch.randn(30, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    indptr = lengths_indptr([10, 0, 15, 5], "cuda")
    for reduce in REDUCTIONS:
        torch.autograd.gradcheck(lambda x, r=reduce: ts.segment_reduce(x, indptr, r), (src,))
    torch.autograd.gradcheck(lambda x: ts.segment_softmax(x, indptr), (src,))
    torch.autograd.gradgradcheck(lambda x: ts.segment_softmax(x, indptr), (src,))
    torch.autograd.gradcheck(lambda x: ts.gather_csr(x, indptr), (src[:4].detach().requires_grad_(),))


def test_opcheck_on_cuda():
    src = torch.randn(30, 3, device="cuda", requires_grad=True)
    indptr = lengths_indptr([10, 0, 15, 5], "cuda")
    for reduce in REDUCTIONS:
        torch.library.opcheck(raw.segment_reduce.default, (src, indptr, reduce, True))
    torch.library.opcheck(raw.gather_csr.default, (src[:4], indptr, 30))
    torch.library.opcheck(raw.segment_softmax.default, (src, indptr))


def test_compile_fullgraph_on_cuda():
    src = torch.randn(30, 3, device="cuda")
    indptr = lengths_indptr([10, 0, 15, 5], "cuda")

    @torch.compile(fullgraph=True)
    def f(x):
        return ts.gather_csr(ts.segment_reduce(ts.segment_softmax(x, indptr), indptr, "max"), indptr, 30)

    torch.testing.assert_close(f(src), ts.gather_csr(ts.segment_reduce(ts.segment_softmax(src, indptr), indptr,
                                                                       "max"), indptr, 30))


BAD_INDPTR = [
    ([1, 2, 6], r"`indptr\[0\] == 0`, got 1"),
    ([0, 4, 2, 6], r"`indptr` to be non-decreasing, got indptr\[1\] = 4 > indptr\[2\] = 2"),
    ([0, -1, 6], r"`indptr` to be non-negative, got indptr\[1\] = -1"),
    ([0, 2, 5], r"`indptr\[-1\]` to equal the number of rows \(6\), got 5"),
]


@pytest.mark.parametrize("values, message", BAD_INDPTR)
def test_bad_indptr_on_the_gpu_gives_the_cpu_messages(values, message):
    src, indptr = torch.ones(6, device="cuda"), torch.tensor(values, device="cuda")
    with pytest.raises(ValueError, match=message):
        ts.segment_reduce(src, indptr)
    with pytest.raises(ValueError, match=message):
        ts.segment_softmax(src, indptr)
    with pytest.raises(RuntimeError, match=message):
        raw.segment_reduce(src, indptr, "sum", False)
    torch.cuda.synchronize()  # the device is still usable


def test_tensors_on_different_devices_are_a_clear_error():
    src, indptr = torch.ones(6, device="cuda"), torch.tensor([0, 2, 6])
    with pytest.raises(ValueError, match=r"expected `indptr` on the same device as `src` \(cuda:0\), got cpu"):
        ts.segment_reduce(src, indptr)
    with pytest.raises(ValueError, match=r"expected `indptr` on the same device as `src` \(cpu\), got cuda:0"):
        ts.gather_csr(src.cpu()[:2], indptr.cuda())
    with pytest.raises(RuntimeError, match=r"expected `indptr` on the same device as `src` \(cuda:0\), got cpu"):
        raw.segment_softmax(src, indptr)


# Shapes derived from the device, as the kernels cut rows into chunks (cuda_common.cuh `Chunks`): enough
# chunks to fill the device twice, at least 16 rows each; a segment crossing more than kSerialPieces (32)
# chunks is combined by a block instead of one thread.
SERIAL_PIECES = 32


def rows_per_chunk(num_rows: int, row_len: int) -> int:
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    in_flight = props.multi_processor_count * props.max_threads_per_multi_processor
    return max(16, -(-num_rows * max(row_len, 1) // (2 * in_flight)))


def check_every_op_against_the_cpu(src, indptr):
    for reduce in REDUCTIONS:
        out, arg = raw.segment_reduce(src.cuda(), indptr.cuda(), reduce, True)
        expected, expected_arg = raw.segment_reduce(src, indptr, reduce, True)
        if reduce in ("min", "max"):
            assert torch.equal(out.cpu(), expected) and torch.equal(arg.cpu(), expected_arg), reduce
        else:
            ref.assert_close(out.cpu(), expected)
    ref.assert_close(ts.segment_softmax(src.cuda(), indptr.cuda()).cpu(), ts.segment_softmax(src, indptr))


@pytest.mark.parametrize("span", [SERIAL_PIECES - 1, SERIAL_PIECES, SERIAL_PIECES + 1, SERIAL_PIECES + 2])
def test_a_segment_crossing_exactly_n_chunks(span):
    """One segment starting mid-chunk and touching exactly `span` chunks, among short segments: the serial
    and the block combination on both sides of their boundary."""
    rows = 64 * 2 * 4096  # ample: rows per chunk comes from the device below
    per_chunk = rows_per_chunk(rows, 1)
    start = 10 * per_chunk + per_chunk // 2
    length = (span - 1) * per_chunk  # from the middle of chunk 10 to the middle of chunk 10 + span - 1
    assert start // per_chunk + span - 1 == (start + length - 1) // per_chunk
    head = [3] * (start // 3) + [start % 3] if start % 3 else [3] * (start // 3)
    lengths = [*head, length]
    lengths.append(rows - sum(lengths))
    check_every_op_against_the_cpu(src_for(rows, (), torch.float32), lengths_indptr(lengths))


def test_many_wide_segments_more_than_a_grid_of_1024():
    """More than 1,024 segments that each cross more than kSerialPieces chunks: the grid-stride path of the
    block combination."""
    per_chunk = 16  # the minimum; checked below for this device and shape
    length = (SERIAL_PIECES + 2) * per_chunk
    lengths = [length] * 1100
    rows = sum(lengths)
    if rows_per_chunk(rows, 1) != per_chunk:
        pytest.skip(f"this device cuts {rows} rows into chunks of {rows_per_chunk(rows, 1)}, not {per_chunk}")
    check_every_op_against_the_cpu(src_for(rows, (), torch.float32), lengths_indptr(lengths))


def test_huge_more_than_2_to_the_31_elements():
    """E * F beyond 2^31 (int32 index arithmetic would wrap): sums per segment and the gather of them."""
    rows, feat = 2**21, 1025  # 2.15e9 float32 elements: 8.6 GB
    if torch.cuda.get_device_properties(0).total_memory < 24 * 2**30:
        pytest.skip("needs a GPU with 24 GiB or more")
    lengths = [2**20 - 3, 3, 0, 2**20]
    src = torch.ones(rows, feat, device="cuda")
    src[-1] = 2.0  # the very last element block: found only if the offsets do not wrap
    indptr = lengths_indptr(lengths, "cuda")
    out = ts.segment_reduce(src, indptr, "sum")
    expected = torch.tensor([[2**20 - 3], [3], [0], [2**20 + 1]], dtype=torch.float32).expand(4, feat)
    assert torch.equal(out.cpu(), expected)
    assert torch.equal(ts.segment_reduce(src, indptr, "max")[3].cpu(), torch.full((feat,), 2.0))
    del src
    gathered = ts.gather_csr(out, indptr, rows)
    assert gathered.shape == (rows, feat)
    assert gathered[-1, -1].item() == 2**20 + 1 and gathered[0, 0].item() == 2**20 - 3


def test_repeated_calls_are_bitwise_equal():
    src, indptr = src_for(220_000, (16,), torch.float32).cuda(), lengths_indptr([150_000, 1, 0, 69_999], "cuda")
    for op in (lambda: ts.segment_reduce(src, indptr, "sum"), lambda: ts.segment_reduce(src, indptr, "mean"),
               lambda: raw.segment_reduce(src, indptr, "max", True)[1], lambda: ts.segment_softmax(src, indptr)):
        first = op()
        assert all(torch.equal(op(), first) for _ in range(3))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_another_device_than_the_current_one():
    src, indptr = src_for(5000, (4,), torch.float32), lengths_indptr([2000, 0, 3000])
    before = torch.cuda.current_device()
    other = (before + 1) % torch.cuda.device_count()
    out = ts.segment_reduce(src.to(f"cuda:{other}"), indptr.to(f"cuda:{other}"), "max")
    assert out.device == torch.device(f"cuda:{other}") and torch.cuda.current_device() == before
    assert torch.equal(out.cpu(), ts.segment_reduce(src, indptr, "max"))


# ---- no host synchronisation where none is needed; CUDA graphs ------------------------------------

def busy_stream():
    """The current stream held back by ~0.1 s of spinning: a call that returns while the stream is still
    busy did not wait for it (no synchronisation)."""
    torch.cuda.synchronize()
    torch.cuda._sleep(200_000_000)
    return torch.cuda.current_stream()


def test_gather_csr_with_size_never_synchronises():
    src, indptr = torch.randn(1000, 16, device="cuda"), lengths_indptr([3] * 1000, "cuda")
    stream = busy_stream()
    out = ts.gather_csr(src, indptr, 3000)
    assert not stream.query(), "gather_csr(size=...) waited for the stream"
    assert torch.equal(out, ts.gather_csr(src, indptr))


def test_the_backward_passes_synchronise_once_per_checked_indptr_at_most():
    """segment_reduce's and segment_softmax's backward only gather with a known size: no wait."""
    src = torch.randn(3000, 16, device="cuda", requires_grad=True)
    indptr = lengths_indptr([3] * 1000, "cuda")
    out = ts.segment_reduce(src, indptr, "mean")
    grad = torch.randn_like(out)
    stream = busy_stream()
    (gradient,) = torch.autograd.grad(out, src, grad)
    assert not stream.query(), "the backward of segment_reduce(mean) waited for the stream"
    torch.testing.assert_close(gradient, ts.gather_csr(grad, indptr, 3000) / 3)


def capture(fn, *args):
    """fn(*args) captured into a CUDA graph (after a warm-up on a side stream, as torch's docs say)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn(*args)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(*args)
    return graph, out


@pytest.mark.parametrize("op", [
    pytest.param(lambda x, i: ts.segment_reduce(x, i, "sum"), id="sum"),
    pytest.param(lambda x, i: ts.segment_reduce(x, i, "max"), id="max"),
    pytest.param(lambda x, i: ts.segment_softmax(x, i), id="softmax"),
    pytest.param(lambda x, i: ts.gather_csr(x[: i.numel() - 1], i, x.shape[0]), id="gather"),
])
def test_the_ops_are_captured_in_a_cuda_graph_and_replayed_on_new_data(op):
    src, indptr = torch.randn(30_000, 16, device="cuda"), lengths_indptr([0, 7, 1, 29_990, 2], "cuda")
    graph, out = capture(op, src, indptr)
    for seed in range(3):  # new values written into the captured inputs, then replayed
        src.copy_(torch.randn(30_000, 16, generator=torch.Generator().manual_seed(seed)).cuda())
        indptr.copy_(lengths_indptr([seed, 7, 1, 29_990 - 2 * seed, 2 + seed], "cuda"))
        graph.replay()
        torch.testing.assert_close(out, op(src, indptr))


def test_gather_csr_without_size_under_capture_is_a_clear_error():
    src, indptr = torch.randn(3, 4, device="cuda"), lengths_indptr([1, 2, 3], "cuda")
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with pytest.raises(ValueError, match=r"gather_csr\(\): expected `size` \(= indptr\[-1\]\) under CUDA graph"):
        with torch.cuda.graph(graph):
            ts.gather_csr(src, indptr)


def test_compile_reduce_overhead_uses_cuda_graphs():
    src, indptr = torch.randn(10_000, 16, device="cuda"), lengths_indptr([10] * 1000, "cuda")
    fn = torch.compile(lambda x, i: ts.segment_softmax(ts.gather_csr(ts.segment_reduce(x, i, "sum"), i, 10_000), i),
                       mode="reduce-overhead", fullgraph=True)
    for _ in range(3):  # the first calls record; later ones replay the graph
        out = fn(src, indptr)
    torch.testing.assert_close(out, ts.segment_softmax(ts.gather_csr(ts.segment_reduce(src, indptr, "sum"),
                                                                     indptr, 10_000), indptr))


DEVICE_CHECK = """
import sys, torch, torch_segment_ops as ts
src = torch.ones(6, device="cuda")
indptr = torch.tensor({values}, device="cuda")
try:
    {call}
    torch.cuda.synchronize()
except Exception as error:
    print(type(error).__name__, error)
    sys.exit(3)
"""


CAPTURED = "g = torch.cuda.CUDAGraph()\n    with torch.cuda.graph(g): ts.segment_reduce(src, indptr)\n    g.replay()"


@pytest.mark.parametrize("call", ["ts.gather_csr(src[:2], indptr, 6)", CAPTURED], ids=["gather_size", "captured"])
@pytest.mark.parametrize("values", [[0, 4, 2], [1, 2, 6], [0, 2, 5]])
def test_a_bad_indptr_checked_on_the_device_stops_with_a_message(call, values):
    """Where the call may not synchronise, a bad indptr fails a device-side assert (the CUDA context is
    lost, so in a child process): a CUDA error, and the message the kernel printed."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", DEVICE_CHECK.format(values=values, call=call)],
                          capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 3 and "device-side assert triggered" in output, output
    assert "torch_segment_ops: invalid `indptr` at position" in output, output
