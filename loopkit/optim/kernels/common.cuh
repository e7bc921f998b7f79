// Shared by the fused optimizer kernels. Compiled by NVRTC with -DPARAM_KIND=0|1|2 (float32, bfloat16, float16)
// and no CUDA headers: conversions are written out so the sources need no include path at run time.
typedef unsigned short u16;
typedef long long i64;

__device__ __forceinline__ float bf16_to_float(u16 x) { return __int_as_float(((unsigned int)x) << 16); }
__device__ __forceinline__ u16 float_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40);  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);                                       // round to nearest even
    return (u16)(u >> 16);
}
__device__ __forceinline__ float f16_to_float(u16 x) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x)); return f; }
__device__ __forceinline__ u16 float_to_f16(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }

#if PARAM_KIND == 0
typedef float param_t;
__device__ __forceinline__ float load_p(const param_t* p, i64 i) { return p[i]; }
__device__ __forceinline__ void store_p(param_t* p, i64 i, float v) { p[i] = v; }
#elif PARAM_KIND == 1
typedef u16 param_t;
__device__ __forceinline__ float load_p(const param_t* p, i64 i) { return bf16_to_float(p[i]); }
__device__ __forceinline__ void store_p(param_t* p, i64 i, float v) { p[i] = float_to_bf16(v); }
#else
typedef u16 param_t;
__device__ __forceinline__ float load_p(const param_t* p, i64 i) { return f16_to_float(p[i]); }
__device__ __forceinline__ void store_p(param_t* p, i64 i, float v) { p[i] = float_to_f16(v); }
#endif
