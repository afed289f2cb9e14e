// Causal softmax attention over [b*h, s, d] rows, in the memory-lean form: the forward saves
// the per-query log-sum-exp, the backward recomputes probabilities from it. Scores are handled
// in tiles of blockDim keys held in shared memory, so any sequence length works.

template <typename T> __device__ __forceinline__ float dot_rows(const T* a, const T* b, u64 d) {
    float s = 0.0f;
    for (u64 c = 0; c < d; c++) s += ld(a, c) * ld(b, c);
    return s;
}

// One block per query row (blockIdx.x = bh * s + i); acc[d] lives in dynamic shared memory
// after the tile of probabilities.
template <typename T>
__device__ void attention_impl(const T* q, const T* k, const T* v, T* out, float* lse, u64 s, u64 d, float scale) {
    extern __shared__ float smem[];
    float* p = smem;                 // blockDim.x probabilities of the current tile
    float* acc = smem + blockDim.x;  // d accumulators
    __shared__ float fscratch[256];
    u64 row = blockIdx.x;
    u64 bh = row / s, i = row % s;
    const T* qi = q + row * d;
    const T* kb = k + bh * s * d;
    const T* vb = v + bh * s * d;
    // Pass 1: the maximum score.
    float m = -__uint_as_float(0x7f800000u);
    for (u64 j = threadIdx.x; j <= i; j += blockDim.x) {
        float sc = scale * dot_rows(qi, kb + j * d, d);
        m = (m != m || sc != sc) ? (m + sc) : fmaxf(m, sc);
    }
    m = block_max(m, fscratch);
    for (u64 c = threadIdx.x; c < d; c += blockDim.x) acc[c] = 0.0f;
    float total = 0.0f;
    // Pass 2: tiles of probabilities, accumulated into the output row.
    for (u64 j0 = 0; j0 <= i; j0 += blockDim.x) {
        u64 j = j0 + threadIdx.x;
        float pj = 0.0f;
        if (j <= i) pj = expf(scale * dot_rows(qi, kb + j * d, d) - m);
        p[threadIdx.x] = pj;
        total += pj;
        __syncthreads();
        u64 tile = (i - j0 + 1) < blockDim.x ? (i - j0 + 1) : blockDim.x;
        for (u64 c = threadIdx.x; c < d; c += blockDim.x) {
            float a = acc[c];
            for (u64 t = 0; t < tile; t++) a += p[t] * ld(vb + (j0 + t) * d, c);
            acc[c] = a;
        }
        __syncthreads();
    }
    total = block_sum<float>(total, fscratch);
    for (u64 c = threadIdx.x; c < d; c += blockDim.x) st(out + row * d, c, acc[c] / total);
    if (threadIdx.x == 0) lse[row] = m + logf(total);
}

// delta[row] = dout_row . out_row
template <typename T> __device__ void attention_delta_impl(const T* out, const T* dout, float* delta, u64 d) {
    __shared__ float fscratch[256];
    u64 row = blockIdx.x;
    float s = 0.0f;
    for (u64 c = threadIdx.x; c < d; c += blockDim.x) s += ld(out + row * d, c) * ld(dout + row * d, c);
    s = block_sum<float>(s, fscratch);
    if (threadIdx.x == 0) delta[row] = s;
}

// dq: one block per query row i, tiles over keys j <= i.
template <typename T>
__device__ void attention_dq_impl(const T* q, const T* k, const T* v, const float* lse, const float* delta,
                                  const T* dout, T* dq, u64 s, u64 d, float scale) {
    extern __shared__ float smem[];
    float* ds = smem;
    float* acc = smem + blockDim.x;
    u64 row = blockIdx.x;
    u64 bh = row / s, i = row % s;
    const T* qi = q + row * d;
    const T* doi = dout + row * d;
    const T* kb = k + bh * s * d;
    const T* vb = v + bh * s * d;
    for (u64 c = threadIdx.x; c < d; c += blockDim.x) acc[c] = 0.0f;
    for (u64 j0 = 0; j0 <= i; j0 += blockDim.x) {
        u64 j = j0 + threadIdx.x;
        float dsj = 0.0f;
        if (j <= i) {
            float pj = expf(scale * dot_rows(qi, kb + j * d, d) - lse[row]);
            dsj = pj * (dot_rows(doi, vb + j * d, d) - delta[row]);
        }
        ds[threadIdx.x] = dsj;
        __syncthreads();
        u64 tile = (i - j0 + 1) < blockDim.x ? (i - j0 + 1) : blockDim.x;
        for (u64 c = threadIdx.x; c < d; c += blockDim.x) {
            float a = acc[c];
            for (u64 t = 0; t < tile; t++) a += ds[t] * ld(kb + (j0 + t) * d, c);
            acc[c] = a;
        }
        __syncthreads();
    }
    for (u64 c = threadIdx.x; c < d; c += blockDim.x) st(dq + row * d, c, scale * acc[c]);
}

