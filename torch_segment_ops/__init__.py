"""Fast CSR segment operations for PyTorch: segment_reduce, gather_csr, segment_softmax."""

from ._loader import load as _load
from ._loader import running_info as _running_info
from ._version import __version__

try:
    _build, _cuda_build = _load(__version__)  # the CPU build, and the CUDA build if torch uses CUDA
except ImportError:
    if not _running_info():  # `python -m torch_segment_ops.info` explains the failure instead
        raise
else:
    from .ops import gather_csr, lengths_to_indptr, segment_reduce, segment_softmax

__all__ = ["__version__", "gather_csr", "lengths_to_indptr", "segment_reduce", "segment_softmax"]
