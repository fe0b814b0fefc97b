/* The CPython face of the kernel library: an empty module so that setuptools can build, install and locate the
 * shared object like any extension. The kernels themselves are called through ctypes (bitnet.kernels.native),
 * which releases the GIL during every call. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static struct PyModuleDef bn_module = {PyModuleDef_HEAD_INIT, "_bnkernels",
                                       "bitnet-py native CPU kernels (used through ctypes)", -1, NULL};

PyMODINIT_FUNC PyInit__bnkernels(void) { return PyModule_Create(&bn_module); }
