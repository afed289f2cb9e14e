// Shared definitions of ds's GPU kernels: storage types, conversions, indexing, reductions.
// Dialect: the common subset of CUDA and HIP compiled at run time (NVRTC / hiprtc).

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

// 16-bit float storage as plain bits: no cuda_fp16.h / hip_fp16.h needed, identical on both.
struct f16 { u16 b; };
struct bf16 { u16 b; };

__device__ __forceinline__ float to_f32(float x) { return x; }

__device__ __forceinline__ float to_f32(bf16 x) { return __uint_as_float(((u32)x.b) << 16); }

__device__ __forceinline__ float to_f32(f16 x) {
    u32 h = x.b;
    u32 sign = (h & 0x8000u) << 16;
    u32 exp = (h >> 10) & 0x1fu;
    u32 mant = h & 0x3ffu;
    if (exp == 0u) {
        // zero or subnormal: mant * 2^-24, exact in f32
        float v = (float)mant * 5.9604644775390625e-8f;
        return __uint_as_float(__float_as_uint(v) | sign);
    }
    if (exp == 31u) return __uint_as_float(sign | 0x7f800000u | (mant << 13));
    return __uint_as_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

template <typename T> __device__ __forceinline__ T from_f32(float x);

template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }

// Round to nearest even; NaN stays a (quiet) NaN.
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) {
    u32 b = __float_as_uint(x);
    bf16 r;
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        r.b = (u16)((b >> 16) | 0x40u);
    } else {
        r.b = (u16)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
    }
    return r;
}

// Round to nearest even, overflow to infinity, subnormals exact; NaN stays a (quiet) NaN.
template <> __device__ __forceinline__ f16 from_f32<f16>(float x) {
    u32 b = __float_as_uint(x);
    u32 sign = (b >> 16) & 0x8000u;
    u32 a = b & 0x7fffffffu;
    f16 r;
    if (a > 0x7f800000u) {
        r.b = (u16)(sign | 0x7e00u);
    } else if (a >= 0x477ff000u) {  // >= 65520 rounds to infinity
        r.b = (u16)(sign | 0x7c00u);
    } else if (a < 0x38800000u) {   // below 2^-14: a subnormal half (or zero)
        float v = __uint_as_float(a) * 16777216.0f;  // exact scaling by 2^24
        r.b = (u16)(sign | (u32)rintf(v));           // rintf rounds half to even
    } else {
        u32 rounded = a - 0x38000000u + 0x0fffu + ((a >> 13) & 1u);
        r.b = (u16)(sign | (rounded >> 13));
    }
    return r;
}

// Loads and stores through f32.
template <typename T> __device__ __forceinline__ float ld(const T* p, u64 i) { return to_f32(p[i]); }
template <typename T> __device__ __forceinline__ void st(T* p, u64 i, float v) { p[i] = from_f32<T>(v); }

// A grid-stride loop over [0, n).
#define GRID_LOOP(i, n) \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (u64)(n); i += (u64)blockDim.x * gridDim.x)

// Block-wide sum of one value per thread (blockDim.x a power of two, at most 1024); every
// thread gets the result. `scratch` holds blockDim.x elements of shared memory.
template <typename A> __device__ __forceinline__ A block_sum(A v, A* scratch) {
    scratch[threadIdx.x] = v;
    __syncthreads();
    for (u32 s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) scratch[threadIdx.x] += scratch[threadIdx.x + s];
        __syncthreads();
    }
    A r = scratch[0];
    __syncthreads();
    return r;
}

// Block-wide maximum, NaN winning.
__device__ __forceinline__ float block_max(float v, float* scratch) {
    scratch[threadIdx.x] = v;
    __syncthreads();
    for (u32 s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            float a = scratch[threadIdx.x], b = scratch[threadIdx.x + s];
            scratch[threadIdx.x] = (a != a || b != b) ? (a + b) : fmaxf(a, b);
        }
        __syncthreads();
    }
    float r = scratch[0];
    __syncthreads();
    return r;
}

__device__ __forceinline__ bool finite_f32(float v) { return fabsf(v) <= 3.402823466e38f; }

// The instantiation lists: one entry per float storage type (C type, name suffix).
#define DS_FLOATS(M) M(float, f32) M(f16, f16) M(bf16, bf16)
#define DS_FLOATS2(M) \
    M(float, f32, float, f32) M(float, f32, f16, f16) M(float, f32, bf16, bf16) \
    M(f16, f16, float, f32) M(f16, f16, f16, f16) M(f16, f16, bf16, bf16) \
    M(bf16, bf16, float, f32) M(bf16, bf16, f16, f16) M(bf16, bf16, bf16, bf16)
