// Elementwise kernels and casts. Math in f32; stores round to nearest even.

template <typename T> __device__ void fill_impl(T* y, u64 n, float v) {
    T t = from_f32<T>(v);
    GRID_LOOP(i, n) y[i] = t;
}
#define DS_FILL(T, N) \
    extern "C" __global__ void ds_fill_##N(T* y, u64 n, float v) { fill_impl<T>(y, n, v); }
DS_FLOATS(DS_FILL)

extern "C" __global__ void ds_fill_i32(int* y, u64 n, int v) { GRID_LOOP(i, n) y[i] = v; }
extern "C" __global__ void ds_fill_u8(u8* y, u64 n, u32 v) { GRID_LOOP(i, n) y[i] = (u8)v; }

template <typename X, typename Y> __device__ void cast_impl(const X* x, Y* y, u64 n) {
    GRID_LOOP(i, n) st(y, i, ld(x, i));
}
#define DS_CAST(X, XN, Y, YN) \
    extern "C" __global__ void ds_cast_##XN##_##YN(const X* x, Y* y, u64 n) { cast_impl<X, Y>(x, y, n); }
DS_FLOATS2(DS_CAST)

template <typename T> __device__ void scale_impl(T* x, u64 n, float a) {
    GRID_LOOP(i, n) st(x, i, ld(x, i) * a);
}
#define DS_SCALE(T, N) \
    extern "C" __global__ void ds_scale_##N(T* x, u64 n, float a) { scale_impl<T>(x, n, a); }
DS_FLOATS(DS_SCALE)

template <typename X, typename Y> __device__ void axpy_impl(float a, const X* x, Y* y, u64 n) {
    GRID_LOOP(i, n) st(y, i, ld(y, i) + a * ld(x, i));
}
#define DS_AXPY(X, XN, Y, YN) \
    extern "C" __global__ void ds_axpy_##XN##_##YN(float a, const X* x, Y* y, u64 n) { axpy_impl<X, Y>(a, x, y, n); }
DS_FLOATS2(DS_AXPY)

template <typename T> __device__ void add_impl(const T* a, const T* b, T* y, u64 n) {
    GRID_LOOP(i, n) st(y, i, ld(a, i) + ld(b, i));
}
template <typename T> __device__ void mul_impl(const T* a, const T* b, T* y, u64 n) {
    GRID_LOOP(i, n) st(y, i, ld(a, i) * ld(b, i));
}
#define DS_BINARY(T, N) \
    extern "C" __global__ void ds_add_##N(const T* a, const T* b, T* y, u64 n) { add_impl<T>(a, b, y, n); } \
    extern "C" __global__ void ds_mul_##N(const T* a, const T* b, T* y, u64 n) { mul_impl<T>(a, b, y, n); }
DS_FLOATS(DS_BINARY)
