"""Pure-PyTorch references for the ops, written for clarity, not speed.

They compute in float64 and cast back, so comparing against them measures
only the error of the op under test.
"""

import torch

TOLERANCES = {  # (rtol, atol) per dtype of the op under test
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}
DTYPES = list(TOLERANCES)


def segments(indptr):
    bounds = indptr.tolist()
    return list(zip(bounds[:-1], bounds[1:]))


def segment_reduce(src, indptr, reduce="sum"):
    x = src.double()
    rows = []
    for a, b in segments(indptr):
        part = x[a:b]
        if b == a or reduce == "sum":  # an empty sum is 0
            rows.append(part.sum(0))
        elif reduce == "mean":
            rows.append(part.mean(0))
        else:  # gradient goes to the first extreme row, as argmin/argmax pick it
            first = part.argmin(0) if reduce == "min" else part.argmax(0)
            rows.append(part.gather(0, first.unsqueeze(0)).squeeze(0))
    out = torch.stack(rows) if rows else x[:0] * 0
    return out.to(src.dtype)


def gather_csr(src, indptr):
    lengths = indptr[1:] - indptr[:-1]
    return src.double().repeat_interleave(lengths.long(), dim=0).to(src.dtype)


def segment_softmax(src, indptr):
    x = src.double()
    parts = [torch.softmax(x[a:b], dim=0) for a, b in segments(indptr)]
    out = torch.cat(parts) if parts else x.clone()
    return out.to(src.dtype)


def random_indptr(num_rows, num_segs, generator=None, empty_fraction=0.3, dtype=torch.int64):
    """Random CSR offsets over num_rows rows with some empty segments."""
    if num_segs == 0:
        return torch.zeros(1, dtype=dtype)
    cuts = torch.randint(0, num_rows + 1, (num_segs - 1,), generator=generator).sort().values
    indptr = torch.cat([torch.tensor([0]), cuts, torch.tensor([num_rows])])
    keep_empty = torch.rand(num_segs, generator=generator) < empty_fraction
    lengths = (indptr[1:] - indptr[:-1]) * ~keep_empty
    # give the rows of emptied segments to the last non-empty one (keeps the sum)
    lengths[-1] += num_rows - lengths.sum()
    return torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)]).to(dtype)


def assert_close(actual, expected, dtype=None):
    rtol, atol = TOLERANCES[dtype or expected.dtype]
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, check_dtype=True)
