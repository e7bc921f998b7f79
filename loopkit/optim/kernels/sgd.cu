// Fused SGD with momentum, dampening, Nesterov and weight decay, over every tensor of one dtype in one launch.
//
// table:  [3, n_tensors] device pointers: param, grad (param dtype), momentum buffer (float32).
// chunks: [n_chunks, 2] int32: tensor index, chunk index; one thread block per chunk.
// hyper:  [n_groups, 5] float32, device-resident: lr, momentum, dampening, weight_decay, nesterov (0 or 1).
// first_step: 1 when the buffers are new: torch then sets buf = grad (no dampening).
#define UNROLL 4

extern "C" __global__ void __launch_bounds__(256) sgd_step(
    const i64* __restrict__ table, const i64* __restrict__ numels, const int* __restrict__ group_of,
    const int* __restrict__ chunks, const float* __restrict__ hyper, int n_tensors, int chunk_size,
    int first_step)
{
    const int t = chunks[2 * blockIdx.x];
    const i64 start = (i64)chunks[2 * blockIdx.x + 1] * chunk_size;
    const i64 end = start + (i64)chunk_size < numels[t] ? start + (i64)chunk_size : numels[t];
    const float* h = hyper + 5 * group_of[t];
    const float lr = h[0], momentum = h[1], dampening = h[2], weight_decay = h[3];
    const bool nesterov = h[4] != 0.0f;

    param_t* __restrict__ p = reinterpret_cast<param_t*>(table[t]);
    const param_t* __restrict__ g = reinterpret_cast<const param_t*>(table[n_tensors + t]);
    float* __restrict__ b = reinterpret_cast<float*>(table[2 * n_tensors + t]);

    for (i64 base = start + threadIdx.x; base < end; base += (i64)blockDim.x * UNROLL) {
#pragma unroll
        for (int k = 0; k < UNROLL; ++k) {
            const i64 i = base + (i64)k * blockDim.x;
            if (i < end) {
                float param = load_p(p, i);
                float d_p = load_p(g, i) + weight_decay * param;
                if (momentum != 0.0f) {
                    const float buf = first_step ? d_p : momentum * b[i] + (1.0f - dampening) * d_p;
                    b[i] = buf;
                    d_p = nesterov ? d_p + momentum * buf : buf;
                }
                store_p(p, i, param - lr * d_p);
            }
        }
    }
}