// dk and dv: one block per key row j, tiles over queries i >= j.
template <typename T>
__device__ void attention_dkv_impl(const T* q, const T* k, const T* v, const float* lse, const float* delta,
                                   const T* dout, T* dk, T* dv, u64 s, u64 d, float scale) {
    extern __shared__ float smem[];
    float* pr = smem;                         // blockDim.x probabilities
    float* ds = smem + blockDim.x;            // blockDim.x score gradients
    float* acc_k = smem + 2 * blockDim.x;     // d
    float* acc_v = smem + 2 * blockDim.x + d; // d
    u64 row = blockIdx.x;
    u64 bh = row / s, j = row % s;
    const T* kj = k + row * d;
    const T* vj = v + row * d;
    const T* qb = q + bh * s * d;
    const T* db = dout + bh * s * d;
    for (u64 c = threadIdx.x; c < d; c += blockDim.x) {
        acc_k[c] = 0.0f;
        acc_v[c] = 0.0f;
    }
    for (u64 i0 = j; i0 < s; i0 += blockDim.x) {
        u64 i = i0 + threadIdx.x;
        float p = 0.0f, dsv = 0.0f;
        if (i < s) {
            u64 qrow = bh * s + i;
            p = expf(scale * dot_rows(qb + i * d, kj, d) - lse[qrow]);
            dsv = p * (dot_rows(db + i * d, vj, d) - delta[qrow]);
        }
        pr[threadIdx.x] = p;
        ds[threadIdx.x] = dsv;
        __syncthreads();
        u64 tile = (s - i0) < blockDim.x ? (s - i0) : blockDim.x;
        for (u64 c = threadIdx.x; c < d; c += blockDim.x) {
            float ak = acc_k[c], av = acc_v[c];
            for (u64 t = 0; t < tile; t++) {
                ak += ds[t] * ld(qb + (i0 + t) * d, c);
                av += pr[t] * ld(db + (i0 + t) * d, c);
            }
            acc_k[c] = ak;
            acc_v[c] = av;
        }
        __syncthreads();
    }
    for (u64 c = threadIdx.x; c < d; c += blockDim.x) {
        st(dk + row * d, c, scale * acc_k[c]);
        st(dv + row * d, c, acc_v[c]);
    }
}

#define DS_ATTN(T, N)                                                                                           \
    extern "C" __global__ void ds_attention_##N(const T* q, const T* k, const T* v, T* out, float* lse, u64 s,   \
                                                u64 d, float scale) {                                           \
        attention_impl<T>(q, k, v, out, lse, s, d, scale);                                                      \
    }                                                                                                           \
    extern "C" __global__ void ds_attention_delta_##N(const T* out, const T* dout, float* delta, u64 d) {        \
        attention_delta_impl<T>(out, dout, delta, d);                                                           \
    }                                                                                                           \
    extern "C" __global__ void ds_attention_dq_##N(const T* q, const T* k, const T* v, const float* lse,         \
                                                   const float* delta, const T* dout, T* dq, u64 s, u64 d,       \
                                                   float scale) {                                               \
        attention_dq_impl<T>(q, k, v, lse, delta, dout, dq, s, d, scale);                                       \
    }                                                                                                           \
    extern "C" __global__ void ds_attention_dkv_##N(const T* q, const T* k, const T* v, const float* lse,        \
                                                    const float* delta, const T* dout, T* dk, T* dv, u64 s,      \
                                                    u64 d, float scale) {                                       \
        attention_dkv_impl<T>(q, k, v, lse, delta, dout, dk, dv, s, d, scale);                                  \
    }
DS_FLOATS(DS_ATTN)
