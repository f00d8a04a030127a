// segment_softmax: softmax over the rows of each CSR segment, per column,
// shifted by the segment max for numerical stability.
#include "segment.h"

#include <type_traits>

namespace torch_segment_ops {
namespace {

Tensor segment_softmax_cpu(const Tensor& src, const Tensor& indptr) {
  check_src("segment_softmax", src, "src");
  const Tensor ptr = check_indptr("segment_softmax", indptr, src.size(0));
  const int64_t N = ptr.numel() - 1, E = src.size(0), F = row_size(src);
  const Tensor x = as_contiguous(src);
  Tensor out = new_contiguous(x, with_rows(x, E));
  if (E == 0 || F == 0) return out;

  dispatch_floating("segment_softmax", x.scalar_type(), [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using acc_t = acc_type<scalar_t>;
    const int64_t* p = ptr.const_data_ptr<int64_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = out.mutable_data_ptr<scalar_t>();
    std::vector<acc_t> seg_max(N * F), seg_inv_sum(N * F);
    acc_t* mp = seg_max.data();
    acc_t* zp = seg_inv_sum.data();
    auto load_x = [=](int64_t, int64_t r, int64_t f) { return static_cast<acc_t>(xp[r * F + f]); };
    auto store_max = [=](int64_t s, int64_t, const acc_t* acc, const int64_t*) {
      std::copy(acc, acc + F, mp + s * F);
    };
    reduce_segments<acc_t, ExtremeOp<acc_t, true, false>>(p, N, E, F, load_x, store_max);

    // exp is the costly part. float/double: the sum pass writes exp(x - max) into the output as it
    // sums it, and the last pass only scales it. Half types: exp stays in float and is computed
    // again in the last pass, rather than rounded to half twice.
    constexpr bool kKeepExp = std::is_same_v<scalar_t, acc_t>;
    auto load_exp = [=](int64_t s, int64_t r, int64_t f) {
      const acc_t e = fast_exp(static_cast<acc_t>(xp[r * F + f]) - mp[s * F + f]);
      if constexpr (kKeepExp) yp[r * F + f] = e;
      return e;
    };
    auto store_inv_sum = [=](int64_t s, int64_t, const acc_t* acc, const int64_t*) {
      for (int64_t f = 0; f < F; ++f) zp[s * F + f] = acc_t(1) / acc[f];
    };
    reduce_segments<acc_t, SumOp<acc_t>>(p, N, E, F, load_exp, store_inv_sum);

    // Output element i of a segment with max m and 1 / sum z.
    auto finish = [=](int64_t i, acc_t m, acc_t z) {
      if constexpr (kKeepExp) {
        yp[i] *= z;
      } else {
        yp[i] = static_cast<scalar_t>(fast_exp(static_cast<acc_t>(xp[i]) - m) * z);
      }
    };
    // Parallel over rows; within a chunk, segment by segment (as gather_csr), so F = 1 is one
    // vectorised loop per segment rather than a loop of one element per row.
    torch::stable::parallel_for(0, E, std::max<int64_t>(1, (1 << 14) / F), [&](int64_t r0, int64_t r1) {
      int64_t s = std::upper_bound(p, p + N + 1, r0) - p - 1;
      for (int64_t r = r0; r < r1; ++s) {
        const int64_t end = std::min<int64_t>(p[s + 1], r1);
        const acc_t* m = mp + s * F;
        const acc_t* z = zp + s * F;
        if (F == 1) {
          const acc_t m0 = m[0], z0 = z[0];
          TORCH_SEGMENT_OPS_SIMD
          for (int64_t i = r; i < end; ++i) finish(i, m0, z0);
        } else {
          for (int64_t rr = r; rr < end; ++rr) {
            TORCH_SEGMENT_OPS_SIMD
            for (int64_t f = 0; f < F; ++f) finish(rr * F + f, m[f], z[f]);
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
  m.def("segment_softmax(Tensor src, Tensor indptr) -> Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(torch_segment_ops, CPU, m) {
  m.impl("segment_softmax", TORCH_BOX(&torch_segment_ops::segment_softmax_cpu));
}
