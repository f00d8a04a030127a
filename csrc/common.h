// What the CPU and CUDA kernels share: types, dtype dispatch, argument checks
// and shape helpers. Only LibTorch's stable ABI is used (torch/csrc/stable,
// torch/headeronly): one build loads on every torch from the floor it targets
// (TORCH_TARGET_VERSION, set by setup.py) up.
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Exception.h>
#include <torch/headeronly/util/Half.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

namespace torch_segment_ops {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

// The type a value of scalar_t is accumulated in (at::opmath_type's rule).
template <typename T>
struct AccType {
  using type = T;
};
template <>
struct AccType<torch::headeronly::Half> {
  using type = float;
};
template <>
struct AccType<torch::headeronly::BFloat16> {
  using type = float;
};
template <typename T>
using acc_type = typename AccType<T>::type;

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls body(TypeTag<scalar_t>{}) for the floating dtypes we claim (a function,
// not a dispatch macro: the kernels' lambdas contain commas).
// Half/BFloat16 name the 16-bit types (torch's on the CPU, CUDA's own in device code).
template <typename Half = torch::headeronly::Half, typename BFloat16 = torch::headeronly::BFloat16,
          typename Body>
void dispatch_floating(const char* op, ScalarType t, const Body& body) {
  switch (t) {
    case ScalarType::Float: return body(TypeTag<float>{});
    case ScalarType::Double: return body(TypeTag<double>{});
    case ScalarType::Half: return body(TypeTag<Half>{});
    case ScalarType::BFloat16: return body(TypeTag<BFloat16>{});
    default: STD_TORCH_CHECK(false, op, "(): unsupported dtype ", torch::headeronly::toString(t));
  }
}

// t itself when already contiguous (each stable op call is a boxed dispatcher call: skip the no-ops).
inline Tensor as_contiguous(const Tensor& t) {
  return t.is_contiguous() ? t : torch::stable::contiguous(t);
}

// Checks the public wrappers (torch_segment_ops/ops.py) already made, with the
// same messages, for callers of the raw torch.ops op; these raise RuntimeError.
enum class Device { CPU, CUDA };

inline void check_src(const char* op, const Tensor& src, const char* name, Device device = Device::CPU) {
  const auto t = src.scalar_type();
  STD_TORCH_CHECK(t == ScalarType::Float || t == ScalarType::Double || t == ScalarType::BFloat16 ||
                      t == ScalarType::Half,
                  op, "(): expected `", name, "` to be float32, float64, bfloat16 or float16, got ",
                  torch::headeronly::toString(t));
  if (device == Device::CPU) STD_TORCH_CHECK(src.is_cpu(), op, "(): expected `", name, "` on the CPU");
  if (device == Device::CUDA) STD_TORCH_CHECK(src.is_cuda(), op, "(): expected `", name, "` on a CUDA device");
  STD_TORCH_CHECK(src.dim() >= 1, op, "(): expected `", name,
                  "` to have at least 1 dimension (rows along dim 0), got a 0-d tensor");
}

// Product of all dims after the first: the length of one row.
inline int64_t row_size(const Tensor& t) {
  int64_t f = 1;
  for (int64_t d = 1; d < t.dim(); ++d) f *= t.size(d);
  return f;
}

// A new contiguous tensor of `sizes` on like's device, of like's dtype (or `dtype`): what
// torch::stable::new_empty gives, in one C shim call (aoti_torch_empty_strided) instead of a boxed
// dispatcher call that looks "aten::new_empty" up by name: a few microseconds per output, which
// is what a call on a small input costs (benchmarks/RESULTS.md, E = 1e5).
inline Tensor new_contiguous(const Tensor& like, const std::vector<int64_t>& sizes,
                             std::optional<ScalarType> dtype = std::nullopt) {
  std::vector<int64_t> strides(sizes.size(), 1);
  for (int64_t d = int64_t(sizes.size()) - 2; d >= 0; --d) {
    strides[d] = strides[d + 1] * std::max<int64_t>(sizes[d + 1], 1);  // torch's contiguous strides
  }
  int32_t device_type, device_index, target;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_type(like.get(), &device_type));
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_device_index(like.get(), &device_index));
  if (dtype) {
    target = torch::stable::detail::to<int32_t>(torch::stable::detail::from(*dtype));
  } else {
    STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_get_dtype(like.get(), &target));
  }
  AtenTensorHandle out;
  STABLE_TORCH_ERROR_CODE_CHECK(aoti_torch_empty_strided(int64_t(sizes.size()), sizes.data(), strides.data(), target,
                                                         device_type, device_index, &out));
  return Tensor(out);
}

// t's sizes with dim 0 replaced by rows.
inline std::vector<int64_t> with_rows(const Tensor& t, int64_t rows) {
  const auto sizes = t.sizes();
  std::vector<int64_t> out(sizes.begin(), sizes.end());
  out[0] = rows;
  return out;
}

}  // namespace torch_segment_ops
