// gather_csr on CUDA tensors: broadcast row s of src to every row of segment s.
#include "cuda_common.cuh"

namespace torch_segment_ops::cuda::gather_op {  // named, not anonymous: see cuda_common.cuh

template <typename scalar_t>
struct CopyRow {
  const scalar_t* x;
  scalar_t* y;
  int64_t F;
  __device__ void operator()(int64_t r, int64_t f, int64_t s) const { y[r * F + f] = x[s * F + f]; }
};

// Same contract as gather_csr_cpu (gather_csr.cpp).
Tensor gather_csr_cuda(const Tensor& src, const Tensor& indptr, std::optional<int64_t> size) {
  check_src("gather_csr", src, "src", Device::CUDA);
  const Launch launch(src);
  const CheckedIndptr checked = check_indptr("gather_csr", indptr, src, size, launch, size.has_value());
  const int64_t N = checked.ptr.numel() - 1, E = checked.last, F = row_size(src);
  STD_TORCH_CHECK(src.size(0) == N, "gather_csr(): expected `src` to have one row per segment (", N,
                  " = indptr.numel() - 1), got ", src.size(0), " rows");
  const Tensor x = as_contiguous(src);
  Tensor out = torch::stable::new_empty(src, with_rows(src, E));
  dispatch("gather_csr", x.scalar_type(), [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    const CopyRow<scalar_t> copy{static_cast<const scalar_t*>(x.const_data_ptr()),
                                 static_cast<scalar_t*>(out.mutable_data_ptr()), F};
    for_each_row(checked.ptr, N, E, F, copy, launch);
  });
  return out;
}

}  // namespace torch_segment_ops::cuda::gather_op

STABLE_TORCH_LIBRARY_IMPL(torch_segment_ops, CUDA, m) {
  m.impl("gather_csr", TORCH_BOX(&torch_segment_ops::cuda::gather_op::gather_csr_cuda));
}
