// Fused optimizer steps over fp32 master weights, one pass over memory, with an optional weight
// copy (any float type) written in the same pass. `copy` may be null. Each thread keeps four
// elements in flight (grid-stride, unrolled by hand) so the loads saturate memory bandwidth.

#define UNROLL4(i, n, BODY)                                                       \
    {                                                                             \
        u64 stride_ = (u64)blockDim.x * gridDim.x;                                \
        u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;                       \
        for (; i + 3 * stride_ < (u64)(n); i += 4 * stride_) {                    \
            { BODY } i += stride_; { BODY } i += stride_; { BODY } i += stride_; { BODY } \
            i -= 3 * stride_;                                                     \
        }                                                                         \
        for (; i < (u64)(n); i += stride_) { BODY }                               \
    }

template <typename G, typename C>
__device__ void adam_impl(float* p, const G* g, float* m, float* v, C* copy, u64 n, float b1, float c1,
                          float b2, float c2, float eps, float step_size, float inv_sqrt_bc2, float decay,
                          float l2, float gs) {
    UNROLL4(i, n, {
        float pi = p[i];
        float gi = ld(g, i) * gs + l2 * pi;
        float mi = b1 * m[i] + c1 * gi;
        float vi = b2 * v[i] + c2 * (gi * gi);
        float denom = sqrtf(vi) * inv_sqrt_bc2 + eps;
        float pn = pi * decay - step_size * (mi / denom);
        p[i] = pn;
        m[i] = mi;
        v[i] = vi;
        if (copy) st(copy, i, pn);
    })
}
#define DS_ADAM(G, GN, C, CN)                                                                            \
    extern "C" __global__ void ds_adam_##GN##_##CN(float* p, const G* g, float* m, float* v, C* copy, u64 n, \
                                                   float b1, float c1, float b2, float c2, float eps,        \
                                                   float step_size, float inv_sqrt_bc2, float decay, float l2, \
                                                   float gs) {                                                \
        adam_impl<G, C>(p, g, m, v, copy, n, b1, c1, b2, c2, eps, step_size, inv_sqrt_bc2, decay, l2, gs); \
    }
DS_FLOATS2(DS_ADAM)

template <typename G, typename C>
__device__ void sgd_impl(float* p, const G* g, float* buf, C* copy, u64 n, float lr, float mu, float keep,
                         float wd, int nesterov, int first, float gs) {
    GRID_LOOP(i, n) {
        float pi = p[i];
        float d = ld(g, i) * gs + wd * pi;
        if (buf) {
            float b = first ? d : mu * buf[i] + keep * d;
            buf[i] = b;
            d = nesterov ? d + mu * b : b;
        }
        float pn = pi - lr * d;
        p[i] = pn;
        if (copy) st(copy, i, pn);
    }
}
#define DS_SGD(G, GN, C, CN)                                                                                  \
    extern "C" __global__ void ds_sgd_##GN##_##CN(float* p, const G* g, float* buf, C* copy, u64 n, float lr, \
                                                  float mu, float keep, float wd, int nesterov, int first,    \
                                                  float gs) {                                                 \
        sgd_impl<G, C>(p, g, buf, copy, n, lr, mu, keep, wd, nesterov, first, gs);                            \
    }
DS_FLOATS2(DS_SGD)

// Adagrad, DeepSpeedCPUAdagrad's update: the sum of squares sees the decayed gradient, the
// numerator the gradient alone.
template <typename G, typename C>
__device__ void adagrad_impl(float* p, const G* g, float* v, C* copy, u64 n, float lr, float eps, float wd,
                             float gs) {
    UNROLL4(i, n, {
        float pi = p[i];
        float gi = ld(g, i) * gs;
        float decayed = gi + wd * pi;
        float vi = v[i] + decayed * decayed;
        float pn = pi - lr * (gi / (sqrtf(vi) + eps));
        p[i] = pn;
        v[i] = vi;
        if (copy) st(copy, i, pn);
    })
}
#define DS_ADAGRAD(G, GN, C, CN)                                                                         \
    extern "C" __global__ void ds_adagrad_##GN##_##CN(float* p, const G* g, float* v, C* copy, u64 n,     \
                                                      float lr, float eps, float wd, float gs) {          \
        adagrad_impl<G, C>(p, g, v, copy, n, lr, eps, wd, gs);                                          \
    }
