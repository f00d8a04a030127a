// The CUDA kernels' helpers: torch's current stream, indptr validation on the
// device, and a segmented reduction over rows balanced by rows (the CPU
// design: chunks of rows, partial results of the segments that cross chunk
// boundaries combined afterwards, in a fixed order, so results are
// deterministic). Still only LibTorch's stable ABI: no ATen, no c10.
#pragma once

#include "common.h"

#include <torch/csrc/stable/accelerator.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>

namespace torch_segment_ops::cuda {

#define TORCH_SEGMENT_OPS_CUDA_CHECK(expr)                                                              \
  do {                                                                                                 \
    const cudaError_t error_ = (expr);                                                                 \
    STD_TORCH_CHECK(error_ == cudaSuccess, "torch_segment_ops: CUDA error: ", cudaGetErrorString(error_), \
                    " (", #expr, ")");                                                                 \
  } while (0)

// torch's current CUDA stream on `device` (stream.cpp).
void* current_stream_handle(int32_t device);

inline cudaStream_t current_stream(int32_t device) { return static_cast<cudaStream_t>(current_stream_handle(device)); }

// What a kernel launch needs: the device made current, its stream, its size.
struct Launch {
  torch::stable::accelerator::DeviceGuard guard;
  cudaStream_t stream;
  int64_t threads_in_flight;  // what the device runs at once: chunks are sized to fill it twice

  explicit Launch(const Tensor& t) : guard(t.get_device_index()), stream(current_stream(t.get_device_index())) {
    int sms = 0, per_sm = 0;
    TORCH_SEGMENT_OPS_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, t.get_device_index()));
    TORCH_SEGMENT_OPS_CUDA_CHECK(
        cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, t.get_device_index()));
    threads_in_flight = int64_t(sms) * per_sm;
  }
};

constexpr int kBlock = 256;

inline unsigned blocks_for(int64_t threads) { return static_cast<unsigned>((threads + kBlock - 1) / kBlock); }

inline void check_launch() { TORCH_SEGMENT_OPS_CUDA_CHECK(cudaGetLastError()); }

// Accumulation type and conversions of the element types.
template <typename T>
struct Acc {
  using type = T;
  __device__ static T load(T v) { return v; }
  __device__ static T store(T v) { return v; }
};
template <>
struct Acc<__half> {
  using type = float;
  __device__ static float load(__half v) { return __half2float(v); }
  __device__ static __half store(float v) { return __float2half_rn(v); }
};
template <>
struct Acc<__nv_bfloat16> {
  using type = float;
  __device__ static float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ static __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

// load functor of reduce_segments: row r, column f of a contiguous (rows, F) tensor, as acc_t.
template <typename scalar_t>
struct LoadRows {
  using acc_t = typename Acc<scalar_t>::type;
  const scalar_t* x;
  int64_t F;
  __device__ acc_t operator()(int64_t, int64_t r, int64_t f) const { return Acc<scalar_t>::load(x[r * F + f]); }
};

template <typename Body>
void dispatch(const char* op, ScalarType t, const Body& body) {
  dispatch_floating<__half, __nv_bfloat16>(op, t, body);
}

// ---- indptr ---------------------------------------------------------------

// No anonymous namespaces in device code: nvcc names them with a per-process number, which would
// make every build's library differ (builds are reproducible). Templates instead: one copy kept.
template <typename Index>
__global__ void first_invalid_kernel(const Index* p, int64_t n, unsigned long long* first_bad) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const bool bad = i == 0 ? p[0] != 0 : (p[i] < 0 || p[i] < p[i - 1]);
  if (bad) atomicMin(first_bad, static_cast<unsigned long long>(i));
}

