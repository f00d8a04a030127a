// The CPU kernels' helpers: indptr validation on the host and a load-balanced
// segmented reduction over rows (torch::stable::parallel_for).
#pragma once

#include "common.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

// Vectorise the following loop (`-fopenmp-simd`: the pragma only, no OpenMP
// runtime). A macro, because #pragma cannot appear inside a macro argument.
#define TORCH_SEGMENT_OPS_SIMD _Pragma("omp simd")

namespace torch_segment_ops {

// Checks that `indptr` is a valid CSR offset vector over `num_rows` rows:
// 1-D int32/int64 on the CPU, starts at 0, non-decreasing, ends at num_rows
// (when given). Returns it as contiguous int64 (int32 input is converted once,
// which costs O(N) and halves the number of kernel instantiations). The value
// checks are the only ones the Python wrappers cannot make without reading
// the data; their messages start with "<op>(): expected `indptr" so that the
// wrappers can re-raise them as ValueError.
inline Tensor check_indptr(const char* op, const Tensor& indptr, std::optional<int64_t> num_rows) {
  const auto t = indptr.scalar_type();
  STD_TORCH_CHECK(t == ScalarType::Long || t == ScalarType::Int, op,
                  "(): expected `indptr` to be int64 or int32, got ", torch::headeronly::toString(t));
  STD_TORCH_CHECK(indptr.is_cpu(), op, "(): expected `indptr` on the CPU");
  STD_TORCH_CHECK(indptr.dim() == 1, op, "(): expected `indptr` to be 1-D, got ", indptr.dim(), "-D");
  STD_TORCH_CHECK(indptr.numel() >= 1, op,
                  "(): expected `indptr` to have at least one element (indptr[0] == 0)");
  const Tensor ptr = as_contiguous(t == ScalarType::Long ? indptr : torch::stable::to(indptr, ScalarType::Long));
  const int64_t* p = ptr.const_data_ptr<int64_t>();
  const int64_t n = ptr.numel();
  STD_TORCH_CHECK(p[0] == 0, op, "(): expected `indptr[0] == 0`, got ", p[0]);
  for (int64_t i = 1; i < n; ++i) {
    STD_TORCH_CHECK(p[i] >= 0, op, "(): expected `indptr` to be non-negative, got indptr[", i, "] = ", p[i]);
    STD_TORCH_CHECK(p[i] >= p[i - 1], op, "(): expected `indptr` to be non-decreasing, got indptr[", i - 1,
                    "] = ", p[i - 1], " > indptr[", i, "] = ", p[i]);
  }
  STD_TORCH_CHECK(!num_rows || p[n - 1] == *num_rows, op,
                  "(): expected `indptr[-1]` to equal the number of rows (", num_rows.value_or(-1), "), got ",
                  p[n - 1]);
  return ptr;
}

// Number of chunks the rows are split into: enough work per chunk to hide the
// scheduling cost, a few chunks per thread so uneven chunks even out.
inline int64_t num_chunks(int64_t rows, int64_t row_len) {
  constexpr int64_t kWorkPerChunk = 1 << 15;
  const int64_t work = rows * std::max<int64_t>(row_len, 1);
  const int64_t max_chunks = std::max<int64_t>(1, 4 * int64_t(torch::stable::get_num_threads()));
  const int64_t chunks = std::clamp<int64_t>(work / kWorkPerChunk, 1, std::min(max_chunks, std::max<int64_t>(rows, 1)));
  return std::max(chunks, rows / (int64_t(1) << 30) + 1);  // < 2^30 rows each (see reduce_rows)
}

// A sum-like reduction of rows [r0, r1) of width kF, known when compiling: the
// accumulators stay in registers for the whole segment instead of being loaded
// and stored for every row (the general loop's F is only known at run time).
// Counted with callgrind (benchmarks/count_instructions.py big_sum 16): see
// docs/performance.md.
constexpr int64_t kFixedWidth = 16;

template <int64_t kF, typename acc_t, typename Op, typename Load>
inline void reduce_fixed_width(int64_t seg, int64_t r0, int64_t r1, acc_t* __restrict acc, const Load& load) {
  acc_t local[kF];
  for (int64_t f = 0; f < kF; ++f) local[f] = load(seg, r0, f);
  int32_t unused = 0;
  for (int64_t r = r0 + 1; r < r1; ++r) {
    for (int64_t f = 0; f < kF; ++f) Op::update(local[f], unused, load(seg, r, f), 0);
  }
  for (int64_t f = 0; f < kF; ++f) acc[f] = local[f];
}

// Segmented reduction over rows, balanced by rows rather than by segments, so
// a few huge segments do not serialise the work. Rows are cut into equal
// chunks; a segment that crosses chunk boundaries is reduced piecewise in
// parallel and its pieces are combined (in row order) afterwards.
//
// Op:    acc_t identity(); void update(acc_t&, int32_t& arg, acc_t v, int32_t row);
//        void combine(acc_t&, int64_t&, acc_t, int64_t)  (right side = later rows)
//        kReassociable (sum-like), kTracksArg (min/max report their row)
// load:  acc_t(int64_t seg, int64_t row, int64_t f)
// store: void(int64_t seg, int64_t count, const acc_t* acc, const int64_t* arg)
template <typename acc_t, typename Op, typename index_t, typename Load, typename Store>
void reduce_segments(const index_t* indptr, int64_t num_segs, int64_t num_rows, int64_t row_len,
                     const Load& load, const Store& store) {
  if (num_segs == 0) return;
  const int64_t F = row_len;
  const int64_t chunks = num_chunks(num_rows, F);
  // Per chunk: the partial of a segment that started in an earlier chunk
  // ("head") and of the owned segment that runs past the chunk ("tail").
  std::vector<acc_t> head_acc(chunks * F), tail_acc(chunks * F);
  std::vector<int64_t> head_arg(chunks * F), tail_arg(chunks * F);
  std::vector<int64_t> head_seg(chunks, -1), tail_seg(chunks, -1);
  const index_t* end = indptr + num_segs + 1;

  // Local copies (F, the load functor) let the compiler keep them in
  // registers instead of reloading them after every store to acc/arg, which
  // is what allows the column loops to vectorise.
  // Reduces rows [r0, r1) of segment seg into acc/arg. `off` is scratch:
  // the arg-extreme is tracked as an int32 offset from r0 (chunks are kept
  // below 2^30 rows) because SSE2 cannot vectorise selects of 64-bit ints
  // next to floats. The captures are copies so the compiler keeps them in
  // registers instead of reloading them after every store to acc/arg.
  auto reduce_rows = [F, num_rows, load](int64_t seg, int64_t r0, int64_t r1, acc_t* __restrict acc,
                                         int64_t* __restrict arg, int32_t* __restrict off) {
    if (r0 == r1) {
      std::fill(acc, acc + F, Op::identity());
      std::fill(arg, arg + F, num_rows);  // empty segments point one past the end
      return;
    }
    if (F == 1) {  // one long column: no inner loop
      if constexpr (Op::kReassociable) {  // let the compiler split the sum
        acc_t total = acc_t(0);
        _Pragma("omp simd reduction(+ : total)")
        for (int64_t r = r0; r < r1; ++r) total += load(seg, r, 0);
        acc[0] = total;
      } else {
        int32_t o = 0;
        acc[0] = Op::reduce_column(r1 - r0, [&](int64_t i) { return load(seg, r0 + i, 0); }, o);
        arg[0] = r0 + o;
      }
      return;
    }
    if constexpr (Op::kReassociable) {
      if (F == kFixedWidth) return reduce_fixed_width<kFixedWidth, acc_t, Op>(seg, r0, r1, acc, load);
    }
    // Start from the first row (not the identity) so that min/max of an
    // all -inf/+inf segment still points at a real row.
    TORCH_SEGMENT_OPS_SIMD
    for (int64_t f = 0; f < F; ++f) {
      acc[f] = load(seg, r0, f);
      off[f] = 0;
    }
    for (int64_t r = r0 + 1; r < r1; ++r) {
      const int32_t o = static_cast<int32_t>(r - r0);
      TORCH_SEGMENT_OPS_SIMD
      for (int64_t f = 0; f < F; ++f) Op::update(acc[f], off[f], load(seg, r, f), o);
    }
    if constexpr (Op::kTracksArg) {
      for (int64_t f = 0; f < F; ++f) arg[f] = r0 + off[f];
    }
  };

  torch::stable::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
    std::vector<acc_t> acc(F);
    std::vector<int64_t> arg(F);
    std::vector<int32_t> off(F);
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t rb = c * num_rows / chunks;
      const int64_t re = (c + 1) * num_rows / chunks;
      const bool last = c == chunks - 1;
      if (rb < re) {  // head: the segment holding row rb, if it starts earlier
        const int64_t s = std::upper_bound(indptr, end, rb) - indptr - 1;
        if (indptr[s] < rb) {
          head_seg[c] = s;
          reduce_rows(s, rb, std::min<int64_t>(indptr[s + 1], re), &head_acc[c * F], &head_arg[c * F], off.data());
        }
      }
      // owned: segments starting in [rb, re); the last chunk also owns the
      // empty segments at the very end.
      for (int64_t s = std::lower_bound(indptr, end, rb) - indptr;
           s < num_segs && (indptr[s] < re || (last && indptr[s] <= re)); ++s) {
        const int64_t s0 = indptr[s], s1 = indptr[s + 1];
        if (s1 <= re) {
          reduce_rows(s, s0, s1, acc.data(), arg.data(), off.data());
          store(s, s1 - s0, acc.data(), arg.data());
        } else {
          tail_seg[c] = s;
          reduce_rows(s, s0, re, &tail_acc[c * F], &tail_arg[c * F], off.data());
        }
      }
    }
  });

  // Combine the pieces of segments that crossed chunk boundaries.
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t s = tail_seg[c];
    if (s < 0) continue;
    acc_t* acc = &tail_acc[c * F];
    int64_t* arg = &tail_arg[c * F];
    for (int64_t d = c + 1; d < chunks && head_seg[d] == s; ++d) {
      for (int64_t f = 0; f < F; ++f) Op::combine(acc[f], arg[f], head_acc[d * F + f], head_arg[d * F + f]);
    }
    store(s, indptr[s + 1] - indptr[s], acc, arg);
  }
}

