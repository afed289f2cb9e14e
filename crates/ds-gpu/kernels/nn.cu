// Neural-network kernels. Row kernels use one block of 256 threads per row; column sums (bias
// and LayerNorm parameter gradients) use one thread per column walking the rows in order, so
// every sum is deterministic.

template <typename T> __device__ void bias_add_impl(T* x, const T* b, u64 rows, u64 cols) {
    GRID_LOOP(i, rows * cols) st(x, i, ld(x, i) + ld(b, i % cols));
}
template <typename T> __device__ void bias_grad_impl(const T* dy, T* db, u64 rows, u64 cols, int acc) {
    GRID_LOOP(c, cols) {
        float s = 0.0f;
        for (u64 r = 0; r < rows; r++) s += ld(dy, r * cols + c);
        st(db, c, acc ? ld(db, c) + s : s);
    }
}
#define DS_BIAS(T, N)                                                                                      \
    extern "C" __global__ void ds_bias_add_##N(T* x, const T* b, u64 rows, u64 cols) {                     \
        bias_add_impl<T>(x, b, rows, cols);                                                                \
    }                                                                                                      \
    extern "C" __global__ void ds_bias_grad_##N(const T* dy, T* db, u64 rows, u64 cols, int acc) {         \
        bias_grad_impl<T>(dy, db, rows, cols, acc);                                                        \
    }
DS_FLOATS(DS_BIAS)

#define GELU_C 0.7978845608028654f
#define GELU_A 0.044715f

__device__ __forceinline__ float gelu_f(float x) {
    float t = tanhf(GELU_C * (x + GELU_A * x * x * x));
    return 0.5f * x * (1.0f + t);
}
__device__ __forceinline__ float gelu_grad_f(float x) {
    float t = tanhf(GELU_C * (x + GELU_A * x * x * x));
    float sech2 = 1.0f - t * t;
    float slope = 0.5f * x * sech2 * GELU_C * (1.0f + 3.0f * GELU_A * x * x);
    return 0.5f * (1.0f + t) + (sech2 == 0.0f ? 0.0f : slope);  // saturated: the limit, not 0*inf
}

template <typename T> __device__ void gelu_impl(const T* x, T* y, u64 n) { GRID_LOOP(i, n) st(y, i, gelu_f(ld(x, i))); }
template <typename T> __device__ void gelu_bwd_impl(const T* x, const T* dy, T* dx, u64 n) {
    GRID_LOOP(i, n) st(dx, i, ld(dy, i) * gelu_grad_f(ld(x, i)));
}
template <typename T> __device__ void relu_impl(const T* x, T* y, u64 n) {
    GRID_LOOP(i, n) {
        float v = ld(x, i);
        st(y, i, v <= 0.0f ? 0.0f : v);  // NaN kept, -0 to +0
    }
}
template <typename T> __device__ void relu_bwd_impl(const T* x, const T* dy, T* dx, u64 n) {
    GRID_LOOP(i, n) st(dx, i, ld(x, i) > 0.0f ? ld(dy, i) : 0.0f);
}
#define DS_ACT(T, N)                                                                                         \
    extern "C" __global__ void ds_gelu_##N(const T* x, T* y, u64 n) { gelu_impl<T>(x, y, n); }                \
    extern "C" __global__ void ds_gelu_backward_##N(const T* x, const T* dy, T* dx, u64 n) {                  \
        gelu_bwd_impl<T>(x, dy, dx, n);                                                                      \
    }                                                                                                        \
    extern "C" __global__ void ds_relu_##N(const T* x, T* y, u64 n) { relu_impl<T>(x, y, n); }                \
    extern "C" __global__ void ds_relu_backward_##N(const T* x, const T* dy, T* dx, u64 n) {                  \
        relu_bwd_impl<T>(x, dy, dx, n);                                                                      \
    }
DS_FLOATS(DS_ACT)

