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

void bn_rmsnorm(const float *x, const float *w, int64_t N, int64_t K, float eps, float *y);
void bn_rmsnorm_f64(const double *x, const float *w, int64_t N, int64_t K, double eps, double *y);
void bn_rope_neox(float *x, int64_t n_tok, int64_t n_heads, int64_t head_dim, int64_t ld, const int32_t *pos,
                  float base);
void bn_rope_neox_f64(double *x, int64_t n_tok, int64_t n_heads, int64_t head_dim, int64_t ld, const int32_t *pos,
                      double base);
int bn_attention(const float *q, int64_t T, int64_t ldq, const float *k, const float *v, int64_t ldkv, int64_t n_past,
                 int64_t n_heads, int64_t n_kv, int64_t head_dim, float scale, float *out, int64_t ldo);
int bn_attention_f64(const double *q, int64_t T, int64_t ldq, const float *k, const float *v, int64_t ldkv,
                     int64_t n_past, int64_t n_heads, int64_t n_kv, int64_t head_dim, double scale, double *out,
                     int64_t ldo);

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

/* rmsnorm(x, w, N, K, eps, y, is_f64) */
static PyObject *py_rmsnorm(PyObject *self, PyObject *args) {
    long long N, K;
    double eps;
    int f64;
    PyObject *ox, *ow, *oy;
    if (!PyArg_ParseTuple(args, "OOLLdOp", &ox, &ow, &N, &K, &eps, &oy, &f64)) return NULL;
    if (N < 0 || K <= 0) return PyErr_Format(PyExc_ValueError, "bad arguments");
    const Py_ssize_t es = f64 ? 8 : 4;
    bufs b = {.n = 0};
    const void *x = take(&b, ox, N * K * es, 0, "x");
    const void *w = x ? take(&b, ow, K * 4, 0, "weight") : NULL;
    void *y = w ? take(&b, oy, N * K * es, 1, "out") : NULL;
    if (!y) {
        release(&b);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS if (f64) bn_rmsnorm_f64(x, w, N, K, eps, y);
    else bn_rmsnorm(x, w, N, K, (float)eps, y);
    Py_END_ALLOW_THREADS return done(&b, 0);
}

/* rope(x, T, H, D, pos, theta, is_f64): in place on a [T, H, D] buffer */
static PyObject *py_rope(PyObject *self, PyObject *args) {
    long long T, H, D;
    double theta;
    int f64;
    PyObject *ox, *op;
    if (!PyArg_ParseTuple(args, "OLLLOdp", &ox, &T, &H, &D, &op, &theta, &f64)) return NULL;
    if (T < 0 || H <= 0 || D <= 0 || D % 2 || D > 1024) return PyErr_Format(PyExc_ValueError, "bad arguments");
    bufs b = {.n = 0};
    void *x = take(&b, ox, T * H * D * (f64 ? 8 : 4), 1, "x");
    const void *pos = x ? take(&b, op, T * 4, 0, "positions") : NULL;
    if (!pos) {
        release(&b);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS if (f64) bn_rope_neox_f64(x, T, H, D, H * D, pos, theta);
    else bn_rope_neox(x, T, H, D, H * D, pos, (float)theta);
    Py_END_ALLOW_THREADS return done(&b, 0);
}

/* attention(q, T, H, D, k, v, S, Hkv, n_past, scale, out, is_f64); k/v float32 [S, Hkv, D] */
static PyObject *py_attention(PyObject *self, PyObject *args) {
    long long T, H, D, S, Hkv, n_past;
    double scale;
    int f64;
    PyObject *oq, *ok, *ov, *oo;
    if (!PyArg_ParseTuple(args, "OLLLOOLLLdOp", &oq, &T, &H, &D, &ok, &ov, &S, &Hkv, &n_past, &scale, &oo, &f64))
        return NULL;
    if (T < 0 || H <= 0 || D <= 0 || Hkv <= 0 || n_past < 0 || S < n_past + T)
        return PyErr_Format(PyExc_ValueError, "bad arguments");
    const Py_ssize_t es = f64 ? 8 : 4;
    bufs b = {.n = 0};
    const void *q = take(&b, oq, T * H * D * es, 0, "q");
    const void *k = q ? take(&b, ok, S * Hkv * D * 4, 0, "k") : NULL;
    const void *v = k ? take(&b, ov, S * Hkv * D * 4, 0, "v") : NULL;
    void *o = v ? take(&b, oo, T * H * D * es, 1, "out") : NULL;
    if (!o) {
        release(&b);
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS if (f64) rc = bn_attention_f64(q, T, H * D, k, v, Hkv * D, n_past, H, Hkv, D, scale, o, H * D);
    else rc = bn_attention(q, T, H * D, k, v, Hkv * D, n_past, H, Hkv, D, (float)scale, o, H * D);
    Py_END_ALLOW_THREADS return done(&b, rc);
}

static PyMethodDef bn_methods[] = {
    {"rmsnorm", py_rmsnorm, METH_VARARGS, "RMSNorm times weight, float32 or float64"},
    {"rope", py_rope, METH_VARARGS, "NEOX RoPE in place, float32 or float64"},
    {"attention", py_attention, METH_VARARGS, "causal GQA attention over an f32 cache; returns rc"},
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
