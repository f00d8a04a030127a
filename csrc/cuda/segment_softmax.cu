// segment_softmax on CUDA tensors: softmax over the rows of each CSR segment,
// per column, shifted by the segment max. Three passes: max, sum of exp, and
// exp again scaled by the inverse sum (recomputing exp reads x once more,
// which moves less memory than storing exp and reading it back).
#include "cuda_common.cuh"

namespace torch_segment_ops::cuda::softmax_op {  // named, not anonymous: see cuda_common.cuh

template <typename scalar_t>
struct LoadExp {
  using acc_t = typename Acc<scalar_t>::type;
  const scalar_t* x;
  const acc_t* seg_max;
  int64_t F;
  __device__ acc_t operator()(int64_t s, int64_t r, int64_t f) const {
    return exp(Acc<scalar_t>::load(x[r * F + f]) - seg_max[s * F + f]);
  }
};

template <typename acc_t>
struct StoreValue {  // max per segment and column
  acc_t* values;
  int64_t F;
  __device__ void operator()(int64_t s, int64_t, int64_t f, acc_t acc, int64_t) const { values[s * F + f] = acc; }
};

template <typename acc_t>
struct StoreInverse {  // 1 / sum per segment and column
  acc_t* values;
  int64_t F;
  __device__ void operator()(int64_t s, int64_t, int64_t f, acc_t acc, int64_t) const {
    values[s * F + f] = acc_t(1) / acc;
  }
};

template <typename scalar_t>
struct Normalise {
  using acc_t = typename Acc<scalar_t>::type;
  LoadExp<scalar_t> exp_of;
  const acc_t* inv_sum;
  scalar_t* y;
  __device__ void operator()(int64_t r, int64_t f, int64_t s) const {
    const int64_t F = exp_of.F;
    y[r * F + f] = Acc<scalar_t>::store(exp_of(s, r, f) * inv_sum[s * F + f]);
  }
};

// Same contract as segment_softmax_cpu (segment_softmax.cpp).
Tensor segment_softmax_cuda(const Tensor& src, const Tensor& indptr) {
  check_src("segment_softmax", src, "src", Device::CUDA);
  const Launch launch(src);
  const CheckedIndptr checked = check_indptr("segment_softmax", indptr, src, src.size(0), launch, false);
  const int64_t N = checked.ptr.numel() - 1, E = src.size(0), F = row_size(src);
  const Tensor x = as_contiguous(src);
  Tensor out = torch::stable::new_empty(x, with_rows(x, E));
  if (E == 0 || F == 0) return out;

  dispatch("segment_softmax", x.scalar_type(), [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using acc_t = typename Acc<scalar_t>::type;
    const ScalarType acc_type = sizeof(acc_t) == 8 ? ScalarType::Double : ScalarType::Float;
    Tensor stats = torch::stable::new_empty(x, {2, N, F}, acc_type);
    acc_t* seg_max = static_cast<acc_t*>(stats.mutable_data_ptr());
    acc_t* inv_sum = seg_max + N * F;
    const scalar_t* xp = static_cast<const scalar_t*>(x.const_data_ptr());
    reduce_segments<ExtremeOp<acc_t, true>, acc_t>(checked.ptr, N, E, F, LoadRows<scalar_t>{xp, F},
                                                   StoreValue<acc_t>{seg_max, F}, launch);
    const LoadExp<scalar_t> exp_of{xp, seg_max, F};
    reduce_segments<SumOp<acc_t>, acc_t>(checked.ptr, N, E, F, exp_of, StoreInverse<acc_t>{inv_sum, F}, launch);
    for_each_row(checked.ptr, N, E, F,
                 Normalise<scalar_t>{exp_of, inv_sum, static_cast<scalar_t*>(out.mutable_data_ptr())}, launch);
  });
  return out;
}

}  // namespace torch_segment_ops::cuda::softmax_op

STABLE_TORCH_LIBRARY_IMPL(torch_segment_ops, CUDA, m) {
  m.impl("segment_softmax", TORCH_BOX(&torch_segment_ops::cuda::softmax_op::segment_softmax_cuda));
}
