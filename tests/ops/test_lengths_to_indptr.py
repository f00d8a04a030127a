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