// One thread: what the error message needs, in one place for one copy to the host:
// [first invalid position (n: none), indptr there, indptr before it, indptr[-1]].
template <typename Index>
__global__ void report_kernel(const Index* p, int64_t n, int64_t* report) {
  const unsigned long long first = reinterpret_cast<const unsigned long long*>(report)[0];
  const int64_t i = first < static_cast<unsigned long long>(n) ? static_cast<int64_t>(first) : n;
  report[0] = i;
  report[1] = i < n ? p[i] : 0;
  report[2] = i > 0 && i < n ? p[i - 1] : 0;
  report[3] = p[n - 1];
}

// The check with nothing brought back to the host: a bad indptr prints what is wrong and fails a
// device-side assert, as torch's kernels do (CUDA error "device-side assert triggered"; the CUDA context
// is unusable afterwards). last < 0: any. Not assert(): NDEBUG must not turn the check off.
template <typename Index>
__global__ void trap_if_invalid_kernel(const Index* p, int64_t n, int64_t last) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const bool bad = i == 0 ? p[0] != 0 : p[i] < p[i - 1];  // with p[0] == 0: non-negative too
  if (bad || (i == n - 1 && last >= 0 && p[i] != last)) {
    printf("torch_segment_ops: invalid `indptr` at position %lld (value %lld), found on the GPU: indptr must "
           "start at 0, not decrease and end at the number of rows (%lld); checked on the device because the "
           "call may not synchronise (CUDA graph capture, or gather_csr with `size`)\n",
           static_cast<long long>(i), static_cast<long long>(p[i]), static_cast<long long>(last));
    __assert_fail("torch_segment_ops: invalid indptr", "cuda_common.cuh", __LINE__, "check_indptr");
  }
}

inline std::string device_name(const Tensor& t) {
  if (t.is_cuda()) return "cuda:" + std::to_string(t.get_device_index());
  return t.is_cpu() ? "cpu" : "another device";
}

inline bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  TORCH_SEGMENT_OPS_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

struct CheckedIndptr {
  Tensor ptr;    // contiguous int64, on src's device
  int64_t last;  // indptr[-1]: the number of rows the segments cover
};

// The CUDA twin of check_indptr (segment.h), with the same messages. Checked by a kernel, and:
// - by default ONE synchronising copy of 32 bytes brings back the first invalid position with the values
//   the message names, and indptr[-1] (gather_csr needs it for the output's size): the price of a clear
//   ValueError instead of out-of-bounds reads;
// - when the caller knows the number of rows (`num_rows`) and may not synchronise (`device_only`: the
//   stream is being captured into a CUDA graph, or gather_csr was given `size`), nothing is copied:
//   trap_if_invalid_kernel stops the program on the device instead.
inline CheckedIndptr check_indptr(const char* op, const Tensor& indptr, const Tensor& src,
                                  std::optional<int64_t> num_rows, const Launch& launch, bool device_only) {
  const auto t = indptr.scalar_type();
  STD_TORCH_CHECK(t == ScalarType::Long || t == ScalarType::Int, op,
                  "(): expected `indptr` to be int64 or int32, got ", torch::headeronly::toString(t));
  STD_TORCH_CHECK(indptr.is_cuda() && indptr.get_device_index() == src.get_device_index(), op,
                  "(): expected `indptr` on the same device as `src` (", device_name(src), "), got ",
                  device_name(indptr));
  STD_TORCH_CHECK(indptr.dim() == 1, op, "(): expected `indptr` to be 1-D, got ", indptr.dim(), "-D");
  const int64_t n = indptr.numel();
  STD_TORCH_CHECK(n >= 1, op, "(): expected `indptr` to have at least one element (indptr[0] == 0)");
  const Tensor ptr = as_contiguous(t == ScalarType::Long ? indptr : torch::stable::to(indptr, ScalarType::Long));
  const int64_t* p = static_cast<const int64_t*>(ptr.const_data_ptr());

  if (device_only || capturing(launch.stream)) {
    STD_TORCH_CHECK(num_rows.has_value(), op, "(): expected `size` (= indptr[-1]) under CUDA graph capture: "
                    "the output's size cannot be read from `indptr` there (no synchronisation)");
    trap_if_invalid_kernel<<<blocks_for(n), kBlock, 0, launch.stream>>>(p, n, *num_rows);
    check_launch();
    return {ptr, *num_rows};
  }
  Tensor report = torch::stable::new_empty(ptr, {4});
  auto* r = static_cast<int64_t*>(report.mutable_data_ptr());
  TORCH_SEGMENT_OPS_CUDA_CHECK(cudaMemsetAsync(r, 0xFF, sizeof(int64_t), launch.stream));  // "none found"
  first_invalid_kernel<<<blocks_for(n), kBlock, 0, launch.stream>>>(p, n, reinterpret_cast<unsigned long long*>(r));
  report_kernel<<<1, 1, 0, launch.stream>>>(p, n, r);
  check_launch();
  int64_t host[4];
  TORCH_SEGMENT_OPS_CUDA_CHECK(cudaMemcpyAsync(host, r, sizeof(host), cudaMemcpyDeviceToHost, launch.stream));
  TORCH_SEGMENT_OPS_CUDA_CHECK(cudaStreamSynchronize(launch.stream));
  const int64_t i = host[0], value = host[1], before = host[2], last = host[3];
  if (i < n) {
    STD_TORCH_CHECK(i > 0, op, "(): expected `indptr[0] == 0`, got ", value);
    STD_TORCH_CHECK(value >= 0, op, "(): expected `indptr` to be non-negative, got indptr[", i, "] = ", value);
    STD_TORCH_CHECK(false, op, "(): expected `indptr` to be non-decreasing, got indptr[", i - 1, "] = ", before,
                    " > indptr[", i, "] = ", value);
  }
  STD_TORCH_CHECK(!num_rows || last == *num_rows, op, "(): expected `indptr[-1]` to equal the number of rows (",
                  num_rows.value_or(-1), "), got ", last);
  return {ptr, last};
}

