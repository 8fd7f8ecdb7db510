/*
 * Compiled twins of hotpixel_shm.kernels_numpy: plain loops over buffers.
 *
 * Each function takes its arrays through the buffer protocol, trusts the
 * Python front (hotpixel_shm._kernels_c) to have checked their types and
 * lengths, and releases the GIL while it loops.  The arithmetic is written
 * operation by operation in the order the numpy kernels use, with the
 * constants they computed passed in, so both paths give the same bits
 * (build with floating-point contraction off: no fused multiply-add).
 *
 *   update(tier, sample_bytes, fields, images, n, start, consts)
 *       fold K = len(images) images into one accumulator's fields
 *   reduce(mode, sample_bytes, parts, counts, fracs, crosses, start, stop,
 *          out_mean, out_var, total[, index])
 *       merge the parts' fields over [start, stop), or at the flat indices
 *       of an int64 index, and finish mean and variance (the fused merge +
 *       finalise; a gather reads the fields in place)
 *   residual(images, sample_bytes, sums, ycc, reach, consts)
 *       add K frames' temporal residuals to their float32 sums and sums of
 *       squares (and, for RGB photos, the level sums) in one pass
 *       (hotpixel_shm.residual)
 *   candidates(mean_rows, var_rows, top, h, rows, width, buffers, thresholds)
 *       detection's cheap pass over one band of one channel: the padded
 *       float32 band of the mean and of the std, their box residuals and
 *       the candidate mask (hotpixel_shm.detect)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The hot loops are compiled several times where the compiler and the C
 * library allow it (GCC or clang on x86-64 with glibc, whose ifunc picks
 * one when the module loads): for AVX-512 (x86-64-v4, GCC 12 or later),
 * for AVX2 and for the baseline.  Every operation is an IEEE one, without
 * contraction or reassociation, so all give the same bits; the wider
 * instruction sets only do more of them at once (AVX-512 converts 64-bit
 * integers to doubles in vectors: twice as fast for the float tiers).
 * -DHPS_NO_CLONES builds the baseline alone. */
#if defined(__x86_64__) && defined(__GLIBC__) && defined(__has_attribute) && !defined(HPS_NO_CLONES)
#if __has_attribute(target_clones) && __has_attribute(flatten)
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define HAVE_V4_CLONE 1
#define HOT_LOOP __attribute__((target_clones("arch=x86-64-v4", "avx2", "default"), flatten))
#else
#define HOT_LOOP __attribute__((target_clones("avx2", "default"), flatten))
#endif
#define HAVE_CLONES 1
#endif
#endif
#ifndef HOT_LOOP
#define HOT_LOOP
#endif

#define MAX_BATCH 16
/* chroma rows per band of the RGB residual loop (residual_frames; residual.py's
 * _COMPILED_BAND counts its scratch) */
#define RES_BAND 32
#define MAX_PARTS 256
#define MAX_FIELDS 3

enum { T_EXACT = 0, T_FLOAT64 = 1, T_FLOAT32 = 2, T_FLOAT16 = 3 };

#define G1 0x9E3779B9u
#define G2 0x7F4A7C15u
#define VAR_SHIFT 11
#define VAR_BASE (0x3E800000u >> VAR_SHIFT) /* float32 0.25 >> 11 */

typedef struct {
    Py_buffer views[MAX_PARTS * MAX_FIELDS + MAX_BATCH + 2];
    int count;
} Buffers;

static void release_all(Buffers *b)
{
    for (int i = 0; i < b->count; i++)
        PyBuffer_Release(&b->views[i]);
    b->count = 0;
}

/* The first n items of a tuple as floats; 0 with a Python error set when
 * one is not a number. */
static int floats_of(PyObject *tuple, float *out, int n)
{
    for (int i = 0; i < n; i++) {
        out[i] = (float)PyFloat_AsDouble(PyTuple_GET_ITEM(tuple, i));
        if (PyErr_Occurred())
            return 0;
    }
    return 1;
}