DS_FLOATS2(DS_ADAGRAD)

// Lion: sign(c) is 0 at 0 and NaN for a non-finite c (ds_core::params::lion_sign).
template <typename G, typename C>
__device__ void lion_impl(float* p, const G* g, float* m, C* copy, u64 n, float lr, float b1, float c1,
                          float b2, float c2, float decay, float gs) {
    UNROLL4(i, n, {
        float gi = ld(g, i) * gs;
        float mi = m[i];
        float c = b1 * mi + c1 * gi;
        float s = (float)(c > 0.0f) - (float)(c < 0.0f) + c * 0.0f;
        float pn = p[i] * decay - lr * s;
        p[i] = pn;
        m[i] = b2 * mi + c2 * gi;
        if (copy) st(copy, i, pn);
    })
}
#define DS_LION(G, GN, C, CN)                                                                            \
    extern "C" __global__ void ds_lion_##GN##_##CN(float* p, const G* g, float* m, C* copy, u64 n, float lr, \
                                                   float b1, float c1, float b2, float c2, float decay,    \
                                                   float gs) {                                             \
        lion_impl<G, C>(p, g, m, copy, n, lr, b1, c1, b2, c2, decay, gs);                                  \
    }
DS_FLOATS2(DS_LION)

// Lamb's first pass: moments, and per-block partial sums of p^2 and u^2 (f64), written to
// partials[block] and partials[gridDim + block]; ds_sum_finalize turns them into norms[2].
template <typename G>
__device__ void lamb_moments_impl(const float* p, const G* g, float* m, float* v, u64 n, float b1, float b2,
                                  float eps, float wd, double* partials, float gs) {
    __shared__ double scratch[256];
    float psq = 0.0f, usq = 0.0f;
    GRID_LOOP(i, n) {
        float gi = ld(g, i) * gs;
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        float pi = p[i];
        float u = mi / (sqrtf(vi) + eps) + wd * pi;
        psq += pi * pi;
        usq += u * u;
    }
    double a = block_sum<double>((double)psq, scratch);
    double b = block_sum<double>((double)usq, scratch);
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = a;
        partials[gridDim.x + blockIdx.x] = b;
    }
}
#define DS_LAMB_MOMENTS(G, GN)                                                                               \
    extern "C" __global__ void ds_lamb_moments_##GN(const float* p, const G* g, float* m, float* v, u64 n,   \
                                                    float b1, float b2, float eps, float wd, double* partials,  \
                                                    float gs) {                                                  \
        lamb_moments_impl<G>(p, g, m, v, n, b1, b2, eps, wd, partials, gs);                                  \
    }
DS_FLOATS(DS_LAMB_MOMENTS)

// The trust ratio exactly as the host's LambParams::trust_ratio computes it.
__device__ __forceinline__ float lamb_trust(float p_sq, float u_sq, float min_coeff, float max_coeff) {
    float pn = sqrtf(p_sq), un = sqrtf(u_sq);
    if (pn == 0.0f || un == 0.0f || !finite_f32(pn) || !finite_f32(un)) {
        if (pn != pn || un != un) return pn + un;  // NaN
        return 1.0f;
    }
    return fminf(fmaxf(pn / un, min_coeff), max_coeff);
}

template <typename C>
__device__ void lamb_apply_impl(float* p, const float* m, const float* v, const float* norms, C* copy, u64 n,
                                float eps, float wd, float step_size, float min_coeff, float max_coeff) {
    float scale = step_size * lamb_trust(norms[0], norms[1], min_coeff, max_coeff);
    GRID_LOOP(i, n) {
        float pi = p[i];
        float u = m[i] / (sqrtf(v[i]) + eps) + wd * pi;
        float pn = pi - scale * u;
        p[i] = pn;
        if (copy) st(copy, i, pn);
    }
}
#define DS_LAMB_APPLY(C, CN)                                                                                 \
    extern "C" __global__ void ds_lamb_apply_##CN(float* p, const float* m, const float* v, const float* norms, \
                                                  C* copy, u64 n, float eps, float wd, float step_size,        \
                                                  float min_coeff, float max_coeff) {                          \
        lamb_apply_impl<C>(p, m, v, norms, copy, n, eps, wd, step_size, min_coeff, max_coeff);                 \
    }
DS_FLOATS(DS_LAMB_APPLY)