// ---- walking rows ---------------------------------------------------------

// The segment holding row r: the last s with indptr[s] <= r (non-empty, as r < indptr[N]).
__device__ inline int64_t segment_of(const int64_t* indptr, int64_t lo, int64_t hi, int64_t r) {
  // first index in [lo, hi] whose value exceeds r, minus one
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (indptr[mid] <= r) lo = mid + 1;
    else hi = mid;
  }
  return lo - 1;
}

// After segment s ends at row r (= indptr[s + 1] < indptr[N]): the segment holding r.
// Usually s + 1; a binary search only skips a run of empty segments.
__device__ inline int64_t next_segment(const int64_t* indptr, int64_t num_segs, int64_t s, int64_t r) {
  return indptr[s + 2] > r ? s + 1 : segment_of(indptr, s + 2, num_segs, r);
}

// How rows are cut into chunks, one thread per (chunk, column): enough threads
// to fill the device twice, and at least kMinRows rows each.
struct Chunks {
  int64_t rows;   // rows per chunk
  int64_t count;  // number of chunks

  Chunks(int64_t num_rows, int64_t row_len, const Launch& launch) {
    constexpr int64_t kMinRows = 16;
    const int64_t work = num_rows * std::max<int64_t>(row_len, 1);
    rows = std::max<int64_t>(kMinRows, (work + 2 * launch.threads_in_flight - 1) / (2 * launch.threads_in_flight));
    count = (num_rows + rows - 1) / rows;
  }
};

// ---- segmented reduction --------------------------------------------------

template <typename acc_t>
struct SumOp {
  __device__ static acc_t identity() { return acc_t(0); }
  __device__ static void update(acc_t& a, int64_t&, acc_t v, int64_t) { a += v; }
  __device__ static void combine(acc_t& a, int64_t&, acc_t b, int64_t) { a += b; }
};

