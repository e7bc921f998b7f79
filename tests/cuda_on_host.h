// Prelude that lets loopkit's CUDA kernels compile as plain C++ and run on the host, one simulated thread at a
// time, so that a machine without a GPU (CI) still checks their arithmetic, indexing, vector/scalar paths and
// launch arguments against torch.optim. Running threads one after another is exact for these kernels because
// their threads share nothing: no shared memory, no barriers, no warp intrinsics, and each element is written
// by exactly one thread. What it cannot check: timing, memory coalescing, the GPU's own float rounding of
// powf/sqrtf (covered by the tolerances) and the driver's launch path (the GPU tests do that).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#define LOOPKIT_HOST_EMULATION 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict

struct loopkit_dim3 { unsigned x = 0, y = 0, z = 0; };
static loopkit_dim3 blockIdx, threadIdx, blockDim, gridDim;

struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) uint2 { unsigned x, y; };

inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, sizeof f); return f; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, sizeof u); return u; }
// IEEE half conversions; the GPU uses cvt.f32.f16 / cvt.rn.f16.f32, which are the same correctly rounded maps.
inline float f16_to_float(unsigned short x) { _Float16 h; std::memcpy(&h, &x, sizeof h); return (float)h; }
inline unsigned short float_to_f16(float f) { _Float16 h = (_Float16)f; unsigned short x; std::memcpy(&x, &h, sizeof x); return x; }

// The kernels' vector accesses (PTX on the GPU). A misaligned one would fault on the GPU: it is counted, and the
// launcher raises. The access count lets the tests see that the fast path is the one taken.
static unsigned long long loopkit_vector_accesses = 0, loopkit_misaligned = 0;
template <typename T> inline void loopkit_count(const void* a) {
    ++loopkit_vector_accesses;
    if (reinterpret_cast<std::uintptr_t>(a) % sizeof(T)) ++loopkit_misaligned;
}
template <typename T, typename E> inline T loopkit_load(const E* a) { loopkit_count<T>(a); T q; std::memcpy(&q, a, sizeof q); return q; }
template <typename T, typename E> inline void loopkit_store(E* a, T q) { loopkit_count<T>(a); std::memcpy(a, &q, sizeof q); }
inline float4 ld_v4(const float* a) { return loopkit_load<float4>(a); }
inline float4 ld_v4_readonly(const float* a) { return loopkit_load<float4>(a); }
inline void st_v4(float* a, float4 q) { loopkit_store(a, q); }
inline uint2 ld_v2(const unsigned short* a) { return loopkit_load<uint2>(a); }
inline uint2 ld_v2_readonly(const unsigned short* a) { return loopkit_load<uint2>(a); }
inline void st_v2(unsigned short* a, uint2 q) { loopkit_store(a, q); }

// Calls kernel(*args[0], *args[1], ...) with cuLaunchKernel's argument convention: args[i] points at argument i.
template <typename... A, std::size_t... I>
static void loopkit_call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

template <typename... A>
static void loopkit_launch(void (*kernel)(A...), unsigned grid, unsigned block, void** args) {
    gridDim.x = grid;
    blockDim.x = block;
    for (unsigned b = 0; b < grid; ++b) {
        blockIdx.x = b;
        for (unsigned t = 0; t < block; ++t) {
            threadIdx.x = t;
            loopkit_call(kernel, args, std::index_sequence_for<A...>{});
        }
    }
}

// The kernel's parameter types as the compiler sees them ("... [with A = {const long long int*, int}]"), so the
// caller can check its argument list against the signature; cuLaunchKernel cannot.
template <typename... A>
static const char* loopkit_signature(void (*)(A...)) { return __PRETTY_FUNCTION__; }
