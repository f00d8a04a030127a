// segment_reduce: sum / mean / min / max of the rows of each CSR segment.
#include "segment.h"

#include <string_view>
#include <tuple>

namespace torch_segment_ops {
namespace {

enum class Reduce { Sum, Mean, Min, Max };

Reduce parse_reduce(std::string_view name) {
  if (name == "sum") return Reduce::Sum;
  if (name == "mean") return Reduce::Mean;
  if (name == "min") return Reduce::Min;
  STD_TORCH_CHECK(name == "max", "segment_reduce(): expected `reduce` to be one of 'sum', 'mean', 'min', 'max', got '",
                  std::string(name), "'");
  return Reduce::Max;
}

// Returns (out, arg). For min/max with return_arg, arg holds the first row
// reaching the extreme (src.size(0) for empty segments), which backward
// needs; otherwise it is empty (finding it costs time forward-only calls
// need not pay).
std::tuple<Tensor, Tensor> segment_reduce_cpu(const Tensor& src, const Tensor& indptr, std::string_view reduce,
                                              bool return_arg) {
  check_src("segment_reduce", src, "src");
  const Reduce op = parse_reduce(reduce);
  const Tensor ptr = check_indptr("segment_reduce", indptr, src.size(0));
  const int64_t N = ptr.numel() - 1, E = src.size(0), F = row_size(src);
  const Tensor x = as_contiguous(src);
  const auto sizes = with_rows(src, N);
  Tensor out = new_contiguous(src, sizes);
  const bool has_arg = return_arg && (op == Reduce::Min || op == Reduce::Max);
  Tensor arg = new_contiguous(src, has_arg ? sizes : std::vector<int64_t>{0}, ScalarType::Long);

  dispatch_floating("segment_reduce", x.scalar_type(), [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using acc_t = acc_type<scalar_t>;
    const int64_t* p = ptr.const_data_ptr<int64_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = out.mutable_data_ptr<scalar_t>();
    int64_t* ap = has_arg ? arg.mutable_data_ptr<int64_t>() : nullptr;
    const bool mean = op == Reduce::Mean;
    auto load = [=](int64_t, int64_t r, int64_t f) { return static_cast<acc_t>(xp[r * F + f]); };
    auto store = [=](int64_t s, int64_t count, const acc_t* acc, const int64_t* a) {
      const acc_t scale = mean && count > 0 ? acc_t(1) / acc_t(count) : acc_t(1);
      for (int64_t f = 0; f < F; ++f) {
        yp[s * F + f] = static_cast<scalar_t>(count == 0 ? acc_t(0) : acc[f] * scale);
      }
      if (ap) std::copy(a, a + F, ap + s * F);
    };
    switch (op) {
      case Reduce::Sum:
      case Reduce::Mean:
        reduce_segments<acc_t, SumOp<acc_t>>(p, N, E, F, load, store);
        break;
      case Reduce::Min:
        has_arg ? reduce_segments<acc_t, ExtremeOp<acc_t, false, true>>(p, N, E, F, load, store)
                : reduce_segments<acc_t, ExtremeOp<acc_t, false, false>>(p, N, E, F, load, store);
        break;
      case Reduce::Max:
        has_arg ? reduce_segments<acc_t, ExtremeOp<acc_t, true, true>>(p, N, E, F, load, store)
                : reduce_segments<acc_t, ExtremeOp<acc_t, true, false>>(p, N, E, F, load, store);
        break;
    }
  });
  return {out, arg};
}

}  // namespace
}  // namespace torch_segment_ops

STABLE_TORCH_LIBRARY(torch_segment_ops, m) {
  m.def("segment_reduce(Tensor src, Tensor indptr, str reduce=\"sum\", bool return_arg=True) -> (Tensor, Tensor)");
}

STABLE_TORCH_LIBRARY_IMPL(torch_segment_ops, CPU, m) {
  m.impl("segment_reduce", TORCH_BOX(&torch_segment_ops::segment_reduce_cpu));
}