// min/max: the first NaN wins, like torch's amax/amin; the row of the first
// occurrence is kept (update sees rows in order; combine may see pieces in any
// order and so breaks ties by row).
template <typename acc_t, bool kMax>
struct ExtremeOp {
  __device__ static acc_t identity() {
    return kMax ? -std::numeric_limits<acc_t>::infinity() : std::numeric_limits<acc_t>::infinity();
  }
  __device__ static bool better(acc_t v, acc_t a) {
    return (v != v && a == a) || (kMax ? v > a : v < a);
  }
  __device__ static void update(acc_t& a, int64_t& arg, acc_t v, int64_t row) {
    if (better(v, a)) {
      a = v;
      arg = row;
    }
  }
  __device__ static void combine(acc_t& a, int64_t& arg, acc_t b, int64_t barg) {
    const bool tie = a == b || (a != a && b != b);
    if (better(b, a) || (tie && barg < arg)) {
      a = b;
      arg = barg;
    }
  }
};

// Partial results of the segments that cross chunk boundaries, per chunk and column.
template <typename acc_t>
struct Pieces {
  acc_t* head_acc;    // the piece of a segment that started before the chunk
  int64_t* head_arg;
  acc_t* tail_acc;    // the piece of a segment that starts in the chunk and runs past it
  int64_t* tail_arg;
  int64_t* head_seg;  // per chunk: which segment, or -1
  int64_t* tail_seg;
  unsigned long long* wide_count;  // segments spanning more than kSerialPieces chunks ...
  int64_t* wide;                   // ... and the chunks they start in
};

// Up to this many pieces one thread combines a segment's pieces; beyond, a block does.
constexpr int64_t kSerialPieces = 32;

// Reduces rows [r0, r1) (r0 < r1) of column f of segment s.
template <typename Op, typename acc_t, typename Load>
__device__ void reduce_rows(const Load& load, int64_t s, int64_t r0, int64_t r1, int64_t f, acc_t& acc,
                            int64_t& arg) {
  acc = load(s, r0, f);  // from the first row, so min/max of all -inf/+inf rows still point at a row
  arg = r0;
  for (int64_t r = r0 + 1; r < r1; ++r) Op::update(acc, arg, load(s, r, f), r);
}

// Pass 1, one thread per (chunk, column): complete segments are stored, the
// pieces of crossing segments are kept. Empty segments are left to fill_empty.
template <typename Op, typename acc_t, typename Load, typename Store>
__global__ void reduce_chunks_kernel(const int64_t* indptr, int64_t num_segs, int64_t num_rows, int64_t F,
                                     Chunks chunks, Load load, Store store, Pieces<acc_t> pieces) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= chunks.count * F) return;
  const int64_t c = idx / F, f = idx % F;
  const int64_t rb = c * chunks.rows, re = rb + chunks.rows < num_rows ? rb + chunks.rows : num_rows;
  if (f == 0) {
    pieces.head_seg[c] = -1;
    pieces.tail_seg[c] = -1;
  }
  int64_t s = segment_of(indptr, 0, num_segs, rb);
  for (int64_t r = rb; r < re; s = next_segment(indptr, num_segs, s, r)) {
    const int64_t start = indptr[s], end = indptr[s + 1], stop = end < re ? end : re;
    acc_t acc;
    int64_t arg;
    reduce_rows<Op>(load, s, r, stop, f, acc, arg);
    if (start < rb) {  // head piece (the chunk may lie wholly inside the segment)
      pieces.head_acc[c * F + f] = acc;
      pieces.head_arg[c * F + f] = arg;
      if (f == 0) pieces.head_seg[c] = s;
    } else if (end <= re) {
      store(s, end - start, f, acc, arg);
    } else {
      pieces.tail_acc[c * F + f] = acc;
      pieces.tail_arg[c * F + f] = arg;
      if (f == 0) pieces.tail_seg[c] = s;
    }
    r = stop;
    if (r >= re) break;
  }
}

template <typename acc_t, typename Store>
__global__ void fill_empty_kernel(const int64_t* indptr, int64_t num_segs, int64_t num_rows, int64_t F,
                                  Store store) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= num_segs * F) return;
  const int64_t s = idx / F;
  if (indptr[s] == indptr[s + 1]) store(s, 0, idx % F, acc_t(0), num_rows);
}

