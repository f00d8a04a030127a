// The ops register themselves (TORCH_LIBRARY) when this library is loaded
// with torch.ops.load_library. This empty module init only exists so the
// file is a valid abi3 extension module; it uses no other CPython API.
#include <Python.h>

PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
