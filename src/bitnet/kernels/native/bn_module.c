/* The CPython face of the kernel library. The hot entry points (ternary matmuls, quantizer, F16 lm_head) are exposed
 * as module functions that take numpy arrays through the buffer protocol and release the GIL while they compute:
 * about ten times less call overhead than ctypes, which matters at ~15 kernel calls per layer and token. Everything
 * else is reached through ctypes (bitnet.kernels.native) in the same shared object. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

int bn_quantize(int profile, const void *x, int is_f64, int64_t N, int64_t K, int8_t *q, float *scales,
                int32_t *sums);
int bn_ternary_matmul(int fmt, const uint8_t *w, int64_t M, int64_t K, float w_scale, int profile, const float *x,
                      int64_t N, int64_t ldx, float *y, int64_t ldy);
int bn_ternary_matmul_q(int fmt, const uint8_t *w, int64_t M, int64_t K, float w_scale, int profile, const int8_t *q,
                        const float *scales, const int32_t *sums, int64_t N, float *y, int64_t ldy);
int bn_f16_matmul(const uint16_t *w, int64_t M, int64_t K, const float *x, int64_t N, int64_t ldx, float *y,
                  int64_t ldy);

#define NBUF 6

typedef struct {
    Py_buffer v[NBUF];
    int n;
} bufs;

static void release(bufs *b) {
    for (int i = 0; i < b->n; i++) PyBuffer_Release(&b->v[i]);
    b->n = 0;
}

/* Borrow a C-contiguous buffer of at least `need` bytes; returns its address or NULL with an exception set. */
static void *take(bufs *b, PyObject *o, Py_ssize_t need, int writable, const char *what) {
    Py_buffer *v = &b->v[b->n];
    if (PyObject_GetBuffer(o, v, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0) return NULL;
    b->n++;
    if (v->len < need) {
        PyErr_Format(PyExc_ValueError, "%s: buffer has %zd bytes, needs %zd", what, v->len, need);
        return NULL;
    }
    return v->buf;
}

static Py_ssize_t row_bytes(int fmt, long long K) {
    return fmt == 0 ? K / 4 : (K / 256) * (fmt == 1 ? 66 : 54);
}

static PyObject *done(bufs *b, int rc) {
    release(b);
    return PyLong_FromLong(rc);
}

static PyObject *py_ternary_matmul_q(PyObject *self, PyObject *args) {
    int fmt, profile;
    long long M, K, N;
    float w_scale;
    PyObject *ow, *oq, *os, *osum, *oy;
    if (!PyArg_ParseTuple(args, "iOLLfiOOOLO", &fmt, &ow, &M, &K, &w_scale, &profile, &oq, &os, &osum, &N, &oy))
        return NULL;
    if (fmt < 0 || fmt > 2 || M < 0 || K <= 0 || N < 0) return PyErr_Format(PyExc_ValueError, "bad arguments");
    bufs b = {.n = 0};
    const Py_ssize_t ns = profile == 1 ? N * (K / 256) : N;
    const void *w = take(&b, ow, row_bytes(fmt, K) * M, 0, "weight");
    const void *q = w ? take(&b, oq, N * K, 0, "q") : NULL;
    const void *s = q ? take(&b, os, ns * 4, 0, "scales") : NULL;
    const void *su = s ? take(&b, osum, ns * 4, 0, "sums") : NULL;
    void *y = su ? take(&b, oy, N * M * 4, 1, "out") : NULL;
    if (!y) {
        release(&b);
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = bn_ternary_matmul_q(fmt, w, M, K, w_scale, profile, q, s, su, N, y, M);
    Py_END_ALLOW_THREADS return done(&b, rc);
}

static PyObject *py_ternary_matmul(PyObject *self, PyObject *args) {
    int fmt, profile;
    long long M, K, N;
    float w_scale;
    PyObject *ow, *ox, *oy;
    if (!PyArg_ParseTuple(args, "iOLLfiOLO", &fmt, &ow, &M, &K, &w_scale, &profile, &ox, &N, &oy)) return NULL;
    if (fmt < 0 || fmt > 2 || M < 0 || K <= 0 || N < 0) return PyErr_Format(PyExc_ValueError, "bad arguments");
    bufs b = {.n = 0};
    const void *w = take(&b, ow, row_bytes(fmt, K) * M, 0, "weight");
    const void *x = w ? take(&b, ox, N * K * 4, 0, "x") : NULL;
    void *y = x ? take(&b, oy, N * M * 4, 1, "out") : NULL;
    if (!y) {
        release(&b);
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = bn_ternary_matmul(fmt, w, M, K, w_scale, profile, x, N, K, y, M);
    Py_END_ALLOW_THREADS return done(&b, rc);
}

static PyObject *py_quantize(PyObject *self, PyObject *args) {
    int profile, is_f64;
    long long N, K;
    PyObject *ox, *oq, *os, *osum;
    if (!PyArg_ParseTuple(args, "iOiLLOOO", &profile, &ox, &is_f64, &N, &K, &oq, &os, &osum)) return NULL;
    if (N < 0 || K <= 0) return PyErr_Format(PyExc_ValueError, "bad arguments");
    bufs b = {.n = 0};
    const Py_ssize_t ns = profile == 1 ? N * (K / 256) : N;
    const void *x = take(&b, ox, N * K * (is_f64 ? 8 : 4), 0, "x");
    void *q = x ? take(&b, oq, N * K, 1, "q") : NULL;
    void *s = q ? take(&b, os, ns * 4, 1, "scales") : NULL;
    void *su = s ? take(&b, osum, ns * 4, 1, "sums") : NULL;
    if (!su) {
        release(&b);
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = bn_quantize(profile, x, is_f64, N, K, q, s, su);
    Py_END_ALLOW_THREADS return done(&b, rc);
}

static PyObject *py_f16_matmul(PyObject *self, PyObject *args) {
    long long M, K, N;
    PyObject *ow, *ox, *oy;
    if (!PyArg_ParseTuple(args, "OLLOLO", &ow, &M, &K, &ox, &N, &oy)) return NULL;
    if (M < 0 || K <= 0 || N < 0) return PyErr_Format(PyExc_ValueError, "bad arguments");
    bufs b = {.n = 0};
    const void *w = take(&b, ow, M * K * 2, 0, "weight");
    const void *x = w ? take(&b, ox, N * K * 4, 0, "x") : NULL;
    void *y = x ? take(&b, oy, N * M * 4, 1, "out") : NULL;
    if (!y) {
        release(&b);
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = bn_f16_matmul(w, M, K, x, N, K, y, M);
    Py_END_ALLOW_THREADS return done(&b, rc);
}

static PyMethodDef bn_methods[] = {
    {"ternary_matmul_q", py_ternary_matmul_q, METH_VARARGS, "matmul on quantized activations; returns rc"},
    {"ternary_matmul", py_ternary_matmul, METH_VARARGS, "fused quantize + matmul on float32; returns rc"},
    {"quantize", py_quantize, METH_VARARGS, "activation quantizer; returns rc"},
    {"f16_matmul", py_f16_matmul, METH_VARARGS, "F16 weight times float32 activations; returns rc"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef bn_module = {PyModuleDef_HEAD_INIT, "_bnkernels",
                                       "bitnet-py native CPU kernels (buffer-protocol fast path; rest via ctypes)",
                                       -1, bn_methods};

PyMODINIT_FUNC PyInit__bnkernels(void) { return PyModule_Create(&bn_module); }