// The chunk holding the last row of crossing segment s, which starts in chunk c.
__device__ inline int64_t last_chunk(const int64_t* indptr, int64_t s, int64_t rows_per_chunk) {
  return (indptr[s + 1] - 1) / rows_per_chunk;
}

// Pass 2, one thread per (chunk, column): a segment starting in the chunk and
// crossing at most kSerialPieces chunks is combined in row order; wider ones
// are listed for pass 3.
template <typename Op, typename acc_t, typename Store>
__global__ void combine_kernel(const int64_t* indptr, int64_t F, Chunks chunks, Store store, Pieces<acc_t> pieces) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= chunks.count * F) return;
  const int64_t c = idx / F, f = idx % F;
  const int64_t s = pieces.tail_seg[c];
  if (s < 0) return;
  const int64_t last = last_chunk(indptr, s, chunks.rows);
  if (last - c > kSerialPieces) {
    if (f == 0) pieces.wide[atomicAdd(pieces.wide_count, 1ULL)] = c;
    return;
  }
  acc_t acc = pieces.tail_acc[c * F + f];
  int64_t arg = pieces.tail_arg[c * F + f];
  for (int64_t d = c + 1; d <= last; ++d) Op::combine(acc, arg, pieces.head_acc[d * F + f], pieces.head_arg[d * F + f]);
  store(s, indptr[s + 1] - indptr[s], f, acc, arg);
}

// Pass 3, one block per wide segment (grid-stride over the list): each thread
// combines every kBlock-th piece, then a tree in shared memory; the tie rule
// of combine keeps the result independent of that order.
template <typename Op, typename acc_t, typename Store>
__global__ void combine_wide_kernel(const int64_t* indptr, int64_t num_rows, int64_t F, Chunks chunks, Store store,
                                    Pieces<acc_t> pieces) {
  __shared__ acc_t shared_acc[kBlock];
  __shared__ int64_t shared_arg[kBlock];
  const unsigned long long count = *pieces.wide_count;
  for (unsigned long long w = blockIdx.x; w < count; w += gridDim.x) {
    const int64_t c = pieces.wide[w];
    const int64_t s = pieces.tail_seg[c];
    const int64_t last = last_chunk(indptr, s, chunks.rows);
    for (int64_t f = 0; f < F; ++f) {
      acc_t acc = Op::identity();
      int64_t arg = std::numeric_limits<int64_t>::max();
      for (int64_t d = c + threadIdx.x; d <= last; d += blockDim.x) {
        const bool tail = d == c;
        Op::combine(acc, arg, tail ? pieces.tail_acc[c * F + f] : pieces.head_acc[d * F + f],
                    tail ? pieces.tail_arg[c * F + f] : pieces.head_arg[d * F + f]);
      }
      shared_acc[threadIdx.x] = acc;
      shared_arg[threadIdx.x] = arg;
      __syncthreads();
      for (int half = kBlock / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) {
          Op::combine(shared_acc[threadIdx.x], shared_arg[threadIdx.x], shared_acc[threadIdx.x + half],
                      shared_arg[threadIdx.x + half]);
        }
        __syncthreads();
      }
      if (threadIdx.x == 0) store(s, indptr[s + 1] - indptr[s], f, shared_acc[0], shared_arg[0]);
      __syncthreads();  // shared memory is reused by the next column
    }
  }
}

