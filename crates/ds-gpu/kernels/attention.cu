// Causal softmax attention on token-major [b, s, h, d] tensors (lse is [b, h, s]), in the
// memory-lean form: the forward saves the per-query log-sum-exp, the backward recomputes
// probabilities from it. Scores are handled in tiles of blockDim keys held in shared memory, so
// any sequence length works. Rows are numbered in lse order (row = (b * h + head) * s + i).

// Offset of a row's d elements in the token-major tensors.
__device__ __forceinline__ u64 tok(u64 row, u64 s, u64 h, u64 d) {
    u64 bh = row / s, i = row % s;
    return (((bh / h) * s + i) * h + bh % h) * d;
}

template <typename T> __device__ __forceinline__ float dot_rows(const T* a, const T* b, u64 d) {
    float s = 0.0f;
    for (u64 c = 0; c < d; c++) s += ld(a, c) * ld(b, c);
    return s;
}

// One block per query row (blockIdx.x = bh * s + i); acc[d] lives in dynamic shared memory
// after the tile of probabilities.
template <typename T>
__device__ void attention_impl(const T* q, const T* k, const T* v, T* out, float* lse, u64 s, u64 h, u64 d,
                               float scale) {
    extern __shared__ float smem[];
    float* p = smem;                 // blockDim.x probabilities of the current tile
    float* acc = smem + blockDim.x;  // d accumulators
    __shared__ float fscratch[256];
    u64 row = blockIdx.x;
    u64 bh = row / s, i = row % s;
    const T* qi = q + tok(row, s, h, d);
    // Pass 1: the maximum score.
    float m = -__uint_as_float(0x7f800000u);
    for (u64 j = threadIdx.x; j <= i; j += blockDim.x) {
        float sc = scale * dot_rows(qi, k + tok(bh * s + j, s, h, d), d);
        m = (m != m || sc != sc) ? (m + sc) : fmaxf(m, sc);
    }
    m = block_max(m, fscratch);
    for (u64 c = threadIdx.x; c < d; c += blockDim.x) acc[c] = 0.0f;
    float total = 0.0f;
    // Pass 2: tiles of probabilities, accumulated into the output row.
    for (u64 j0 = 0; j0 <= i; j0 += blockDim.x) {
        u64 j = j0 + threadIdx.x;
        float pj = 0.0f;
        if (j <= i) pj = expf(scale * dot_rows(qi, k + tok(bh * s + j, s, h, d), d) - m);
        p[threadIdx.x] = pj;
        total += pj;
        __syncthreads();
        u64 tile = (i - j0 + 1) < blockDim.x ? (i - j0 + 1) : blockDim.x;
        for (u64 c = threadIdx.x; c < d; c += blockDim.x) {
            float a = acc[c];
            for (u64 t = 0; t < tile; t++) a += p[t] * ld(v + tok(bh * s + j0 + t, s, h, d), c);
            acc[c] = a;
        }
        __syncthreads();
    }
    total = block_sum<float>(total, fscratch);
    for (u64 c = threadIdx.x; c < d; c += blockDim.x) st(out + tok(row, s, h, d), c, acc[c] / total);
    if (threadIdx.x == 0) lse[row] = m + logf(total);
}

// delta[row] = dout_row . out_row
template <typename T>
__device__ void attention_delta_impl(const T* out, const T* dout, float* delta, u64 s, u64 h, u64 d) {
    __shared__ float fscratch[256];
    u64 row = blockIdx.x;
    u64 at = tok(row, s, h, d);
    float acc = 0.0f;
    for (u64 c = threadIdx.x; c < d; c += blockDim.x) acc += ld(out + at, c) * ld(dout + at, c);
    acc = block_sum<float>(acc, fscratch);
    if (threadIdx.x == 0) delta[row] = acc;
}

// dq: one block per query row i, tiles over keys j <= i.
template <typename T>
__device__ void attention_dq_impl(const T* q, const T* k, const T* v, const float* lse, const float* delta,
                                  const T* dout, T* dq, u64 s, u64 h, u64 d, float scale) {
    extern __shared__ float smem[];
    float* ds = smem;
    float* acc = smem + blockDim.x;
    u64 row = blockIdx.x;
    u64 bh = row / s, i = row % s;
    const T* qi = q + tok(row, s, h, d);
    const T* doi = dout + tok(row, s, h, d);
    for (u64 c = threadIdx.x; c < d; c += blockDim.x) acc[c] = 0.0f;
    for (u64 j0 = 0; j0 <= i; j0 += blockDim.x) {
        u64 j = j0 + threadIdx.x;
        float dsj = 0.0f;
        if (j <= i) {
            float pj = expf(scale * dot_rows(qi, k + tok(bh * s + j, s, h, d), d) - lse[row]);
            dsj = pj * (dot_rows(doi, v + tok(bh * s + j, s, h, d), d) - delta[row]);
        }
        ds[threadIdx.x] = dsj;
        __syncthreads();
        u64 tile = (i - j0 + 1) < blockDim.x ? (i - j0 + 1) : blockDim.x;
        for (u64 c = threadIdx.x; c < d; c += blockDim.x) {
            float a = acc[c];
            for (u64 t = 0; t < tile; t++) a += ds[t] * ld(k + tok(bh * s + j0 + t, s, h, d), c);
            acc[c] = a;
        }
        __syncthreads();
    }
    for (u64 c = threadIdx.x; c < d; c += blockDim.x) st(dq + tok(row, s, h, d), c, scale * acc[c]);
}

