// torch's current CUDA stream, for the CUDA kernels (plain C++: no CUDA headers needed).
//
// The C shim function that returns it lives in libtorch_cuda, which torch has
// already loaded when a CUDA tensor exists; looking it up there (rather than
// linking libtorch_cuda) keeps the library free of a build-time CUDA torch.
#include "common.h"

#include <dlfcn.h>

namespace torch_segment_ops::cuda {

void* current_stream_handle(int32_t device) {
  using GetStream = int32_t (*)(int32_t, void**);
  static const GetStream get_stream = [] {
    void* lib = dlopen("libtorch_cuda.so", RTLD_LAZY | RTLD_NOLOAD);
    return lib ? reinterpret_cast<GetStream>(dlsym(lib, "aoti_torch_get_current_cuda_stream")) : nullptr;
  }();
  STD_TORCH_CHECK(get_stream, "torch_segment_ops: torch's CUDA library (libtorch_cuda.so) is not loaded, or it has "
                  "no aoti_torch_get_current_cuda_stream");
  void* stream = nullptr;
  STD_TORCH_CHECK(get_stream(device, &stream) == 0, "torch_segment_ops: could not get the current CUDA stream");
  return stream;
}

}  // namespace torch_segment_ops::cuda