/* Acquire a C-contiguous buffer of obj; writable when asked. */
static void *grab(Buffers *b, PyObject *obj, int writable, Py_ssize_t *len)
{
    if (b->count >= (int)(sizeof(b->views) / sizeof(b->views[0]))) {
        PyErr_SetString(PyExc_ValueError, "too many buffers");
        return NULL;
    }
    Py_buffer *v = &b->views[b->count];
    if (PyObject_GetBuffer(obj, v, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    b->count++;
    if (len)
        *len = v->len;
    return v->buf;
}

static inline float bits_to_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t float_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* ------------------------------------------------------------------ update */

/* Values per block: the batch's sums of a block stay in L1 while the
 * accumulator's block is updated, and every loop is simple enough for the
 * compiler to vectorise. */
#define BLK 2048

/* The batch's integer sums S = sum x and Q = sum x*x over [s, s + L). */
static void sums_u8(const void **img, int K, Py_ssize_t s, Py_ssize_t L, uint32_t *S, uint32_t *Q)
{
    const uint8_t *x0 = (const uint8_t *)img[0] + s;
    for (Py_ssize_t i = 0; i < L; i++) {
        uint32_t v = x0[i];
        S[i] = v;
        Q[i] = v * v;
    }
    for (int j = 1; j < K; j++) {
        const uint8_t *x = (const uint8_t *)img[j] + s;
        for (Py_ssize_t i = 0; i < L; i++) {
            uint32_t v = x[i];
            S[i] += v;
            Q[i] += v * v;
        }
    }
}

static void sums_u16(const void **img, int K, Py_ssize_t s, Py_ssize_t L, uint32_t *S, uint64_t *Q)
{
    const uint16_t *x0 = (const uint16_t *)img[0] + s;
    for (Py_ssize_t i = 0; i < L; i++) {
        uint64_t v = x0[i];
        S[i] = (uint32_t)v;
        Q[i] = v * v;
    }
    for (int j = 1; j < K; j++) {
        const uint16_t *x = (const uint16_t *)img[j] + s;
        for (Py_ssize_t i = 0; i < L; i++) {
            uint64_t v = x[i];
            S[i] += (uint32_t)v;
            Q[i] += v * v;
        }
    }
}

/* exact tier: integer sum and sum of squares */
#define EXACT_LOOP(SQT, QARR)                                                      \
    do {                                                                           \
        uint32_t *tot = (uint32_t *)f[0] + s;                                      \
        SQT *sq = (SQT *)f[1] + s;                                                 \
        for (Py_ssize_t i = 0; i < L; i++) {                                       \
            tot[i] += S[i];                                                        \
            sq[i] += QARR[i];                                                      \
        }                                                                          \
    } while (0)

/* float64 and float32 tiers: an exact integer sum and a float M2.  K == 1:
 * Welford's increment q**2 / (n k) with q = k x - S_k; K > 1: the batch
 * joins by Chan's formula, (K Q - S**2) / K + q**2 / (n K k) with
 * q = n S - K S_a (see kernels_numpy._update_float). */
#define FLOAT_LOOP(SUMT, M2T, QARR)                                                \
    do {                                                                           \
        SUMT *tot = (SUMT *)f[0] + s;                                              \
        M2T *m2 = (M2T *)f[1] + s;                                                 \
        if (K == 1) {                                                              \
            for (Py_ssize_t i = 0; i < L; i++)                                     \
                tot[i] = (SUMT)(tot[i] + S[i]);                                    \
            if (n == 0)                                                            \
                break;                                                             \
            for (Py_ssize_t i = 0; i < L; i++) {                                   \
                double q = (double)S[i] * k1;                                      \
                q = q - (double)tot[i];                                            \
                q = q * q;                                                         \
                q = q * c_q;                                                       \
                m2[i] = m2[i] + (M2T)q;                                            \
            }                                                                      \
        } else {                                                                   \
            for (Py_ssize_t i = 0; i < L; i++) {                                   \
                double sa = (double)tot[i];                                        \
                tot[i] = (SUMT)(tot[i] + S[i]);                                    \
                double r = sa * fk;                                                \
                double q = (double)S[i] * fn;                                      \
                q = q - r;                                                         \
                r = (double)S[i];                                                  \
                r = r * r;                                                         \
                double w = (double)QARR[i] * fk;                                   \
                r = w - r;                                                         \
                r = r * inv_k;                                                     \
                q = q * q;                                                         \
                q = q * c_q;                                                       \
                q = r + q;                                                         \
                m2[i] = m2[i] + (M2T)q;                                            \
            }                                                                      \
        }                                                                          \
    } while (0)

/* float16 tier: 24-bit fixed-point mean, 16-bit float of var + 1/4, both
 * rounded stochastically with the lattice sequence i*G2 + k*G1 (see
 * kernels_numpy._update_half) */
static void half_block(void **f, int K, Py_ssize_t s, Py_ssize_t L, unsigned long long start,
                       const uint32_t *S, const uint32_t *Q, const double *c)
{
    uint16_t *lo = (uint16_t *)f[0] + s;
    uint8_t *hi = (uint8_t *)f[1] + s;
    uint16_t *vc = (uint16_t *)f[2] + s;
    const float c_mean = (float)c[0], c_old = (float)c[1], c_d = (float)c[2], c_w = (float)c[3];
    const uint32_t k_off = (uint32_t)c[4];
    const float u24 = 5.9604644775390625e-08f; /* 2**-24 */
    const uint32_t base = (uint32_t)(start + (unsigned long long)s);
    for (Py_ssize_t i = 0; i < L; i++) {
        uint32_t M = (uint32_t)lo[i] | ((uint32_t)hi[i] << 16);
        int32_t D = (int32_t)(S[i] << 16) - (int32_t)M * K;
        float df = (float)D;
        uint32_t w = (base + (uint32_t)i) * G2 + k_off;
        float g = (float)(w >> 8);
        g = g * u24;
        float fm = df * c_mean;
        fm = fm + g;
        fm = floorf(fm);
        M = (uint32_t)((int32_t)M + (int32_t)fm);
        lo[i] = (uint16_t)M;
        hi[i] = (uint8_t)(M >> 16);
        float y = bits_to_float(((uint32_t)vc[i] + VAR_BASE) << VAR_SHIFT);
        g = y - 0.25f;
        g = g * c_old;
        float fv = df * c_d;
        fv = fv * df;
        g = g + fv;
        if (K > 1) {
            int32_t W = (int32_t)Q[i] * K - (int32_t)S[i] * (int32_t)S[i];
            fv = (float)W;
            fv = fv * c_w;
            g = g + fv;
        }
        g = g + 0.25f;
        uint32_t gb = float_to_bits(g);
        gb = gb + (w & ((1u << VAR_SHIFT) - 1));
        gb = gb >> VAR_SHIFT;
        gb = gb - VAR_BASE;
        vc[i] = (uint16_t)gb;
    }
}

HOT_LOOP static void update_all(int tier, int sb, void **f, const void **img, int K, Py_ssize_t len,
                       long long n, unsigned long long start, const double *c)
{
    uint32_t S[BLK], Q32[BLK];
    uint64_t Q64[BLK];
    const double fn = c[0], fk = c[1], c_q = c[2], inv_k = c[3];
    const double k1 = (double)(n + 1);
    if (tier == T_FLOAT16 && n == 0 && K == 1) {
        /* the first image: exact, and the general step's D / k + U would round */
        memcpy(f[1], img[0], (size_t)len);
        memset(f[0], 0, (size_t)len * 2);
        memset(f[2], 0, (size_t)len * 2);
        return;
    }
    for (Py_ssize_t s = 0; s < len; s += BLK) {
        Py_ssize_t L = len - s < BLK ? len - s : BLK;
        if (sb == 1)
            sums_u8(img, K, s, L, S, Q32);
        else
            sums_u16(img, K, s, L, S, Q64);
        switch (tier) {
        case T_EXACT:
            if (sb == 1)
                EXACT_LOOP(uint32_t, Q32);
            else
                EXACT_LOOP(uint64_t, Q64);
            break;
        case T_FLOAT64:
            if (sb == 1)
                FLOAT_LOOP(uint64_t, double, Q32);
            else
                FLOAT_LOOP(uint64_t, double, Q64);
            break;
        case T_FLOAT32:
            if (sb == 1)
                FLOAT_LOOP(uint32_t, float, Q32);
            else
                FLOAT_LOOP(uint32_t, float, Q64);
            break;
        case T_FLOAT16:
            half_block(f, K, s, L, start, S, Q32, c);
            break;
        }
    }
}

static PyObject *py_update(PyObject *self, PyObject *args)
{
    int tier, sb;
    PyObject *fields, *images, *consts;
    long long n;
    unsigned long long start;
    if (!PyArg_ParseTuple(args, "iiO!O!LKO!", &tier, &sb, &PyTuple_Type, &fields, &PyTuple_Type,
                          &images, &n, &start, &PyTuple_Type, &consts))
        return NULL;
    Py_ssize_t nf = PyTuple_GET_SIZE(fields), K = PyTuple_GET_SIZE(images);
    Py_ssize_t nc = PyTuple_GET_SIZE(consts);
    if (nf < 2 || nf > MAX_FIELDS || K < 1 || K > MAX_BATCH || nc > 8 || (sb != 1 && sb != 2)) {
        PyErr_SetString(PyExc_ValueError, "bad update arguments");
        return NULL;
    }
    double c[8] = {0};
    for (Py_ssize_t i = 0; i < nc; i++) {
        c[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(consts, i));
        if (c[i] == -1.0 && PyErr_Occurred())
            return NULL;
    }
    Buffers *b = PyMem_Calloc(1, sizeof(Buffers));
    if (!b)
        return PyErr_NoMemory();
    void *f[MAX_FIELDS];
    const void *img[MAX_BATCH];
    Py_ssize_t len = -1, l;
    for (Py_ssize_t i = 0; i < nf; i++)
        if (!(f[i] = grab(b, PyTuple_GET_ITEM(fields, i), 1, NULL)))
            goto fail;
    for (Py_ssize_t j = 0; j < K; j++) {
        if (!(img[j] = grab(b, PyTuple_GET_ITEM(images, j), 0, &l)))
            goto fail;
        l /= sb;
        if (len >= 0 && l != len) {
            PyErr_SetString(PyExc_ValueError, "images of different lengths");
            goto fail;
        }
        len = l;
    }
    Py_BEGIN_ALLOW_THREADS
    update_all(tier, sb, f, img, (int)K, len, n, start, c);
    Py_END_ALLOW_THREADS
    release_all(b);
    PyMem_Free(b);
    Py_RETURN_NONE;
fail:
    release_all(b);
    PyMem_Free(b);
    return NULL;
}

/* ------------------------------------------------------------------ reduce */

/* The chunk step of one part at value i: float64 mean and M2 (as
 * kernels_numpy.partial computes them, operation by operation). */
static inline void part_at(int mode, void **f, double n, Py_ssize_t i, double *mean, double *m2)
{
    switch (mode) {
    case T_FLOAT64:
        *mean = (double)((uint64_t *)f[0])[i] / n;
        *m2 = ((double *)f[1])[i];
        break;
    case T_FLOAT32:
        *mean = (double)((uint32_t *)f[0])[i] / n;
        *m2 = (double)((float *)f[1])[i];
        break;
    default: { /* T_FLOAT16 */
        float y = bits_to_float(((uint32_t)((uint16_t *)f[2])[i] + VAR_BASE) << VAR_SHIFT);
        double v = (double)y;
        v = v - 0.25;
        *m2 = v * n;
        double m = (double)((uint8_t *)f[1])[i];
        m = m * 65536.0;
        m = m + (double)((uint16_t *)f[0])[i];
        *mean = m * (1.0 / 65536.0);
    }
    }
}

/* The fused merge and finish of values [start, start + L), or of the values
 * at idx[0 .. L) (see py_reduce). */
HOT_LOOP static void reduce_loop(int mode, int sb, void **f, int np_, const double *cn,
                                 const int64_t *idx, Py_ssize_t start, Py_ssize_t L,
                                 long long total, void *om, void *ov, int m64, int v64)
{
    const double *fr = cn + np_, *cr = cn + 2 * np_;
    const double dt = (double)total, inv_total = 1.0 / (double)total;
    const double tt = (double)total * (double)total;
    for (Py_ssize_t o = 0; o < L; o++) {
        const Py_ssize_t i = idx ? (Py_ssize_t)idx[o] : start + o;
        double mean, var;
        if (mode == T_EXACT) {
            /* the workers' integer sums added exactly, finished once */
            uint64_t S = 0, Q = 0;
            for (Py_ssize_t p = 0; p < np_; p++) {
                S += ((uint32_t *)f[p * MAX_FIELDS])[i];
                Q += sb == 1 ? (uint64_t)((uint32_t *)f[p * MAX_FIELDS + 1])[i]
                             : ((uint64_t *)f[p * MAX_FIELDS + 1])[i];
            }
            mean = (double)S / dt;
            Q = Q * (uint64_t)total - S * S;
            var = (double)Q / tt;
        } else {
            double M, M2, pm, pq;
            part_at(mode, f, cn[0], i, &M, &M2);
            for (Py_ssize_t p = 1; p < np_; p++) {
                part_at(mode, f + p * MAX_FIELDS, cn[p], i, &pm, &pq);
                double d = pm - M;               /* chan_step */
                M = M + d * fr[p];
                M2 = M2 + pq;
                d = d * d;
                d = d * cr[p];
                M2 = M2 + d;
            }
            mean = M;
            var = M2 * inv_total;
        }
        if (m64)
            ((double *)om)[o] = mean;
        else
            ((float *)om)[o] = (float)mean;
        if (v64)
            ((double *)ov)[o] = var;
        else
            ((float *)ov)[o] = (float)var;
    }
}

/* Values per block of the exact tier's loop over three or more parts: its
 * sums and results (4 arrays of 8 bytes) stay in L1 between its steps. */
#define RBLK 512

/* The exact tier's finish of one or two parts' sums (sum as uint32, sum of
 * squares as QT) over [s, s + n) straight into outputs of types MT and VT,
 * one loop the compiler vectorises.  The sum of the two parts' sums stays
 * below 2**32 (peak * total < 2**32: see py_reduce). */
#define EXACT_FINISH(NAME, QT, MT, VT)                                                    \
    static inline void NAME(void **f, int np_, Py_ssize_t s, Py_ssize_t n, double dt,     \
                            double tt, uint64_t ut, void *om, void *ov)                   \
    {                                                                                     \
        const uint32_t *restrict s0 = (const uint32_t *)f[0] + s;                         \
        const QT *restrict q0 = (const QT *)f[1] + s;                                     \
        MT *restrict mo = (MT *)om;                                                       \
        VT *restrict vo = (VT *)ov;                                                       \
        if (np_ == 1) {                                                                   \
            for (Py_ssize_t i = 0; i < n; i++) {                                          \
                const uint64_t si = s0[i];                                                \
                mo[i] = (MT)((double)si / dt);                                            \
                vo[i] = (VT)((double)((uint64_t)q0[i] * ut - si * si) / tt);              \
            }                                                                             \
        } else {                                                                          \
            const uint32_t *restrict s1 = (const uint32_t *)f[MAX_FIELDS] + s;            \
            const QT *restrict q1 = (const QT *)f[MAX_FIELDS + 1] + s;                    \
            for (Py_ssize_t i = 0; i < n; i++) {                                          \
                const uint64_t si = (uint32_t)(s0[i] + s1[i]);                            \
                const uint64_t qi = (uint64_t)q0[i] + q1[i];                              \
                mo[i] = (MT)((double)si / dt);                                            \
                vo[i] = (VT)((double)(qi * ut - si * si) / tt);                           \
            }                                                                             \
        }                                                                                 \
    }
EXACT_FINISH(exact8_dd, uint32_t, double, double)
EXACT_FINISH(exact8_df, uint32_t, double, float)
EXACT_FINISH(exact8_fd, uint32_t, float, double)
EXACT_FINISH(exact8_ff, uint32_t, float, float)
EXACT_FINISH(exact16_dd, uint64_t, double, double)
EXACT_FINISH(exact16_df, uint64_t, double, float)
EXACT_FINISH(exact16_fd, uint64_t, float, double)
EXACT_FINISH(exact16_ff, uint64_t, float, float)

/* The exact tier over a contiguous range, the case of every band finished
 * for detection and the line test: reduce_loop's arithmetic, value by
 * value (the same bits), in loops the compiler vectorises.  One or two
 * parts in one loop; more parts' sums are added into a block first.  The
 * outputs overlap no part's field (see py_reduce). */
HOT_LOOP static void reduce_exact_range(int sb, void **f, int np_, Py_ssize_t start, Py_ssize_t L,
                                        long long total, void *om, void *ov, int m64, int v64)
{
    const double dt = (double)total, tt = (double)total * (double)total;
    const uint64_t ut = (uint64_t)total;
    if (np_ <= 2) {
        const int k = (sb == 1 ? 0 : 4) + (m64 ? 0 : 2) + (v64 ? 0 : 1);
        switch (k) {
        case 0: exact8_dd(f, np_, start, L, dt, tt, ut, om, ov); break;
        case 1: exact8_df(f, np_, start, L, dt, tt, ut, om, ov); break;
        case 2: exact8_fd(f, np_, start, L, dt, tt, ut, om, ov); break;
        case 3: exact8_ff(f, np_, start, L, dt, tt, ut, om, ov); break;
        case 4: exact16_dd(f, np_, start, L, dt, tt, ut, om, ov); break;
        case 5: exact16_df(f, np_, start, L, dt, tt, ut, om, ov); break;
        case 6: exact16_fd(f, np_, start, L, dt, tt, ut, om, ov); break;
        default: exact16_ff(f, np_, start, L, dt, tt, ut, om, ov);
        }
        return;
    }
    uint32_t S[RBLK];
    uint64_t Q[RBLK];
    for (Py_ssize_t b = 0; b < L; b += RBLK) {
        const Py_ssize_t n = L - b < RBLK ? L - b : RBLK, s = start + b;
        memset(S, 0, sizeof S);
        memset(Q, 0, sizeof Q);
        for (int p = 0; p < np_; p++) {
            const uint32_t *sp = (const uint32_t *)f[p * MAX_FIELDS] + s;
            for (Py_ssize_t i = 0; i < n; i++)
                S[i] += sp[i];
            if (sb == 1) {
                const uint32_t *qp = (const uint32_t *)f[p * MAX_FIELDS + 1] + s;
                for (Py_ssize_t i = 0; i < n; i++)
                    Q[i] += qp[i];
            } else {
                const uint64_t *qp = (const uint64_t *)f[p * MAX_FIELDS + 1] + s;
                for (Py_ssize_t i = 0; i < n; i++)
                    Q[i] += qp[i];
            }
        }
        /* the block's sums as one part of 16-bit layout */
        void *g[2] = {S, Q};
        switch ((m64 ? 0 : 2) + (v64 ? 0 : 1)) {
        case 0: exact16_dd(g, 1, 0, n, dt, tt, ut, (double *)om + b, (double *)ov + b); break;
        case 1: exact16_df(g, 1, 0, n, dt, tt, ut, (double *)om + b, (float *)ov + b); break;
        case 2: exact16_fd(g, 1, 0, n, dt, tt, ut, (float *)om + b, (double *)ov + b); break;
        default: exact16_ff(g, 1, 0, n, dt, tt, ut, (float *)om + b, (float *)ov + b);
        }
    }
}

/* Whether [a, a + la) and [b, b + lb) share a byte. */
static int overlaps(const void *a, Py_ssize_t la, const void *b, Py_ssize_t lb)
{
    const char *x = a, *y = b;
    return la > 0 && lb > 0 && x < y + lb && y < x + la;
}

static PyObject *py_reduce(PyObject *self, PyObject *args)
{
    int mode, sb;
    PyObject *parts, *counts, *fracs, *crosses, *out_m, *out_v, *index = Py_None;
    Py_ssize_t start, stop;
    long long total;
    if (!PyArg_ParseTuple(args, "iiO!O!O!O!nnOOL|O", &mode, &sb, &PyTuple_Type, &parts,
                          &PyTuple_Type, &counts, &PyTuple_Type, &fracs, &PyTuple_Type, &crosses,
                          &start, &stop, &out_m, &out_v, &total, &index))
        return NULL;
    Py_ssize_t np_ = PyTuple_GET_SIZE(parts);
    if (np_ < 1 || np_ > MAX_PARTS || PyTuple_GET_SIZE(counts) != np_ ||
        PyTuple_GET_SIZE(fracs) != np_ || PyTuple_GET_SIZE(crosses) != np_ || stop < start) {
        PyErr_SetString(PyExc_ValueError, "bad reduce arguments");
        return NULL;
    }
    Buffers *b = PyMem_Calloc(1, sizeof(Buffers));
    double *cn = PyMem_Calloc(3 * (size_t)np_, sizeof(double));
    void **f = PyMem_Calloc((size_t)np_ * MAX_FIELDS, sizeof(void *));
    if (!b || !cn || !f) {
        PyMem_Free(b);
        PyMem_Free(cn);
        PyMem_Free(f);
        return PyErr_NoMemory();
    }
    double *fr = cn + np_, *cr = cn + 2 * np_;
    Py_ssize_t lm, lv, size = -1;
    void *om, *ov;
    const int64_t *idx = NULL;
    for (Py_ssize_t p = 0; p < np_; p++) {
        PyObject *pf = PyTuple_GET_ITEM(parts, p);
        if (!PyTuple_Check(pf) || PyTuple_GET_SIZE(pf) > MAX_FIELDS) {
            PyErr_SetString(PyExc_ValueError, "bad part");
            goto fail;
        }
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(pf); k++) {
            Py_ssize_t nb;
            if (!(f[p * MAX_FIELDS + k] = grab(b, PyTuple_GET_ITEM(pf, k), 0, &nb)))
                goto fail;
            if (k == 0) { /* values in the part: its first field's length */
                Py_ssize_t v = nb / (mode == T_FLOAT64 ? 8 : mode == T_FLOAT16 ? 2 : 4);
                size = size < 0 || v < size ? v : size;
            }
        }
        cn[p] = PyFloat_AsDouble(PyTuple_GET_ITEM(counts, p));
        fr[p] = PyFloat_AsDouble(PyTuple_GET_ITEM(fracs, p));
        cr[p] = PyFloat_AsDouble(PyTuple_GET_ITEM(crosses, p));
        if (PyErr_Occurred())
            goto fail;
    }
    const int inputs = b->count; /* the parts' views come first */
    if (!(om = grab(b, out_m, 1, &lm)) || !(ov = grab(b, out_v, 1, &lv)))
        goto fail;
    if (index != Py_None) {
        /* the values at these flat indices (int64), in their order */
        Py_ssize_t li;
        if (!(idx = grab(b, index, 0, &li)))
            goto fail;
        if (start != 0 || stop != li / 8) {
            PyErr_SetString(PyExc_ValueError, "with an index, the range is [0, len(index))");
            goto fail;
        }
        for (Py_ssize_t o = 0; o < stop; o++)
            if (idx[o] < 0 || idx[o] >= size) {
                PyErr_SetString(PyExc_IndexError, "index out of the parts' range");
                goto fail;
            }
    } else if (start < 0 || stop > size) {
        PyErr_SetString(PyExc_ValueError, "range out of the parts' values");
        goto fail;
    }
    Py_ssize_t L = stop - start;
    int m64 = lm == 8 * L, v64 = lv == 8 * L;
    if ((!m64 && lm != 4 * L) || (!v64 && lv != 4 * L)) {
        PyErr_SetString(PyExc_ValueError, "output buffers of the wrong length");
        goto fail;
    }
    /* the exact tier's contiguous loop when the sums stay within its
     * uint32 (peak * total < 2**32: the exact merge's own condition) and no
     * output overlaps an input (an in-place merge is another tier's, see
     * tiers.finishes_in_place) */
    int fast = mode == T_EXACT && !idx && total > 0 &&
               (unsigned long long)total * (sb == 1 ? 255u : 65535u) < 4294967296ull &&
               !overlaps(om, lm, ov, lv);
    for (int k = 0; fast && k < inputs; k++)
        if (overlaps(b->views[k].buf, b->views[k].len, om, lm) ||
            overlaps(b->views[k].buf, b->views[k].len, ov, lv))
            fast = 0;
    Py_BEGIN_ALLOW_THREADS
    if (fast)
        reduce_exact_range(sb, f, (int)np_, start, L, total, om, ov, m64, v64);
    else
        reduce_loop(mode, sb, f, (int)np_, cn, idx, start, L, total, om, ov, m64, v64);
    Py_END_ALLOW_THREADS
    release_all(b);
    PyMem_Free(b);
    PyMem_Free(cn);
    PyMem_Free(f);
    return PyLong_FromLongLong(total);
fail:
    release_all(b);
    PyMem_Free(b);
    PyMem_Free(cn);
    PyMem_Free(f);
    return NULL;
}

/* ---------------------------------------------------------------- residual */

/* The temporal residual of one frame (see hotpixel_shm.residual): every
 * element of a residual plane minus the median of its four same-colour
 * neighbours, added to the plane's float32 sums, its square to the sums of
 * squares.  One pass over the frame: the plane rows a residual row needs
 * are converted once into a small ring of rows, never a whole plane. */

typedef struct {
    const char *base;
    Py_ssize_t sy, sx, sc; /* byte strides of rows, pixels, channels */
    int sb;                /* bytes per sample: 1 or 2 */
    Py_ssize_t h, w, c;
    float ycc[8];          /* Y's three weights, the Cb and Cr scales, their inverses,
                              the clipping level (residual._KERNEL_CONSTS + clip) */
} Frame;

/* A ring of converted rows: row i lives in slot i % slots (tag = i). */
typedef struct {
    int slots;
    Py_ssize_t width; /* floats per slot */
    float *data;
    Py_ssize_t *tag;
} Ring;

/* residual._reflect: beyond an edge -> reach inside it, then clipped */
static inline Py_ssize_t reflect(Py_ssize_t i, Py_ssize_t size, Py_ssize_t r)
{
    if (i < 0)
        i += 2 * r;
    if (i >= size)
        i -= 2 * r;
    if (i < 0)
        i = 0;
    if (i > size - 1)
        i = size - 1;
    return i;
}

/* Every channel of pixel row y as float32 rows, one after another. */
static void fill_channels(const Frame *f, Py_ssize_t y, float *dst)
{
    for (Py_ssize_t k = 0; k < f->c; k++) {
        const char *p = f->base + y * f->sy + k * f->sc;
        float *d = dst + k * f->w;
        if (f->sb == 1)
            for (Py_ssize_t x = 0; x < f->w; x++)
                d[x] = (float)*(const uint8_t *)(p + x * f->sx);
        else
            for (Py_ssize_t x = 0; x < f->w; x++)
                d[x] = (float)*(const uint16_t *)(p + x * f->sx);
    }
}

/* One pixel in JPEG's colour space (residual._Source's operations, in its
 * order): Y, then Cb and Cr as scaled differences from it. */
static inline void ycc_pixel(float r, float g, float b, const float *c, float *Y, float *Cb,
                             float *Cr)
{
    float v = r * c[0], t = g * c[1];
    v = v + t;
    t = b * c[2];
    v = v + t;
    *Y = v;
    t = b - v;
    *Cb = t * c[3];
    t = r - v;
    *Cr = t * c[4];
}

/* Every pixel of a row of samples of type T, at any strides. */
#define YCC_LOOP(T)                                                                \
    for (Py_ssize_t x = 0; x < w; x++) {                                           \
        const char *q = p + x * sx;                                                \
        ycc_pixel((float)*(const T *)q, (float)*(const T *)(q + sc),               \
                  (float)*(const T *)(q + 2 * sc), f->ycc, Y + x, Cb + x, Cr + x); \
    }

/* Pixel row y in JPEG's colour space: Y, Cb, Cr rows (residual._Source). */
static void fill_ycc(const Frame *f, Py_ssize_t y, float *dst)
{
    const Py_ssize_t w = f->w, sc = f->sc;
    float *restrict Y = dst, *restrict Cb = dst + w, *restrict Cr = dst + 2 * w;
    const char *p = f->base + y * f->sy;
    if (f->sb == 1 && f->sx == 3 && sc == 1) {
        /* packed RGB, a chunk at a time: widen the bytes in one loop, then
         * the arithmetic on float triples (both loops vectorise) */
        const uint8_t *u = (const uint8_t *)p;
        float F[3 * 256];
        for (Py_ssize_t x0 = 0; x0 < w; x0 += 256) {
            const Py_ssize_t n = w - x0 < 256 ? w - x0 : 256;
            for (Py_ssize_t i = 0; i < 3 * n; i++)
                F[i] = (float)u[3 * x0 + i];
            float *restrict y_ = Y + x0, *restrict b_ = Cb + x0, *restrict r_ = Cr + x0;
            for (Py_ssize_t x = 0; x < n; x++)
                ycc_pixel(F[3 * x], F[3 * x + 1], F[3 * x + 2], f->ycc, y_ + x, b_ + x, r_ + x);
        }
    } else if (f->sb == 1) {
        const Py_ssize_t sx = f->sx;
        YCC_LOOP(uint8_t)
    } else {
        const Py_ssize_t sx = f->sx;
        YCC_LOOP(uint16_t)
    }
}

/* Row y's slot of a ring: *d points at it; true when it already holds row y
 * (else the caller fills it and tags it with y). */
static int ring_slot(Ring *ring, Py_ssize_t y, float **d)
{
    const int s = (int)(y % ring->slots);
    *d = ring->data + s * ring->width;
    return ring->tag[s] == y;
}

static void ring_tag(Ring *ring, Py_ssize_t y)
{
    ring->tag[y % ring->slots] = y;
}

static float *pixel_row(Ring *ring, const Frame *f, Py_ssize_t y, int ycc)
{
    float *d;
    if (!ring_slot(ring, y, &d)) {
        if (ycc)
            fill_ycc(f, y, d);
        else
            fill_channels(f, y, d);
        ring_tag(ring, y);
    }
    return d;
}

/* The YCC pixel rows y0 .. y0 + n - 1 of a frame, clamped to its rows. */
static void clamped_rows(Ring *pix, const Frame *f, Py_ssize_t y0, int n, const float **rows)
{
    for (int k = 0; k < n; k++) {
        Py_ssize_t y = y0 + k;
        y = y < 0 ? 0 : (y > f->h - 1 ? f->h - 1 : y);
        rows[k] = pixel_row(pix, f, y, 1);
    }
}

/* Chroma row j (residual._Rows, k > 0): for Cb and Cr, the mean over the
 * 4x4 pixels of rows 2j-1 .. 2j+2 and columns 2i-1 .. 2i+2, clamped. */
static float *chroma_row(Ring *ring, Ring *pix, const Frame *f, Py_ssize_t j, Py_ssize_t wp,
                         float *tmp)
{
    float *d;
    if (ring_slot(ring, j, &d))
        return d;
    const Py_ssize_t w = f->w;
    const float *rows[4];
    clamped_rows(pix, f, 2 * j - 1, 4, rows);
    /* the first i > 0 whose columns 2i-1 .. 2i+2 need a clamp */
    const Py_ssize_t i1 = w >= 3 ? (w - 1) / 2 : 1;
    for (int p = 0; p < 2; p++) {
        /* the four rows' sum from 0, in the reference's order, in one pass
         * (the ring holds many more rows than these four) */
        const Py_ssize_t off = (1 + p) * w; /* Cb, then Cr */
        const float *restrict r0 = rows[0] + off, *restrict r1 = rows[1] + off;
        const float *restrict r2 = rows[2] + off, *restrict r3 = rows[3] + off;
        float *restrict t = tmp + p * w;
        for (Py_ssize_t x = 0; x < w; x++) {
            float v = 0.0f + r0[x];
            v = v + r1[x];
            v = v + r2[x];
            t[x] = v + r3[x];
        }
        /* columns 2i-1 .. 2i+2: clamped at the edges, and in between
         * (1 <= i < i1) without a clamp, so that the loop vectorises */
        float *restrict o = d + p * wp;
        for (Py_ssize_t i = 1; i < i1; i++) {
            float v = t[2 * i - 1] + t[2 * i];
            v = v + t[2 * i + 1];
            v = v + t[2 * i + 2];
            o[i] = v * 0.0625f;
        }
        for (Py_ssize_t i = 0; i < wp; i = i ? i + 1 : i1) {
            Py_ssize_t a = 2 * i - 1, b = 2 * i + 1, c = 2 * i + 2;
            a = a < 0 ? 0 : a;
            b = b > w - 1 ? w - 1 : b;
            c = c > w - 1 ? w - 1 : c;
            float v = t[a] + t[2 * i];
            v = v + t[b];
            v = v + t[c];
            o[i] = v * 0.0625f;
        }
    }
    ring_tag(ring, j);
    return d;
}

/* Wide row j (residual._wide_rows): per element, the means over the 8x8
 * pixels of rows 2j-3 .. 2j+4 and columns 2i-3 .. 2i+4 (clamped) of Cb and
 * Cr, then the levels B = Y + Cb / scale and R = Y + Cr / scale of the same
 * means: four rows of wp floats.  tmp holds 3 * w + wp floats. */
static float *wide_row(Ring *ring, Ring *pix, const Frame *f, Py_ssize_t j, Py_ssize_t wp,
                       float *tmp)
{
    float *d;
    if (ring_slot(ring, j, &d))
        return d;
    const Py_ssize_t w = f->w;
    const float *rows[8];
    clamped_rows(pix, f, 2 * j - 3, 8, rows);
    float *ymean = tmp + 3 * w;
    /* elements i1 <= i < i2 need no clamp: columns 2i-3 >= 0, 2i+4 <= w-1 */
    const Py_ssize_t i1 = 2, i2 = w >= 5 ? ((w - 5) / 2 + 1 < wp ? (w - 5) / 2 + 1 : wp) : 2;
    for (int p = 0; p < 3; p++) {
        /* the eight rows' sum from 0, in the reference's order (one loop
         * that vectorises) */
        const Py_ssize_t off = p * w;
        const float *restrict r0 = rows[0] + off, *restrict r1 = rows[1] + off;
        const float *restrict r2 = rows[2] + off, *restrict r3 = rows[3] + off;
        const float *restrict r4 = rows[4] + off, *restrict r5 = rows[5] + off;
        const float *restrict r6 = rows[6] + off, *restrict r7 = rows[7] + off;
        float *restrict t = tmp + p * w;
        for (Py_ssize_t x = 0; x < w; x++) {
            float v = 0.0f + r0[x];
            v = v + r1[x];
            v = v + r2[x];
            v = v + r3[x];
            v = v + r4[x];
            v = v + r5[x];
            v = v + r6[x];
            t[x] = v + r7[x];
        }
        /* Y's means to the side, Cb's and Cr's into the row */
        float *restrict o = p == 0 ? ymean : d + (p - 1) * wp;
        for (Py_ssize_t i = i1; i < i2; i++) {
            const float *q = t + 2 * i - 3;
            float v = q[0] + q[1];
            v = v + q[2];
            v = v + q[3];
            v = v + q[4];
            v = v + q[5];
            v = v + q[6];
            v = v + q[7];
            o[i] = v * 0.015625f;
        }
        for (Py_ssize_t i = 0; i < wp; i = (i + 1 == i1 && i2 > i1) ? i2 : i + 1) {
            float v = 0.0f;
            for (int dx = -3; dx <= 4; dx++) {
                Py_ssize_t x = 2 * i + dx;
                x = x < 0 ? 0 : (x > w - 1 ? w - 1 : x);
                v = dx == -3 ? t[x] : v + t[x];
            }
            o[i] = v * 0.015625f;
        }
    }
    for (int p = 0; p < 2; p++) {
        const float *restrict c = d + p * wp;
        float *restrict l = d + (2 + p) * wp;
        const float inv = f->ycc[5 + p];
        for (Py_ssize_t i = 0; i < wp; i++) {
            float t = c[i] * inv;
            l[i] = t + ymean[i];
        }
    }
    ring_tag(ring, j);
    return d;
}

/* residual._median4 */
static inline float median4(float a, float b, float c, float d)
{
    float lo = a < b ? a : b, hi = a < b ? b : a;
    float lo2 = c < d ? c : d, hi2 = c < d ? d : c;
    hi = hi2 < hi ? hi2 : hi;
    lo = lo < lo2 ? lo2 : lo;
    float m = lo + hi;
    return m * 0.5f;
}

/* residual._median4, then the centre minus it */
static inline float resid(float a, float b, float c, float d, float v)
{
    return v - median4(a, b, c, d);
}

/* The left and right neighbours of element x of a row (residual._neighbours):
 * reach r away, reflected at the edges, the element itself where the row is
 * too narrow. */
static inline void sides(const float *cen, Py_ssize_t w, Py_ssize_t r, Py_ssize_t x, float *L,
                         float *R)
{
    if (w <= r) {
        *L = *R = cen[x];
        return;
    }
    Py_ssize_t edge = r < w - r ? r : w - r;
    *L = x >= r ? cen[x - r] : (x < edge ? cen[x + r] : cen[x]);
    *R = x >= w - edge ? cen[x - r] : (x < w - r ? cen[x + r] : cen[x]);
}

/* One frame's level values of one chroma plane's element row
 * (residual._level_band): the wide residual r of chroma rows c*, the level
 * L (median of the four neighbours of level rows l*, 0 where the element or
 * a neighbour reaches the clipping level), and r again where neither
 * reaches it (else 0), into rows vr, vl and vs: the operands of the level
 * sums (level_add_rows adds r L, L L, r r and that r). */
static inline void level_vals(float cu, float cd, float cl, float cr, float cc, float lu,
                              float ld, float ll_, float lr, float lc, float clip, float *vr,
                              float *vl, float *vs)
{
    float res = resid(cu, cd, cl, cr, cc);
    float lam = median4(lu, ld, ll_, lr);
    float top = lc < lu ? lu : lc;
    top = top < ld ? ld : top;
    top = top < ll_ ? ll_ : top;
    top = top < lr ? lr : top;
    lam = lam > 0.0f ? lam : 0.0f;
    lam = top >= clip ? 0.0f : lam;
    *vr = res;
    *vl = lam;
    *vs = top >= clip ? 0.0f : res;
}

static void level_row(const float *restrict cu, const float *restrict cc,
                      const float *restrict cd, const float *restrict lu,
                      const float *restrict lc, const float *restrict ld, Py_ssize_t w,
                      Py_ssize_t r, float clip, float *restrict vr, float *restrict vl,
                      float *restrict vs)
{
    /* r <= x < w - r: both sides inside the row (a loop without branches) */
    const Py_ssize_t lo = w > r ? r : w, hi = w - r > lo ? w - r : lo;
    for (Py_ssize_t x = lo; x < hi; x++)
        level_vals(cu[x], cd[x], cc[x - r], cc[x + r], cc[x], lu[x], ld[x], lc[x - r], lc[x + r],
                   lc[x], clip, vr + x, vl + x, vs + x);
    for (Py_ssize_t x = 0; x < w; x = (x + 1 == lo && hi > lo) ? hi : x + 1) {
        float cl, cr_, l_, r_;
        sides(cc, w, r, x, &cl, &cr_);
        sides(lc, w, r, x, &l_, &r_);
        level_vals(cu[x], cd[x], cl, cr_, cc[x], lu[x], ld[x], l_, r_, lc[x], clip, vr + x,
                   vl + x, vs + x);
    }
}

/* K frames' level values (level_row's rows vr, vl, vs: frame j's three
 * rows, w floats apart, at vals[j] + off) added to one plane's level sums,
 * frame after frame, as K separate updates add them: r L, L L, r r and the
 * unclipped r.  A chunk of columns at a time, so that the sums read from
 * memory once stay in the first-level cache for the K frames. */
static void level_add_rows(float *restrict rl, float *restrict ll, float *restrict rr,
                           float *restrict rs, const float *const *vals, Py_ssize_t off, int K,
                           Py_ssize_t w)
{
    for (Py_ssize_t x0 = 0; x0 < w; x0 += 512) {
        const Py_ssize_t n = w - x0 < 512 ? w - x0 : 512;
        float *restrict a = rl + x0, *restrict b = ll + x0, *restrict c = rr + x0;
        float *restrict d = rs + x0;
        for (int j = 0; j < K; j++) {
            const float *restrict vr = vals[j] + off + x0, *restrict vl = vr + w;
            const float *restrict vs = vr + 2 * w;
            for (Py_ssize_t x = 0; x < n; x++) {
                float res = vr[x], lam = vl[x];
                float t = res * lam;
                a[x] = a[x] + t;
                t = lam * lam;
                b[x] = b[x] + t;
                d[x] = d[x] + vs[x];
                t = res * res;
                c[x] = c[x] + t;
            }
        }
    }
}

/* One row of residuals into out: centre row cen, the rows reach above and
 * below, the left and right neighbours as residual._residual_band takes
 * them (reflected, or the element itself where a plane is too narrow). */
static void residual_row(const float *up, const float *cen, const float *dn, Py_ssize_t w,
                         Py_ssize_t r, float *restrict out)
{
    /* r <= x < w - r: both sides inside the row (as in level_row) */
    const Py_ssize_t lo = w > r ? r : w, hi = w - r > lo ? w - r : lo;
    for (Py_ssize_t x = lo; x < hi; x++)
        out[x] = resid(up[x], dn[x], cen[x - r], cen[x + r], cen[x]);
    for (Py_ssize_t x = 0; x < w; x = (x + 1 == lo && hi > lo) ? hi : x + 1) {
        float L, R;
        sides(cen, w, r, x, &L, &R);
        out[x] = resid(up[x], dn[x], L, R, cen[x]);
    }
}

/* The K frames' residual rows (frame j's at res[j] + off) added to the sums
 * and, squared, to the sums of squares, frame after frame (the order of K
 * separate updates). */
static void add_rows(float *restrict sum, float *restrict sq, const float *const *res,
                     Py_ssize_t off, int K, Py_ssize_t w)
{
    /* a chunk of columns at a time: its sums, read from memory once, stay
     * in the first-level cache for the K frames */
    for (Py_ssize_t x0 = 0; x0 < w; x0 += 1024) {
        const Py_ssize_t n = w - x0 < 1024 ? w - x0 : 1024;
        float *restrict s = sum + x0, *restrict q = sq + x0;
        for (int j = 0; j < K; j++) {
            const float *restrict v = res[j] + off + x0;
            for (Py_ssize_t x = 0; x < n; x++) {
                float t = v[x];
                s[x] = s[x] + t;
                t = t * t;
                q[x] = q[x] + t;
            }
        }
    }
}

typedef struct {
    Ring pix, chroma, wide;
} Rings;

static void free_rings(Rings *rg, int K)
{
    for (int j = 0; j < K; j++) {
        free(rg[j].pix.data);
        free(rg[j].pix.tag);
        free(rg[j].chroma.data);
        free(rg[j].chroma.tag);
        free(rg[j].wide.data);
        free(rg[j].wide.tag);
    }
    free(rg);
}

static int ring_init(Ring *ring, int slots, Py_ssize_t width)
{
    ring->slots = slots;
    ring->width = width;
    ring->data = malloc(sizeof(float) * (size_t)slots * (size_t)width);
    ring->tag = malloc(sizeof(Py_ssize_t) * (size_t)slots);
    if (!ring->data || !ring->tag)
        return 0;
    for (int s = 0; s < slots; s++)
        ring->tag[s] = -1;
    return 1;
}

/* Fold K frames of the same shape, row by row: the sums are read and
 * written once per K frames, and each frame's residuals are added in turn,
 * as K calls would add them. */
HOT_LOOP static int residual_frames(const Frame *fr, int K, int ycc, Py_ssize_t reach, float *flat,
                                    Py_ssize_t values)
{
    const Py_ssize_t h = fr[0].h, w = fr[0].w, c = fr[0].c;
    const Py_ssize_t hp = (h + 1) / 2, wp = (w + 1) / 2, cr = 2;
    /* per frame: residual rows of every plane of one step (stride w); for
     * RGB photos, of every step of a band (RES_BAND steps: two Y rows, the
     * Cb and Cr rows, then the level values of Cb and of Cr, 2 w + 8 wp
     * floats a step), but for the last frame of the batch, of one step */
    const Py_ssize_t step = 2 * w + 8 * wp;
    Rings *rg = calloc((size_t)K, sizeof(Rings));
    float *res = malloc(sizeof(float) * (ycc ? ((size_t)(K - 1) * RES_BAND + 1) * (size_t)step
                                             : (size_t)K * (size_t)c * (size_t)w));
    float *tmp = malloc(sizeof(float) * (3 * (size_t)w + (size_t)wp));
    /* Pixel rows in use at once: a residual row's 2 reach + 1; for RGB
     * photos, step i (chroma row i) reads rows 2i - reach (the luma
     * residuals) .. 2i + 12 (the wide row i + 4 of the level sums, its
     * eight rows at once: the last rows a step converts), and step i + 1
     * reads from 2i + 2 - reach, so 12 + reach slots keep every row until
     * its last use (the chroma rows i - 2 and i + 2, and the wide rows
     * i - 4 and i + 4, are computed steps before they are read, and are in
     * their own rings: 5 and 9 slots).  Rings no larger than that stay in
     * cache (a row evicted early, at the frame's edges, is converted again,
     * to the same values): at 24 MP, 13 to 19 pixel rows, 12 to 9 wide
     * rows and 8 to 5 chroma rows: CPU per photo, K = 2, 103 -> 94 ms. */
    const int pix_slots = (int)(ycc ? 12 + (reach > 2 ? reach : 2) : 2 * reach + 1);
    int ok = 0;
    if (!rg || !res || !tmp)
        goto done;
    for (int j = 0; j < K; j++) {
        if (!ring_init(&rg[j].pix, pix_slots, (ycc ? 3 : c) * w))
            goto done;
        if (ycc && !ring_init(&rg[j].chroma, 5, 2 * wp))
            goto done;
        if (ycc && !ring_init(&rg[j].wide, 9, 4 * wp))
            goto done;
    }
    const float *src[MAX_BATCH];
    if (!ycc) {
        for (int j = 0; j < K; j++)
            src[j] = res + j * c * w;
        for (Py_ssize_t y = 0; y < h; y++) {
            for (int j = 0; j < K; j++) {
                const float *up = pixel_row(&rg[j].pix, fr + j, reflect(y - reach, h, reach), 0);
                const float *dn = pixel_row(&rg[j].pix, fr + j, reflect(y + reach, h, reach), 0);
                const float *cen = pixel_row(&rg[j].pix, fr + j, y, 0);
                for (Py_ssize_t k = 0; k < c; k++)
                    residual_row(up + k * w, cen + k * w, dn + k * w, w, reach,
                                 res + (j * c + k) * w);
            }
            for (Py_ssize_t k = 0; k < c; k++) {
                float *s = flat + k * h * w + y * w;
                add_rows(s, s + values, src, k * w, K, w);
            }
        }
        ok = 1;
        goto done;
    }
    float *sum_cb = flat + h * w, *sum_cr = sum_cb + hp * wp;
    /* the level sums after the sums of squares: r L, L L, r r, r of Cb, then Cr */
    float *lev = flat + 2 * values;
    const Py_ssize_t hw = hp * wp, wr = 4; /* residual._WIDE_REACH */
    /* RES_BAND chroma rows at a time, frame after frame: one frame's rings
     * (about 1.6 MiB for a 24 MP photo, less than a core's L2 cache) stay
     * in cache while it runs through the band, instead of K frames' rings
     * taking turns at every row, and its residual rows and level values go
     * to the band's scratch; the last frame of the batch adds, step by
     * step, the K frames' rows of the step to the sums and level sums (the
     * earlier frames' from the scratch, its own while they are in cache),
     * frame after frame as K calls would add them, so that the sums (458
     * MiB for a 24 MP photo) are read and written once per K frames. */
    const Py_ssize_t fstride = RES_BAND * step; /* a frame's band of scratch */
    float *last = res + (K - 1) * fstride;       /* the last frame's step */
    for (Py_ssize_t i0 = 0; i0 < hp; i0 += RES_BAND) {
        const Py_ssize_t i9 = i0 + RES_BAND < hp ? i0 + RES_BAND : hp;
        for (int j = 0; j < K; j++) {
            for (Py_ssize_t i = i0; i < i9; i++) {
                Py_ssize_t y1 = 2 * i + 2 < h ? 2 * i + 2 : h;
                float *out = j < K - 1 ? res + j * fstride + (i - i0) * step : last;
                for (Py_ssize_t y = 2 * i; y < y1; y++) {
                    const float *up = pixel_row(&rg[j].pix, fr + j, reflect(y - reach, h, reach), 1);
                    const float *dn = pixel_row(&rg[j].pix, fr + j, reflect(y + reach, h, reach), 1);
                    const float *cen = pixel_row(&rg[j].pix, fr + j, y, 1);
                    residual_row(up, cen, dn, w, reach, out + (y - 2 * i) * w);
                }
                Ring *ch = &rg[j].chroma, *px = &rg[j].pix;
                const float *up = chroma_row(ch, px, fr + j, reflect(i - cr, hp, cr), wp, tmp);
                const float *dn = chroma_row(ch, px, fr + j, reflect(i + cr, hp, cr), wp, tmp);
                const float *cen = chroma_row(ch, px, fr + j, i, wp, tmp);
                float *oc = out + 2 * w;
                residual_row(up, cen, dn, wp, cr, oc);
                residual_row(up + wp, cen + wp, dn + wp, wp, cr, oc + wp);
                /* the level values */
                Ring *wd = &rg[j].wide;
                const float *wu = wide_row(wd, px, fr + j, reflect(i - wr, hp, wr), wp, tmp);
                const float *wn = wide_row(wd, px, fr + j, reflect(i + wr, hp, wr), wp, tmp);
                const float *wc = wide_row(wd, px, fr + j, i, wp, tmp);
                for (int p = 0; p < 2; p++) {
                    float *v = oc + (2 + 3 * p) * wp;
                    level_row(wu + p * wp, wc + p * wp, wn + p * wp, wu + (2 + p) * wp,
                              wc + (2 + p) * wp, wn + (2 + p) * wp, wp, wr, fr[j].ycc[7], v,
                              v + wp, v + 2 * wp);
                }
                if (j < K - 1)
                    continue;
                /* the K frames' rows of step i, added in their order */
                for (int q = 0; q < K - 1; q++)
                    src[q] = res + q * fstride + (i - i0) * step;
                src[K - 1] = last;
                for (Py_ssize_t y = 2 * i; y < y1; y++) {
                    float *s = flat + y * w;
                    add_rows(s, s + values, src, (y - 2 * i) * w, K, w);
                }
                float *s = sum_cb + i * wp;
                add_rows(s, s + values, src, 2 * w, K, wp);
                s = sum_cr + i * wp;
                add_rows(s, s + values, src, 2 * w + wp, K, wp);
                for (int p = 0; p < 2; p++) {
                    float *l = lev + 4 * p * hw + i * wp;
                    level_add_rows(l, l + hw, l + 2 * hw, l + 3 * hw, src,
                                   2 * w + (2 + 3 * p) * wp, K, wp);
                }
            }
        }
    }
    ok = 1;
done:
    if (rg)
        free_rings(rg, K);
    free(res);
    free(tmp);
    return ok;
}

static PyObject *py_residual(PyObject *self, PyObject *args)
{
    PyObject *images, *flat, *consts;
    int sb, ycc;
    Py_ssize_t reach;
    if (!PyArg_ParseTuple(args, "O!iOinO!", &PyTuple_Type, &images, &sb, &flat, &ycc, &reach,
                          &PyTuple_Type, &consts))
        return NULL;
    Py_ssize_t K = PyTuple_GET_SIZE(images);
    if ((sb != 1 && sb != 2) || reach < 1 || PyTuple_GET_SIZE(consts) != 8 || K < 1 ||
        K > MAX_BATCH) {
        PyErr_SetString(PyExc_ValueError, "bad residual arguments");
        return NULL;
    }
    float ycc_c[8];
    if (!floats_of(consts, ycc_c, 8))
        return NULL;
    Py_buffer img[MAX_BATCH], acc;
    Frame fr[MAX_BATCH];
    int got = 0, ok = 0, have_acc = 0;
    for (; got < K; got++) {
        Py_buffer *v = &img[got];
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(images, got), v, PyBUF_STRIDED_RO) < 0)
            goto out;
        if (v->ndim != 3 || v->itemsize != sb ||
            (got && (v->shape[0] != fr[0].h || v->shape[1] != fr[0].w || v->shape[2] != fr[0].c))) {
            PyBuffer_Release(v);
            PyErr_SetString(PyExc_ValueError, "frames must be 3-D, of one shape and sample size");
            goto out;
        }
        Frame *f = &fr[got];
        f->base = v->buf;
        f->h = v->shape[0];
        f->w = v->shape[1];
        f->c = v->shape[2];
        f->sy = v->strides[0];
        f->sx = v->strides[1];
        f->sc = v->strides[2];
        f->sb = sb;
        memcpy(f->ycc, ycc_c, sizeof ycc_c);
    }
    if (PyObject_GetBuffer(flat, &acc, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        goto out;
    have_acc = 1;
    const Py_ssize_t h = fr[0].h, w = fr[0].w;
    if (ycc && fr[0].c != 3) {
        PyErr_SetString(PyExc_ValueError, "the colour residual needs 3 channels");
        goto out;
    }
    Py_ssize_t values = ycc ? h * w + 2 * ((h + 1) / 2) * ((w + 1) / 2) : h * w * fr[0].c;
    Py_ssize_t levels = ycc ? 8 * ((h + 1) / 2) * ((w + 1) / 2) : 0;
    if (acc.len != (Py_ssize_t)sizeof(float) * (2 * values + levels)) {
        PyErr_SetString(PyExc_ValueError, "residual sums of the wrong length");
        goto out;
    }
    if (values > 0) {
        int done;
        Py_BEGIN_ALLOW_THREADS
        done = residual_frames(fr, (int)K, ycc, reach, (float *)acc.buf, values);
        Py_END_ALLOW_THREADS
        if (!done) {
            PyErr_NoMemory();
            goto out;
        }
    }
    ok = 1;
out:
    for (int j = 0; j < got; j++)
        PyBuffer_Release(&img[j]);
    if (have_acc)
        PyBuffer_Release(&acc);
    if (!ok)
        return NULL;
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------- candidates */

/* detect._PlaneJob.band_records' cheap pass over one band of one plane
 * pair (hotpixel_shm.detect): _fill_band of the mean and the variance
 * (float32, edge values repeated; the std for the variance),
 * _box_residuals of both and the per-phase threshold test of _above, in
 * the numpy code's operation order (the same float32 bits). */

typedef struct {
    const char *base;
    Py_ssize_t rows, sy, sx;
    int dbl; /* float64, else float32 */
} RowSrc;

/* One source row -> w float32 values (the std: max(v, 0) then sqrt). */
static HOT_LOOP void cand_row(const RowSrc *s, Py_ssize_t i, Py_ssize_t w, int is_var,
                              float *restrict d)
{
    const char *p = s->base + i * s->sy;
    if (s->dbl) {
        for (Py_ssize_t x = 0; x < w; x++)
            d[x] = (float)*(const double *)(p + x * s->sx);
    } else {
        for (Py_ssize_t x = 0; x < w; x++)
            d[x] = *(const float *)(p + x * s->sx);
    }
    if (is_var) {
        /* rounding can leave tiny negative variances */
        for (Py_ssize_t x = 0; x < w; x++) {
            float v = d[x] < 0.0f ? 0.0f : d[x];
            d[x] = sqrtf(v);
        }
    }
}

/* _fill_band: the sources' rows into buf rows [top, top + n), the rows
 * above and below repeat the first and last of them, the h columns either
 * side the edge columns. */
static void cand_fill(const RowSrc *src, int nsrc, float *buf, Py_ssize_t brows, Py_ssize_t w,
                      Py_ssize_t h, Py_ssize_t top, int is_var)
{
    const Py_ssize_t wp = w + 2 * h;
    Py_ssize_t r = top;
    for (int k = 0; k < nsrc; k++)
        for (Py_ssize_t i = 0; i < src[k].rows; i++, r++) {
            float *d = buf + r * wp;
            cand_row(&src[k], i, w, is_var, d + h);
            for (Py_ssize_t j = 0; j < h; j++) {
                d[j] = d[h];
                d[h + w + j] = d[h + w - 1];
            }
        }
    for (Py_ssize_t q = 0; q < top; q++)
        memcpy(buf + q * wp, buf + top * wp, (size_t)wp * sizeof(float));
    for (Py_ssize_t q = r; q < brows; q++)
        memcpy(buf + q * wp, buf + (r - 1) * wp, (size_t)wp * sizeof(float));
}

/* One row of window sums along the row: o[x] = b[x] + b[x+1] + ... (win
 * terms, added in that order).  Called with a constant win, so that the
 * terms stay in registers and each row is read and written once. */
static inline void cand_hsum(const float *restrict b, float *restrict o, Py_ssize_t w, int win)
{
    for (Py_ssize_t x = 0; x < w; x++) {
        float s = b[x];
        for (int k = 1; k < win; k++)
            s += b[x + k];
        o[x] = s;
    }
}

/* One row of residuals: the column sums of win rows of hs (added top to
 * bottom), then |S + c * neg| * inv; with a mask, also the threshold test
 * of this row of both planes (am the mean's, o the std's). */
static inline void cand_vsum(const float *restrict hs, Py_ssize_t w, int win,
                             const float *restrict c, float neg, float inv, float *restrict o,
                             const float *restrict am, const float *t,
                             unsigned char *restrict mask)
{
    for (Py_ssize_t x = 0; x < w; x++) {
        float s = hs[x];
        for (int k = 1; k < win; k++)
            s += hs[k * w + x];
        float p = c[x] * neg;
        o[x] = fabsf(s + p) * inv;
    }
    if (mask) {
        const float m0 = t[0], m1 = t[1], s0 = t[4], s1 = t[5];
        Py_ssize_t x = 0;
        for (; x + 1 < w; x += 2) {
            mask[x] = (am[x] > m0) | (o[x] > s0);
            mask[x + 1] = (am[x + 1] > m1) | (o[x + 1] > s1);
        }
        if (x < w)
            mask[x] = (am[x] > m0) | (o[x] > s0);
    }
}

#define CAND_BOX_WIN(WIN)                                                                   \
    do {                                                                                    \
        for (Py_ssize_t r = 0; r < brows; r++)                                              \
            cand_hsum(buf + r * wp, hs + r * w, w, (WIN));                                  \
        for (Py_ssize_t r = 0; r < rows; r++)                                               \
            cand_vsum(hs + r * w, w, (WIN), buf + (r + h) * wp + h, neg, inv, out + r * w,  \
                      am ? am + r * w : NULL, thr + 2 * (r % 2), mask ? mask + r * w : NULL); \
    } while (0)

/* _box_residuals: window sums by float32 adds in numpy's order (along the
 * rows into hs, then down the columns), then |(S - w*w*c) / (w*w - 1)|
 * (multiplied by the float32 of 1 / (w*w - 1), as numpy does); with
 * mask, also _above of both planes or-ed (am the mean's residuals, out
 * the std's): band row r takes the thresholds of phase row r % 2, column
 * x those of x % 2 (thr: the mean's four, then the std's). */
static HOT_LOOP void cand_box(const float *restrict buf, float *restrict hs, float *restrict out,
                              Py_ssize_t rows, Py_ssize_t w, Py_ssize_t h,
                              const float *restrict am, const float *thr,
                              unsigned char *restrict mask)
{
    const Py_ssize_t wp = w + 2 * h, brows = rows + 2 * h;
    const int win = (int)(2 * h + 1);
    const float neg = -(float)(win * win), inv = (float)(1.0 / (double)(win * win - 1));
    /* the usual windows with a constant count of terms (the generic loop
     * gives the same sums, more slowly) */
    switch (win) {
    case 3: CAND_BOX_WIN(3); break;
    case 5: CAND_BOX_WIN(5); break;
    case 7: CAND_BOX_WIN(7); break;
    default: CAND_BOX_WIN(win); break;
    }
}

/* The 2-D float sources of a plane's rows: a tuple of buffers, any strides. */
static int cand_sources(PyObject *tup, Py_buffer *views, int *got, RowSrc *src, Py_ssize_t w,
                        Py_ssize_t *rows)
{
    Py_ssize_t n = PyTuple_GET_SIZE(tup);
    *rows = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_buffer *v = &views[*got];
        if (PyObject_GetBuffer(PyTuple_GET_ITEM(tup, k), v, PyBUF_STRIDED_RO | PyBUF_FORMAT) < 0)
            return 0;
        (*got)++;
        const char *f = v->format ? v->format : "B";
        if (*f == '<' || *f == '=' || *f == '@')
            f++;
        int dbl = strcmp(f, "d") == 0, flt = strcmp(f, "f") == 0;
        if (v->ndim != 2 || v->shape[1] != w || !(dbl || flt)) {
            PyErr_SetString(PyExc_ValueError, "candidate rows must be 2-D float32 or float64 "
                                              "of the band's width");
            return 0;
        }
        src[k].base = v->buf;
        src[k].rows = v->shape[0];
        src[k].sy = v->strides[0];
        src[k].sx = v->strides[1];
        src[k].dbl = dbl;
        *rows += v->shape[0];
    }
    return 1;
}

#define CAND_SOURCES 64

static PyObject *py_candidates(PyObject *self, PyObject *args)
{
    PyObject *msrc, *vsrc, *thr_t, *bufs_t;
    Py_ssize_t top, h, rows, w;
    if (!PyArg_ParseTuple(args, "O!O!nnnnO!O!", &PyTuple_Type, &msrc, &PyTuple_Type, &vsrc, &top,
                          &h, &rows, &w, &PyTuple_Type, &bufs_t, &PyTuple_Type, &thr_t))
        return NULL;
    if (PyTuple_GET_SIZE(msrc) < 1 || PyTuple_GET_SIZE(msrc) > CAND_SOURCES ||
        PyTuple_GET_SIZE(vsrc) < 1 || PyTuple_GET_SIZE(vsrc) > CAND_SOURCES ||
        PyTuple_GET_SIZE(bufs_t) != 6 || PyTuple_GET_SIZE(thr_t) != 8 || h < 0 || rows < 1 ||
        w < 1 || top < 0) {
        PyErr_SetString(PyExc_ValueError, "bad candidates arguments");
        return NULL;
    }
    float thr[8];
    if (!floats_of(thr_t, thr, 8))
        return NULL;
    Py_buffer views[2 * CAND_SOURCES];
    RowSrc ms[CAND_SOURCES], vs[CAND_SOURCES];
    Buffers bufs;
    bufs.count = 0;
    int got = 0, ok = 0;
    Py_ssize_t mrows, vrows;
    void *p[6];
    const Py_ssize_t brows = rows + 2 * h, wp = w + 2 * h;
    /* bm, bs (brows, wp); hsum (brows, w) float32; am, as (rows, w)
     * float32; mask (rows, w) bool */
    const Py_ssize_t want[6] = {brows * wp * 4, brows * wp * 4, brows * w * 4, rows * w * 4,
                                rows * w * 4, rows * w};
    if (!cand_sources(msrc, views, &got, ms, w, &mrows) ||
        !cand_sources(vsrc, views, &got, vs, w, &vrows))
        goto out;
    for (int i = 0; i < 6; i++) {
        Py_ssize_t len;
        p[i] = grab(&bufs, PyTuple_GET_ITEM(bufs_t, i), 1, &len);
        if (!p[i])
            goto out;
        if (len != want[i]) {
            PyErr_SetString(PyExc_ValueError, "candidate buffers of the wrong size");
            goto out;
        }
    }
    if (mrows != vrows || mrows < 1 || top + mrows > brows) {
        PyErr_SetString(PyExc_ValueError, "candidate rows do not fit the band");
        goto out;
    }
    Py_BEGIN_ALLOW_THREADS
    cand_fill(ms, (int)PyTuple_GET_SIZE(msrc), p[0], brows, w, h, top, 0);
    cand_fill(vs, (int)PyTuple_GET_SIZE(vsrc), p[1], brows, w, h, top, 1);
    cand_box(p[0], p[2], p[3], rows, w, h, NULL, thr, NULL);
    cand_box(p[1], p[2], p[4], rows, w, h, p[3], thr, p[5]);
    Py_END_ALLOW_THREADS
    ok = 1;
out:
    for (int j = 0; j < got; j++)
        PyBuffer_Release(&views[j]);
    release_all(&bufs);
    if (!ok)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"update", py_update, METH_VARARGS,
     "update(tier, sample_bytes, fields, images, n, start, consts): fold a batch of images"},
    {"reduce", py_reduce, METH_VARARGS,
     "reduce(mode, sample_bytes, parts, counts, fracs, crosses, start, stop, out_mean, out_var, "
     "total[, index]): merge and finish a flat range, or the values at an int64 index"},
    {"residual", py_residual, METH_VARARGS,
     "residual(images, sample_bytes, sums, ycc, reach, consts): add K frames' temporal "
     "residuals and their squares (and RGB photos' level sums) to float32 sums, in one pass"},
    {"candidates", py_candidates, METH_VARARGS,
     "candidates(mean_rows, var_rows, top, h, rows, width, (bm, bs, hsum, am, as, mask), "
     "thresholds): detection's cheap pass over one band (fill, box residuals, threshold test)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ckernels",
                                    "Compiled update and merge kernels (see kernels_numpy).", -1,
                                    methods};

/* Which build of the hot loops runs here (the ifunc's choice). */
static const char *loops_in_use(void)
{
#ifdef HAVE_CLONES
    __builtin_cpu_init();
#ifdef HAVE_V4_CLONE
    if (__builtin_cpu_supports("x86-64-v4"))
        return "AVX-512";
#endif
    if (__builtin_cpu_supports("avx2"))
        return "AVX2";
#endif
    return "baseline";
}

PyMODINIT_FUNC PyInit__ckernels(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "MAX_BATCH", MAX_BATCH) < 0 ||
              PyModule_AddStringConstant(m, "LOOPS", loops_in_use()) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
