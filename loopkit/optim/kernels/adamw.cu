// Fused AdamW over every tensor of one dtype in one launch (multi-tensor apply).
//
// table:  [5, n_tensors] device pointers: param, grad (same dtype as param), exp_avg, exp_avg_sq (float32),
//         step (one float32 per tensor, already incremented for this step).
// chunks: [n_chunks, 2] int32: tensor index, chunk index within the tensor; one thread block per chunk.
// hyper:  [n_groups, 5] float32, device-resident: lr, beta1, beta2, eps, weight_decay. The host uploads it
//         without a sync before the launch, so a schedule moving every step costs no host-device sync.
// Each thread handles UNROLL elements per iteration to keep enough loads in flight for full bandwidth.
#define UNROLL 4

extern "C" __global__ void __launch_bounds__(256) adamw_step(
    const i64* __restrict__ table, const i64* __restrict__ numels, const int* __restrict__ group_of,
    const int* __restrict__ chunks, const float* __restrict__ hyper, int n_tensors, int chunk_size)
{
    const int t = chunks[2 * blockIdx.x];
    const i64 start = (i64)chunks[2 * blockIdx.x + 1] * chunk_size;
    const i64 end = start + (i64)chunk_size < numels[t] ? start + (i64)chunk_size : numels[t];
    const float* h = hyper + 5 * group_of[t];
    const float lr = h[0], beta1 = h[1], beta2 = h[2], eps = h[3], weight_decay = h[4];
    const float step = *reinterpret_cast<const float*>(table[4 * n_tensors + t]);
    const float step_size = lr / (1.0f - powf(beta1, step));
    const float bias_correction2_sqrt = sqrtf(1.0f - powf(beta2, step));
    const float decay = 1.0f - lr * weight_decay;

    param_t* __restrict__ p = reinterpret_cast<param_t*>(table[t]);
    const param_t* __restrict__ g = reinterpret_cast<const param_t*>(table[n_tensors + t]);
    float* __restrict__ m = reinterpret_cast<float*>(table[2 * n_tensors + t]);
    float* __restrict__ v = reinterpret_cast<float*>(table[3 * n_tensors + t]);

    for (i64 base = start + threadIdx.x; base < end; base += (i64)blockDim.x * UNROLL) {
        float pr[UNROLL], gr[UNROLL], mr[UNROLL], vr[UNROLL];
#pragma unroll
        for (int k = 0; k < UNROLL; ++k) {
            const i64 i = base + (i64)k * blockDim.x;
            if (i < end) { pr[k] = load_p(p, i); gr[k] = load_p(g, i); mr[k] = m[i]; vr[k] = v[i]; }
        }
#pragma unroll
        for (int k = 0; k < UNROLL; ++k) {
            const i64 i = base + (i64)k * blockDim.x;
            if (i < end) {
                float param = pr[k] * decay;
                const float grad = gr[k];
                const float exp_avg = mr[k] + (1.0f - beta1) * (grad - mr[k]);
                const float exp_avg_sq = beta2 * vr[k] + (1.0f - beta2) * grad * grad;
                const float denom = sqrtf(exp_avg_sq) / bias_correction2_sqrt + eps;
                param -= step_size * exp_avg / denom;
                m[i] = exp_avg; v[i] = exp_avg_sq; store_p(p, i, param);
            }
        }
    }
}