// LayerNorm forward: one block per row; two passes (mean, then squared deviations).
template <typename T>
__device__ void layer_norm_impl(const T* x, const T* gamma, const T* beta, T* y, float* mean, float* rstd,
                                u64 cols, float eps) {
    __shared__ double scratch[256];
    u64 row = blockIdx.x;
    const T* xr = x + row * cols;
    T* yr = y + row * cols;
    double s = 0.0;
    for (u64 c = threadIdx.x; c < cols; c += blockDim.x) s += (double)ld(xr, c);
    float mu = (float)(block_sum<double>(s, scratch) / (double)cols);
    double q = 0.0;
    for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
        float d = ld(xr, c) - mu;
        q += (double)(d * d);
    }
    double var = block_sum<double>(q, scratch) / (double)cols;
    float rs = (float)(1.0 / sqrt(var + (double)eps));
    for (u64 c = threadIdx.x; c < cols; c += blockDim.x) st(yr, c, (ld(xr, c) - mu) * rs * ld(gamma, c) + ld(beta, c));
    if (threadIdx.x == 0) {
        mean[row] = mu;
        rstd[row] = rs;
    }
}

// LayerNorm backward for dx: one block per row.
template <typename T>
__device__ void layer_norm_dx_impl(const T* x, const T* gamma, const float* mean, const float* rstd, const T* dy,
                                   T* dx, u64 cols) {
    __shared__ double scratch[256];
    u64 row = blockIdx.x;
    const T* xr = x + row * cols;
    const T* dyr = dy + row * cols;
    float mu = mean[row], rs = rstd[row];
    double a = 0.0, b = 0.0;
    for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
        float xh = (ld(xr, c) - mu) * rs;
        float g = ld(dyr, c) * ld(gamma, c);
        a += (double)g;
        b += (double)(g * xh);
    }
    float c1 = (float)(block_sum<double>(a, scratch) / (double)cols);
    float c2 = (float)(block_sum<double>(b, scratch) / (double)cols);
    for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
        float xh = (ld(xr, c) - mu) * rs;
        float g = ld(dyr, c) * ld(gamma, c);
        st(dx + row * cols, c, rs * (g - c1 - xh * c2));
    }
}

// LayerNorm backward for dgamma and dbeta: one thread per column, rows in order.
template <typename T>
__device__ void layer_norm_dparams_impl(const T* x, const float* mean, const float* rstd, const T* dy, T* dgamma,
                                        T* dbeta, u64 rows, u64 cols, int acc) {
    GRID_LOOP(c, cols) {
        float sg = 0.0f, sb = 0.0f;
        for (u64 r = 0; r < rows; r++) {
            float d = ld(dy, r * cols + c);
            sg += d * ((ld(x, r * cols + c) - mean[r]) * rstd[r]);
            sb += d;
        }
        st(dgamma, c, acc ? ld(dgamma, c) + sg : sg);
        st(dbeta, c, acc ? ld(dbeta, c) + sb : sb);
    }
}
#define DS_LN(T, N)                                                                                             \
    extern "C" __global__ void ds_layer_norm_##N(const T* x, const T* gamma, const T* beta, T* y, float* mean,    \
                                                 float* rstd, u64 cols, float eps) {                             \
        layer_norm_impl<T>(x, gamma, beta, y, mean, rstd, cols, eps);                                           \
    }                                                                                                           \
    extern "C" __global__ void ds_layer_norm_dx_##N(const T* x, const T* gamma, const float* mean,                \
                                                    const float* rstd, const T* dy, T* dx, u64 cols) {           \
        layer_norm_dx_impl<T>(x, gamma, mean, rstd, dy, dx, cols);                                              \
    }                                                                                                           \
    extern "C" __global__ void ds_layer_norm_dparams_##N(const T* x, const float* mean, const float* rstd,        \
                                                         const T* dy, T* dgamma, T* dbeta, u64 rows, u64 cols,   \
                                                         int acc) {                                              \
        layer_norm_dparams_impl<T>(x, mean, rstd, dy, dgamma, dbeta, rows, cols, acc);                          \
    }
DS_FLOATS(DS_LN)

// Softmax cross-entropy: one block per row. Returns the class for a valid label, -1 for an
// ignored row, -2 for an invalid label.
__device__ __forceinline__ i64 xent_class(int label, int ignore, u64 classes) {
    if (label == ignore) return -1;
    if (label < 0 || (u64)label >= classes) return -2;
    return label;
}

template <typename T> __device__ float row_lse(const T* row, u64 classes, float* fscratch) {
    float m = -__uint_as_float(0x7f800000u);
    for (u64 c = threadIdx.x; c < classes; c += blockDim.x) {
        float v = ld(row, c);
        m = (m != m || v != v) ? (m + v) : fmaxf(m, v);
    }
    m = block_max(m, fscratch);
    float s = 0.0f;
    for (u64 c = threadIdx.x; c < classes; c += blockDim.x) s += expf(ld(row, c) - m);
    s = block_sum<float>(s, fscratch);
    return m + logf(s);
}

