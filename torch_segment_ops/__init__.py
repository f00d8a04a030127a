"""Fast CSR segment operations for PyTorch: segment_reduce, gather_csr, segment_softmax."""

from ._loader import load as _load
from ._version import __version__

_build, _cuda_build = _load(__version__)  # the CPU build, and the CUDA build if torch uses CUDA

from .ops import gather_csr, lengths_to_indptr, segment_reduce, segment_softmax  # noqa: E402

__all__ = ["__version__", "gather_csr", "lengths_to_indptr", "segment_reduce", "segment_softmax"]