// Reduces every column of every segment of the (num_rows, F) rows that load
// reads. load: acc_t(s, r, f); store: void(s, count, f, acc, arg), where an
// empty segment is stored as (count 0, acc 0, arg num_rows).
template <typename Op, typename acc_t, typename Load, typename Store>
void reduce_segments(const Tensor& ptr, int64_t num_segs, int64_t num_rows, int64_t F, const Load& load,
                     const Store& store, const Launch& launch) {
  if (num_segs == 0 || F == 0) return;
  const int64_t* indptr = static_cast<const int64_t*>(ptr.const_data_ptr());
  fill_empty_kernel<acc_t><<<blocks_for(num_segs * F), kBlock, 0, launch.stream>>>(indptr, num_segs, num_rows, F,
                                                                                  store);
  check_launch();
  if (num_rows == 0) return;
  const Chunks chunks(num_rows, F, launch);
  // One scratch tensor holds every piece buffer (acc_t values first, 8-byte aligned).
  const int64_t values = 2 * chunks.count * F, acc_bytes = (values * int64_t(sizeof(acc_t)) + 7) / 8 * 8;
  const int64_t words = acc_bytes / 8 + values + 2 * chunks.count + 1 + chunks.count;
  Tensor scratch = torch::stable::new_empty(ptr, {words});
  char* base = static_cast<char*>(scratch.mutable_data_ptr());
  Pieces<acc_t> pieces;
  pieces.head_acc = reinterpret_cast<acc_t*>(base);
  pieces.tail_acc = pieces.head_acc + chunks.count * F;
  pieces.head_arg = reinterpret_cast<int64_t*>(base + acc_bytes);
  pieces.tail_arg = pieces.head_arg + chunks.count * F;
  pieces.head_seg = pieces.tail_arg + chunks.count * F;
  pieces.tail_seg = pieces.head_seg + chunks.count;
  pieces.wide_count = reinterpret_cast<unsigned long long*>(pieces.tail_seg + chunks.count);
  pieces.wide = reinterpret_cast<int64_t*>(pieces.wide_count + 1);
  TORCH_SEGMENT_OPS_CUDA_CHECK(cudaMemsetAsync(pieces.wide_count, 0, sizeof(unsigned long long), launch.stream));

  const unsigned blocks = blocks_for(chunks.count * F);
  reduce_chunks_kernel<Op><<<blocks, kBlock, 0, launch.stream>>>(indptr, num_segs, num_rows, F, chunks, load, store,
                                                                 pieces);
  check_launch();
  combine_kernel<Op><<<blocks, kBlock, 0, launch.stream>>>(indptr, F, chunks, store, pieces);
  check_launch();
  // A wide segment spans > kSerialPieces chunks, so there are fewer than count / kSerialPieces of them.
  const unsigned wide_blocks = static_cast<unsigned>(std::min<int64_t>(chunks.count / kSerialPieces + 1, 1024));
  combine_wide_kernel<Op><<<wide_blocks, kBlock, 0, launch.stream>>>(indptr, num_rows, F, chunks, store, pieces);
  check_launch();
}

// Calls body(r, f, s) for every (row, column) with s the segment of row r, one
// thread per (chunk, column), for the elementwise passes (gather, softmax's last).
template <typename Body>
__global__ void for_each_row_kernel(const int64_t* indptr, int64_t num_segs, int64_t num_rows, int64_t F,
                                    Chunks chunks, Body body) {
  const int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (idx >= chunks.count * F) return;
  const int64_t c = idx / F, f = idx % F;
  const int64_t rb = c * chunks.rows, re = rb + chunks.rows < num_rows ? rb + chunks.rows : num_rows;
  int64_t s = segment_of(indptr, 0, num_segs, rb);
  for (int64_t r = rb; r < re; ++r) {
    if (r == indptr[s + 1]) s = next_segment(indptr, num_segs, s, r);
    body(r, f, s);
  }
}

template <typename Body>
void for_each_row(const Tensor& ptr, int64_t num_segs, int64_t num_rows, int64_t F, const Body& body,
                  const Launch& launch) {
  if (num_rows == 0 || F == 0) return;
  const Chunks chunks(num_rows, F, launch);
  for_each_row_kernel<<<blocks_for(chunks.count * F), kBlock, 0, launch.stream>>>(
      static_cast<const int64_t*>(ptr.const_data_ptr()), num_segs, num_rows, F, chunks, body);
  check_launch();
}

}  // namespace torch_segment_ops::cuda
