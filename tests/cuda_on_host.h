// Prelude that lets loopkit's CUDA kernels compile as plain C++ and run on the host, one simulated thread at a
// time (in order, or shuffled), so that a machine without a GPU (CI) still checks their arithmetic, indexing, vector/scalar paths and
// launch arguments against torch.optim. Running threads one after another is exact for these kernels because
// their threads share nothing: no shared memory, no barriers, no warp intrinsics, and each element is written
// by exactly one thread. What it cannot check: timing, memory coalescing, the GPU's own float rounding of
// powf/sqrtf (covered by the tolerances) and the driver's launch path (the GPU tests do that).
#include <csetjmp>
#include <csignal>
#include <cmath>
#include <cstdint>
#include <vector>
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

// A fault (SIGSEGV/SIGBUS) inside a launch jumps back here with its address, so that the test fails with "this
// kernel read address 0x10" (near null: a null pointer taken from a table) instead of killing the test process.
static sigjmp_buf loopkit_jump;
static volatile std::uintptr_t loopkit_fault_address = 0;
static void loopkit_on_fault(int, siginfo_t* info, void*) {
    loopkit_fault_address = reinterpret_cast<std::uintptr_t>(info->si_addr);
    siglongjmp(loopkit_jump, 1);
}

// Runs every (block, thread) of the grid: in order when seed is 0, else in an order shuffled by the seed (the
// kernels' threads share nothing, so any order must give the same result). Returns 1 and the address on a fault.
template <typename... A>
static int loopkit_launch(void (*kernel)(A...), unsigned grid, unsigned block, void** args, unsigned long long seed,
                          unsigned long long* fault_address) {
    gridDim.x = grid;
    blockDim.x = block;
    std::vector<unsigned long long> order((std::size_t)grid * block);
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    for (std::size_t i = order.size(); seed && i > 1; --i) {  // Fisher-Yates with xorshift64
        seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
        std::swap(order[i - 1], order[seed % i]);
    }
    struct sigaction on_fault = {}, old_segv, old_bus;
    on_fault.sa_sigaction = loopkit_on_fault;
    on_fault.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &on_fault, &old_segv);
    sigaction(SIGBUS, &on_fault, &old_bus);
    int faulted = 0;
    if (sigsetjmp(loopkit_jump, 1) == 0) {
        for (unsigned long long i : order) {
            blockIdx.x = (unsigned)(i / block);
            threadIdx.x = (unsigned)(i % block);
            loopkit_call(kernel, args, std::index_sequence_for<A...>{});
        }
    } else {
        faulted = 1;
        *fault_address = loopkit_fault_address;
    }
    sigaction(SIGSEGV, &old_segv, nullptr);
    sigaction(SIGBUS, &old_bus, nullptr);
    return faulted;
}

// The kernel's parameter types as the compiler sees them ("... [with A = {const long long int*, int}]"), so the
// caller can check its argument list against the signature; cuLaunchKernel cannot.
template <typename... A>
static const char* loopkit_signature(void (*)(A...)) { return __PRETTY_FUNCTION__; }
