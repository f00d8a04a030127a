// segment_reduce on CUDA tensors: sum / mean / min / max of the rows of each CSR segment.
#include "cuda_common.cuh"

#include <string_view>
#include <tuple>

namespace torch_segment_ops::cuda::reduce_op {  // named, not anonymous: see cuda_common.cuh

template <typename scalar_t>
struct StoreReduced {
  using acc_t = typename Acc<scalar_t>::type;
  scalar_t* out;
  int64_t* arg;  // null unless the arg-extreme rows are wanted
  int64_t F;
  bool mean;
  __device__ void operator()(int64_t s, int64_t count, int64_t f, acc_t acc, int64_t a) const {
    const acc_t scale = mean && count > 0 ? acc_t(1) / acc_t(count) : acc_t(1);
    out[s * F + f] = Acc<scalar_t>::store(count == 0 ? acc_t(0) : acc * scale);
    if (arg) arg[s * F + f] = a;
  }
};

// Same contract as segment_reduce_cpu (segment_reduce.cpp).
std::tuple<Tensor, Tensor> segment_reduce_cuda(const Tensor& src, const Tensor& indptr, std::string_view reduce,
                                               bool return_arg) {
  check_src("segment_reduce", src, "src", Device::CUDA);
  const Launch launch(src);
  const bool sum_like = reduce == "sum" || reduce == "mean";
  STD_TORCH_CHECK(sum_like || reduce == "min" || reduce == "max",
                  "segment_reduce(): expected `reduce` to be one of 'sum', 'mean', 'min', 'max', got '",
                  std::string(reduce), "'");
  const CheckedIndptr checked = check_indptr("segment_reduce", indptr, src, src.size(0), launch, false);
  const int64_t N = checked.ptr.numel() - 1, E = src.size(0), F = row_size(src);
  const Tensor x = as_contiguous(src);
  const auto sizes = with_rows(src, N);
  Tensor out = torch::stable::new_empty(src, sizes);
  const bool has_arg = return_arg && !sum_like;
  Tensor arg = torch::stable::new_empty(src, has_arg ? sizes : std::vector<int64_t>{0}, ScalarType::Long);

  dispatch("segment_reduce", x.scalar_type(), [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using acc_t = typename Acc<scalar_t>::type;
    const LoadRows<scalar_t> load{static_cast<const scalar_t*>(x.const_data_ptr()), F};
    const StoreReduced<scalar_t> store{static_cast<scalar_t*>(out.mutable_data_ptr()),
                                       has_arg ? static_cast<int64_t*>(arg.mutable_data_ptr()) : nullptr, F,
                                       reduce == "mean"};
    if (sum_like) {
      reduce_segments<SumOp<acc_t>, acc_t>(checked.ptr, N, E, F, load, store, launch);
    } else if (reduce == "min") {
      reduce_segments<ExtremeOp<acc_t, false>, acc_t>(checked.ptr, N, E, F, load, store, launch);
    } else {
      reduce_segments<ExtremeOp<acc_t, true>, acc_t>(checked.ptr, N, E, F, load, store, launch);
    }
  });
  return {out, arg};
}

}  // namespace torch_segment_ops::cuda::reduce_op

STABLE_TORCH_LIBRARY_IMPL(torch_segment_ops, CUDA, m) {
  m.impl("segment_reduce", TORCH_BOX(&torch_segment_ops::cuda::reduce_op::segment_reduce_cuda));
}
