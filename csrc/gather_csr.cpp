// gather_csr: broadcast row s of src to every row of segment s.
#include "segment.h"

namespace torch_segment_ops {
namespace {

Tensor gather_csr_cpu(const Tensor& src, const Tensor& indptr, std::optional<int64_t> size) {
  check_src("gather_csr", src, "src");
  const Tensor ptr = check_indptr("gather_csr", indptr, size);
  const int64_t N = ptr.numel() - 1, F = row_size(src);
  STD_TORCH_CHECK(src.size(0) == N, "gather_csr(): expected `src` to have one row per segment (", N,
                  " = indptr.numel() - 1), got ", src.size(0), " rows");
  const Tensor x = as_contiguous(src);
  const int64_t* p = ptr.const_data_ptr<int64_t>();
  const int64_t E = p[N];
  Tensor out = new_contiguous(src, with_rows(src, E));
  if (E == 0 || F == 0) return out;

  dispatch_floating("gather_csr", x.scalar_type(), [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = out.mutable_data_ptr<scalar_t>();
    // Parallel over output rows, so segment sizes do not matter; within a
    // chunk, walk the segments and fill each one's rows with its source row.
    torch::stable::parallel_for(0, E, std::max<int64_t>(1, (1 << 15) / F), [&](int64_t r0, int64_t r1) {
      int64_t s = std::upper_bound(p, p + N + 1, r0) - p - 1;
      for (int64_t r = r0; r < r1; ++s) {
        const int64_t end = std::min<int64_t>(p[s + 1], r1);
        const scalar_t* row = xp + s * F;
        if (F == 1) {
          std::fill(yp + r, yp + end, row[0]);
        } else {
          for (int64_t rr = r; rr < end; ++rr) {
            scalar_t* dst = yp + rr * F;
            TORCH_SEGMENT_OPS_SIMD
            for (int64_t f = 0; f < F; ++f) dst[f] = row[f];  // inline, not a memmove call per row
          }
        }
        r = std::max(r, end);
      }
    });
  });
  return out;
}

}  // namespace
}  // namespace torch_segment_ops

STABLE_TORCH_LIBRARY_FRAGMENT(torch_segment_ops, m) {
  m.def("gather_csr(Tensor src, Tensor indptr, SymInt? size=None) -> Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(torch_segment_ops, CPU, m) {
  m.impl("gather_csr", TORCH_BOX(&torch_segment_ops::gather_csr_cpu));
}