template <typename T>
__device__ void xent_impl(const T* logits, const int* labels, float* losses, u64 classes, int ignore) {
    __shared__ float fscratch[256];
    u64 r = blockIdx.x;
    i64 cls = xent_class(labels[r], ignore, classes);
    if (cls == -1) {
        if (threadIdx.x == 0) losses[r] = 0.0f;
        return;
    }
    if (cls == -2) {
        if (threadIdx.x == 0) losses[r] = __uint_as_float(0x7fc00000u);
        return;
    }
    const T* row = logits + r * classes;
    float lse = row_lse(row, classes, fscratch);
    if (threadIdx.x == 0) losses[r] = lse - ld(row, (u64)cls);
}

template <typename T>
__device__ void xent_bwd_impl(const T* logits, const int* labels, T* dlogits, u64 classes, int ignore, float scale) {
    __shared__ float fscratch[256];
    u64 r = blockIdx.x;
    i64 cls = xent_class(labels[r], ignore, classes);
    T* drow = dlogits + r * classes;
    if (cls < 0) {
        float fillv = cls == -1 ? 0.0f : __uint_as_float(0x7fc00000u);
        for (u64 c = threadIdx.x; c < classes; c += blockDim.x) st(drow, c, fillv);
        return;
    }
    const T* row = logits + r * classes;
    float lse = row_lse(row, classes, fscratch);
    for (u64 c = threadIdx.x; c < classes; c += blockDim.x) {
        float p = expf(ld(row, c) - lse) * scale;
        st(drow, c, (i64)c == cls ? p - scale : p);
    }
}
#define DS_XENT(T, N)                                                                                         \
    extern "C" __global__ void ds_xent_##N(const T* logits, const int* labels, float* losses, u64 classes,     \
                                           int ignore) {                                                      \
        xent_impl<T>(logits, labels, losses, classes, ignore);                                                \
    }                                                                                                         \
    extern "C" __global__ void ds_xent_backward_##N(const T* logits, const int* labels, T* dlogits, u64 classes, \
                                                    int ignore, float scale) {                                \
        xent_bwd_impl<T>(logits, labels, dlogits, classes, ignore, scale);                                    \
    }
DS_FLOATS(DS_XENT)

// Embedding lookup: NaN rows for ids out of range.
template <typename T> __device__ void embedding_impl(const int* ids, const T* table, T* out, u64 n, u64 vocab, u64 dim) {
    GRID_LOOP(i, n * dim) {
        u64 t = i / dim, c = i % dim;
        int id = ids[t];
        out[i] = (id >= 0 && (u64)id < vocab) ? table[(u64)id * dim + c] : from_f32<T>(__uint_as_float(0x7fc00000u));
    }
}

// Embedding gradient: one block per distinct id; `order` lists the positions of each id in
// increasing order, `starts[k]..starts[k+1]` those of `uids[k]`, so sums run in position order.
template <typename T>
__device__ void embedding_bwd_impl(const u32* order, const u32* starts, const u32* uids, const T* dout, T* dtable,
                                   u64 dim, int acc) {
    u64 k = blockIdx.x;
    u64 row = uids[k];
    for (u64 c = threadIdx.x; c < dim; c += blockDim.x) {
        float s = 0.0f;
        for (u32 j = starts[k]; j < starts[k + 1]; j++) s += ld(dout, (u64)order[j] * dim + c);
        T* dst = dtable + row * dim;
        st(dst, c, acc ? ld(dst, c) + s : s);
    }
}
#define DS_EMB(T, N)                                                                                          \
    extern "C" __global__ void ds_embedding_##N(const int* ids, const T* table, T* out, u64 n, u64 vocab,      \
                                                u64 dim) {                                                    \
        embedding_impl<T>(ids, table, out, n, vocab, dim);                                                    \
    }                                                                                                         \
    extern "C" __global__ void ds_embedding_backward_##N(const u32* order, const u32* starts, const u32* uids, \
                                                         const T* dout, T* dtable, u64 dim, int acc) {         \
        embedding_bwd_impl<T>(order, starts, uids, dout, dtable, dim, acc);                                   \
    }
DS_FLOATS(DS_EMB)
