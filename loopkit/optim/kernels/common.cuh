// Shared by the fused optimizer kernels. Compiled by NVRTC with -DPARAM_KIND=0|1|2 (float32, bfloat16, float16)
// and no CUDA headers: conversions are written out so the sources need no include path at run time.
typedef unsigned short u16;
typedef long long i64;
typedef unsigned long long u64;

__device__ __forceinline__ float bf16_to_float(u16 x) { return __int_as_float(((unsigned int)x) << 16); }
__device__ __forceinline__ u16 float_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40);  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);                                       // round to nearest even
    return (u16)(u >> 16);
}
#ifndef LOOPKIT_HOST_EMULATION  // the tests' host prelude (tests/cuda_on_host.h) brings its own
__device__ __forceinline__ float f16_to_float(u16 x) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x)); return f; }
__device__ __forceinline__ u16 float_to_f16(float f) { u16 h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
#endif

// Four consecutive elements per memory access: 16 bytes of float32 state, 16 or 8 bytes of parameter.
#define VEC 4
// Vector groups each thread loads before it computes: more bytes in flight per thread hide DRAM latency.
// -DILP=n overrides it (the benchmark sweep compares values).
#ifndef ILP
#define ILP 2
#endif

// The vector accesses themselves, in PTX: the tensors' addresses come from a table, so the compiler cannot tell
// they are global memory (it emits generic accesses) nor always keep a 16-byte store whole (seen splitting one
// into four). Gradients, only read, take the read-only path (.nc). The tests' host prelude brings plain C++ ones.
#ifndef LOOPKIT_HOST_EMULATION
__device__ __forceinline__ float4 ld_v4(const float* a) {
    float4 q;
    asm("ld.global.v4.f32 {%0, %1, %2, %3}, [%4];" : "=f"(q.x), "=f"(q.y), "=f"(q.z), "=f"(q.w) : "l"(a));
    return q;
}
__device__ __forceinline__ float4 ld_v4_readonly(const float* a) {
    float4 q;
    asm("ld.global.nc.v4.f32 {%0, %1, %2, %3}, [%4];" : "=f"(q.x), "=f"(q.y), "=f"(q.z), "=f"(q.w) : "l"(a));
    return q;
}
__device__ __forceinline__ void st_v4(float* a, float4 q) {
    asm volatile("st.global.v4.f32 [%0], {%1, %2, %3, %4};" :: "l"(a), "f"(q.x), "f"(q.y), "f"(q.z), "f"(q.w) : "memory");
}
__device__ __forceinline__ uint2 ld_v2(const u16* a) {
    uint2 q;
    asm("ld.global.v2.u32 {%0, %1}, [%2];" : "=r"(q.x), "=r"(q.y) : "l"(a));
    return q;
}
__device__ __forceinline__ uint2 ld_v2_readonly(const u16* a) {
    uint2 q;
    asm("ld.global.nc.v2.u32 {%0, %1}, [%2];" : "=r"(q.x), "=r"(q.y) : "l"(a));
    return q;
}
__device__ __forceinline__ void st_v2(u16* a, uint2 q) {
    asm volatile("st.global.v2.u32 [%0], {%1, %2};" :: "l"(a), "r"(q.x), "r"(q.y) : "memory");
}
#endif

__device__ __forceinline__ void unpack4(float4 q, float r[VEC]) { r[0] = q.x; r[1] = q.y; r[2] = q.z; r[3] = q.w; }
__device__ __forceinline__ float4 pack4(const float r[VEC]) { float4 q; q.x = r[0]; q.y = r[1]; q.z = r[2]; q.w = r[3]; return q; }
__device__ __forceinline__ void load4(const float* a, i64 i, float r[VEC]) { unpack4(ld_v4(a + i), r); }
__device__ __forceinline__ void store4(float* a, i64 i, const float r[VEC]) { st_v4(a + i, pack4(r)); }

#if PARAM_KIND == 0
typedef float param_t;
__device__ __forceinline__ float load_p(const param_t* p, i64 i) { return p[i]; }
__device__ __forceinline__ void store_p(param_t* p, i64 i, float v) { p[i] = v; }
__device__ __forceinline__ void load4_p(const param_t* p, i64 i, float r[VEC]) { load4(p, i, r); }
__device__ __forceinline__ void load4_grad(const param_t* g, i64 i, float r[VEC]) { unpack4(ld_v4_readonly(g + i), r); }
__device__ __forceinline__ void store4_p(param_t* p, i64 i, const float r[VEC]) { store4(p, i, r); }
#else
typedef u16 param_t;
#if PARAM_KIND == 1
__device__ __forceinline__ float widen(u16 x) { return bf16_to_float(x); }
__device__ __forceinline__ u16 narrow(float f) { return float_to_bf16(f); }
#else
__device__ __forceinline__ float widen(u16 x) { return f16_to_float(x); }
__device__ __forceinline__ u16 narrow(float f) { return float_to_f16(f); }
#endif
__device__ __forceinline__ float load_p(const param_t* p, i64 i) { return widen(p[i]); }
__device__ __forceinline__ void store_p(param_t* p, i64 i, float v) { p[i] = narrow(v); }
// Element i sits in the low half of the first word (little-endian, as on every CUDA device and x86 host).
__device__ __forceinline__ void widen4(uint2 q, float r[VEC]) {
    r[0] = widen((u16)(q.x & 0xffffu)); r[1] = widen((u16)(q.x >> 16));
    r[2] = widen((u16)(q.y & 0xffffu)); r[3] = widen((u16)(q.y >> 16));
}
__device__ __forceinline__ void load4_p(const param_t* p, i64 i, float r[VEC]) { widen4(ld_v2(p + i), r); }
__device__ __forceinline__ void load4_grad(const param_t* g, i64 i, float r[VEC]) { widen4(ld_v2_readonly(g + i), r); }
__device__ __forceinline__ void store4_p(param_t* p, i64 i, const float r[VEC]) {
    uint2 q;
    q.x = (unsigned int)narrow(r[0]) | ((unsigned int)narrow(r[1]) << 16);
    q.y = (unsigned int)narrow(r[2]) | ((unsigned int)narrow(r[3]) << 16);
    st_v2(p + i, q);
}
#endif

// The [start, end) range of tensor t's elements that thread block blockIdx.x owns: one chunk of one tensor.
// chunks is [n_chunks, 2] int32 (tensor index, chunk index within the tensor).
__device__ __forceinline__ int chunk_range(const int* chunks, const i64* numels, int chunk_size, i64& start, i64& end) {
    const int t = chunks[2 * blockIdx.x];
    start = (i64)chunks[2 * blockIdx.x + 1] * chunk_size;
    end = start + (i64)chunk_size < numels[t] ? start + (i64)chunk_size : numels[t];
    return t;
}

// Calls update(param, grad, state0, state1) (all float, the last three by reference except grad) for every
// element of [start, end), with STATES (0, 1 or 2) float32 state tensors s0, s1; the others are never touched.
// When every pointer allows it (the usual case: the caching allocator aligns tensors to 512 bytes and chunks
// start at multiples of VEC) it moves VEC elements per access, ILP groups in flight per thread; otherwise, and
// for the last (end - start) mod VEC elements, one at a time.
template <int STATES, typename Update>
__device__ __forceinline__ void update_chunk(param_t* __restrict__ p, const param_t* __restrict__ g,
                                             float* __restrict__ s0, float* __restrict__ s1, i64 start, i64 end,
                                             Update update) {
    const u64 misaligned = (((u64)(p + start) | (u64)(g + start)) % (VEC * sizeof(param_t)))
                         | (((STATES >= 1 ? (u64)(s0 + start) : 0ull) | (STATES >= 2 ? (u64)(s1 + start) : 0ull))
                            % (VEC * sizeof(float)));
    const i64 vector_end = misaligned ? start : start + (end - start) / VEC * VEC;
    const i64 stride = (i64)blockDim.x * VEC;
    for (i64 base = start + (i64)threadIdx.x * VEC; base < vector_end; base += stride * ILP) {
        float pr[ILP][VEC], gr[ILP][VEC], a[ILP][VEC] = {}, b[ILP][VEC] = {};
#pragma unroll
        for (int j = 0; j < ILP; ++j) {
            const i64 i = base + j * stride;
            if (i < vector_end) {
                load4_p(p, i, pr[j]); load4_grad(g, i, gr[j]);
                if (STATES >= 1) load4(s0, i, a[j]);
                if (STATES >= 2) load4(s1, i, b[j]);
            }
        }
#pragma unroll
        for (int j = 0; j < ILP; ++j) {
            const i64 i = base + j * stride;
            if (i < vector_end) {
#pragma unroll
                for (int k = 0; k < VEC; ++k) update(pr[j][k], gr[j][k], a[j][k], b[j][k]);
                store4_p(p, i, pr[j]);
                if (STATES >= 1) store4(s0, i, a[j]);
                if (STATES >= 2) store4(s1, i, b[j]);
            }
        }
    }
    for (i64 i = vector_end + threadIdx.x; i < end; i += blockDim.x) {
        float param = load_p(p, i), a = STATES >= 1 ? s0[i] : 0.0f, b = STATES >= 2 ? s1[i] : 0.0f;
        update(param, load_p(g, i), a, b);
        store_p(p, i, param);
        if (STATES >= 1) s0[i] = a;
        if (STATES >= 2) s1[i] = b;
    }
}
