// Reductions. Sums run in two launches: each block folds a fixed grid-stride share into one
// f64 partial, then one block adds the partials in order, so the result does not depend on
// scheduling and keeps its precision over billions of elements.

template <typename T> __device__ void sum_partials_impl(const T* x, u64 n, double* partials, int square) {
    __shared__ double scratch[256];
    float acc = 0.0f;
    GRID_LOOP(i, n) {
        float v = ld(x, i);
        acc += square ? v * v : v;
    }
    double total = block_sum<double>((double)acc, scratch);
    if (threadIdx.x == 0) partials[blockIdx.x] = total;
}
#define DS_SUM(T, N) \
    extern "C" __global__ void ds_sum_partials_##N(const T* x, u64 n, double* partials, int square) { \
        sum_partials_impl<T>(x, n, partials, square); \
    }
DS_FLOATS(DS_SUM)

// One block of 256 threads: out[k] = sum of partials[k * count .. (k+1) * count] for k < outs,
// each strided share summed in order, then a fixed tree.
extern "C" __global__ void ds_sum_finalize(const double* partials, u32 count, float* out, u32 outs) {
    __shared__ double scratch[256];
    for (u32 k = 0; k < outs; k++) {
        double acc = 0.0;
        for (u32 i = threadIdx.x; i < count; i += blockDim.x) acc += partials[(u64)k * count + i];
        double total = block_sum<double>(acc, scratch);
        if (threadIdx.x == 0) out[k] = (float)total;
    }
}

__device__ __forceinline__ void raise_flag(void* flag, int flag_u8) {
    if (flag_u8) {
        *(u8*)flag = 1;
    } else {
        *(float*)flag = 1.0f;
    }
}

template <typename T> __device__ void non_finite_impl(const T* x, u64 n, void* flag, int flag_u8) {
    bool bad = false;
    GRID_LOOP(i, n) bad |= !finite_f32(ld(x, i));
    if (bad) raise_flag(flag, flag_u8);  // every writer writes the same value
}
#define DS_NONFINITE(T, N) \
    extern "C" __global__ void ds_non_finite_##N(const T* x, u64 n, void* flag, int flag_u8) { \
        non_finite_impl<T>(x, n, flag, flag_u8); \
    }
DS_FLOATS(DS_NONFINITE)

// x *= inv_scale, stored in x's type; the flag is raised when a stored value is inf or NaN.
template <typename T> __device__ void unscale_impl(T* x, u64 n, float inv_scale, void* flag, int flag_u8) {
    bool bad = false;
    GRID_LOOP(i, n) {
        T s = from_f32<T>(ld(x, i) * inv_scale);
        x[i] = s;
        bad |= !finite_f32(to_f32(s));
    }
    if (bad) raise_flag(flag, flag_u8);
}
#define DS_UNSCALE(T, N) \
    extern "C" __global__ void ds_unscale_##N(T* x, u64 n, float inv_scale, void* flag, int flag_u8) { \
        unscale_impl<T>(x, n, inv_scale, flag, flag_u8); \
    }
DS_FLOATS(DS_UNSCALE)