// dk and dv: one block per key row j, tiles over queries i >= j.
template <typename T>
__device__ void attention_dkv_impl(const T* q, const T* k, const T* v, const float* lse, const float* delta,
                                   const T* dout, T* dk, T* dv, u64 s, u64 h, u64 d, float scale) {
    extern __shared__ float smem[];
    float* pr = smem;                         // blockDim.x probabilities
    float* ds = smem + blockDim.x;            // blockDim.x score gradients
    float* acc_k = smem + 2 * blockDim.x;     // d
    float* acc_v = smem + 2 * blockDim.x + d; // d
    u64 row = blockIdx.x;
    u64 bh = row / s, j = row % s;
    const T* kj = k + tok(row, s, h, d);
    const T* vj = v + tok(row, s, h, d);
    for (u64 c = threadIdx.x; c < d; c += blockDim.x) {
        acc_k[c] = 0.0f;
        acc_v[c] = 0.0f;
    }
    for (u64 i0 = j; i0 < s; i0 += blockDim.x) {
        u64 i = i0 + threadIdx.x;
        float p = 0.0f, dsv = 0.0f;
        if (i < s) {
            u64 qrow = bh * s + i;
            p = expf(scale * dot_rows(q + tok(qrow, s, h, d), kj, d) - lse[qrow]);
            dsv = p * (dot_rows(dout + tok(qrow, s, h, d), vj, d) - delta[qrow]);
        }
        pr[threadIdx.x] = p;
        ds[threadIdx.x] = dsv;
        __syncthreads();
        u64 tile = (s - i0) < blockDim.x ? (s - i0) : blockDim.x;
        for (u64 c = threadIdx.x; c < d; c += blockDim.x) {
            float ak = acc_k[c], av = acc_v[c];
            for (u64 t = 0; t < tile; t++) {
                u64 at = tok(bh * s + i0 + t, s, h, d);
                ak += ds[t] * ld(q + at, c);
                av += pr[t] * ld(dout + at, c);
            }
            acc_k[c] = ak;
            acc_v[c] = av;
        }
        __syncthreads();
    }
    for (u64 c = threadIdx.x; c < d; c += blockDim.x) {
        st(dk + tok(row, s, h, d), c, scale * acc_k[c]);
        st(dv + tok(row, s, h, d), c, acc_v[c]);
    }
}

#define DS_ATTN(T, N)                                                                                          \
    extern "C" __global__ void ds_attention_##N(const T* q, const T* k, const T* v, T* out, float* lse, u64 s,  \
                                                u64 h, u64 d, float scale) {                                   \
        attention_impl<T>(q, k, v, out, lse, s, h, d, scale);                                                  \
    }                                                                                                          \
    extern "C" __global__ void ds_attention_delta_##N(const T* out, const T* dout, float* delta, u64 s, u64 h, \
                                                      u64 d) {                                                 \
        attention_delta_impl<T>(out, dout, delta, s, h, d);                                                    \
    }                                                                                                          \
    extern "C" __global__ void ds_attention_dq_##N(const T* q, const T* k, const T* v, const float* lse,        \
                                                   const float* delta, const T* dout, T* dq, u64 s, u64 h,      \
                                                   u64 d, float scale) {                                       \
        attention_dq_impl<T>(q, k, v, lse, delta, dout, dq, s, h, d, scale);                                   \
    }                                                                                                          \
    extern "C" __global__ void ds_attention_dkv_##N(const T* q, const T* k, const T* v, const float* lse,       \
                                                    const float* delta, const T* dout, T* dk, T* dv, u64 s,     \
                                                    u64 h, u64 d, float scale) {                               \
        attention_dkv_impl<T>(q, k, v, lse, delta, dout, dk, dv, s, h, d, scale);                              \
    }
DS_FLOATS(DS_ATTN)
