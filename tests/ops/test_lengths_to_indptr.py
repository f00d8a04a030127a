import pytest
import torch

import torch_segment_ops as ts


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_cumulative_offsets(dtype):
    indptr = ts.lengths_to_indptr(torch.tensor([2, 0, 3], dtype=dtype))
    assert indptr.dtype == torch.int64 and indptr.tolist() == [0, 2, 2, 5]


def test_no_segments():
    assert ts.lengths_to_indptr(torch.tensor([], dtype=torch.long)).tolist() == [0]


@pytest.mark.parametrize(
    "lengths, message",
    [(torch.tensor([1.0, 2.0]), "integer"), (torch.tensor([[1, 2]]), "1-D"), (torch.tensor([1, -1]), "non-negative")],
)
def test_bad_lengths(lengths, message):
    with pytest.raises(ValueError, match=message):
        ts.lengths_to_indptr(lengths)


@pytest.mark.parametrize("lengths", [[2**62, 2**62], [2**63 - 1, 1], [2**62] * 5])
def test_a_sum_that_overflows_int64_is_refused(lengths):
    with pytest.raises(ValueError, match="overflows int64"):
        ts.lengths_to_indptr(torch.tensor(lengths, dtype=torch.int64))


def test_the_largest_sum_that_fits_is_fine():
    assert ts.lengths_to_indptr(torch.tensor([2**62, 2**62 - 1]))[-1].item() == 2**63 - 1


@pytest.mark.parametrize("dtype", [getattr(torch, n) for n in ("uint8", "uint16", "uint32", "uint64")
                                   if hasattr(torch, n)], ids=str)
def test_unsigned_lengths_give_offsets(dtype):
    indptr = ts.lengths_to_indptr(torch.tensor([2, 0, 3], dtype=dtype))
    assert indptr.dtype == torch.int64 and indptr.tolist() == [0, 2, 2, 5]


def test_uint64_lengths_past_int64_are_refused():
    with pytest.raises(ValueError, match="overflows int64"):
        ts.lengths_to_indptr(torch.tensor([2**63], dtype=torch.uint64))