// Reduction policies. update/combine keep the earliest row on ties and
// propagate NaN like torch's amax/amin.
template <typename acc_t>
struct SumOp {
  static constexpr bool kReassociable = true;
  static constexpr bool kTracksArg = false;
  static acc_t identity() { return acc_t(0); }
  static void update(acc_t& a, int32_t&, acc_t v, int32_t) { a += v; }
  static void combine(acc_t& a, int64_t&, acc_t b, int64_t) { a += b; }
};

template <typename acc_t, bool kMax, bool kTrackArg = true>
struct ExtremeOp {
  static constexpr bool kReassociable = false;
  static constexpr bool kTracksArg = kTrackArg;
  static acc_t identity() {
    return kMax ? -std::numeric_limits<acc_t>::infinity() : std::numeric_limits<acc_t>::infinity();
  }
  static bool better(acc_t v, acc_t a) {
    // bitwise, not short-circuit: no branches, so the loop vectorises
    const bool v_nan = v != v, a_nan = a != a;  // the first NaN wins
    return (v_nan & !a_nan) | (kMax ? v > a : v < a);
  }
  static void update(acc_t& a, int32_t& arg, acc_t v, int32_t row) {
    const bool take = better(v, a);  // branch-free, so the column loop vectorises
    a = take ? v : a;
    if constexpr (kTrackArg) arg = take ? row : arg;
  }
  // Extreme of one column of n >= 1 values, and the offset of its first
  // occurrence. A single running select is a chain of dependent
  // instructions per value, so keep independent lanes and merge them.
  template <typename Load>
  static acc_t reduce_column(int64_t n, const Load& load, int32_t& offset) {
    offset = 0;
    constexpr int64_t kLanes = 8;
    acc_t best = load(0);
    int64_t i = 1;
    if (n >= kLanes) {
      acc_t lane[kLanes];
      int32_t at[kLanes];
      for (int64_t l = 0; l < kLanes; ++l) {
        lane[l] = load(l);
        at[l] = static_cast<int32_t>(l);
      }
      for (i = kLanes; i + kLanes <= n; i += kLanes) {
        TORCH_SEGMENT_OPS_SIMD
        for (int64_t l = 0; l < kLanes; ++l) update(lane[l], at[l], load(i + l), static_cast<int32_t>(i + l));
      }
      if constexpr (kTrackArg) {
        best = lane[0];
        offset = at[0];
        for (int64_t l = 1; l < kLanes; ++l) {  // on ties the earlier row wins
          const bool tie = lane[l] == best || (lane[l] != lane[l] && best != best);
          if (better(lane[l], best) || (tie && at[l] < offset)) {
            best = lane[l];
            offset = at[l];
          }
        }
      } else {  // no row to report: halve the lanes in vector steps (big_max F=1: 8.4 -> 7.5 instructions per row)
        for (int64_t width = kLanes / 2; width >= 1; width /= 2) {
          TORCH_SEGMENT_OPS_SIMD
          for (int64_t l = 0; l < width; ++l) lane[l] = better(lane[l + width], lane[l]) ? lane[l + width] : lane[l];
        }
        best = lane[0];
      }
    }
    for (; i < n; ++i) update(best, offset, load(i), static_cast<int32_t>(i));
    return best;
  }
  static void combine(acc_t& a, int64_t& arg, acc_t b, int64_t barg) {
    if (better(b, a)) {
      a = b;
      arg = barg;
    }
  }
};

}  // namespace torch_segment_ops

namespace torch_segment_ops {

// exp for float that the compiler can vectorise (std::exp is a scalar libm
// call): Cody-Waite range reduction and a degree-6 polynomial, ~2 ulp.
inline float fast_exp(float in) {
  // Selects, not branches (std::clamp branches), so callers' loops vectorise; each is one maxps/minps.
  float x = in > -88.0f ? in : -88.0f;  // exp(-88) rounds to 0 below; NaN becomes -88 here and is passed
  x = x < 88.0f ? x : 88.0f;            // through at the end
  const float n = (x * 1.44269504f + 12582912.0f) - 12582912.0f;  // round(x / ln 2)
  const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
  float p = 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return in == in ? p * scale : in;
}

inline double fast_exp(double x) { return std::exp(x); }

}  // namespace torch_segment_ops
