// Fused SGD with momentum, dampening, Nesterov and weight decay, over every tensor of one dtype in one launch.
//
// table:  [3, n_tensors] device pointers: param, grad (param dtype), momentum buffer (float32; null, and
//         unused, for a group whose momentum is 0).
// chunks: [n_chunks, 2] int32: tensor index, chunk index; one thread block per chunk.
// hyper:  [n_groups, 6] float32, device-resident: lr, momentum, 1 - dampening, weight_decay, nesterov (0 or 1),
//         gradient sign (-1 to maximize).
// grad_scale, found_inf: GradScaler's scale and inf flag (one float32 each, on the device), or null without one.
// first:  [n_tensors] float32: 1 where the buffer is new (no step has used it yet): torch then sets buf = d_p.
extern "C" __global__ void __launch_bounds__(256) sgd_step(
    const i64* __restrict__ table, const i64* __restrict__ numels, const int* __restrict__ group_of,
    const int* __restrict__ chunks, const float* __restrict__ hyper, const float* __restrict__ grad_scale,
    const float* __restrict__ found_inf, const float* __restrict__ first, int n_tensors, int chunk_size)
{
    if (found_inf != nullptr && *found_inf != 0.0f) return;  // GradScaler found inf/NaN: skip the whole step
    const float scale = grad_scale != nullptr ? *grad_scale : 1.0f;
    i64 start, end;
    const int t = chunk_range(chunks, numels, chunk_size, start, end);
    const float* h = hyper + 6 * group_of[t];
    const float lr = h[0], momentum = h[1], one_minus_dampening = h[2], weight_decay = h[3];
    const bool nesterov = h[4] != 0.0f;
    const float sign = h[5];

    param_t* p = reinterpret_cast<param_t*>(table[t]);
    const param_t* g = reinterpret_cast<const param_t*>(table[n_tensors + t]);
    float* buffer = reinterpret_cast<float*>(table[2 * n_tensors + t]);
    // Plain SGD: no buffer (torch keeps none), 12 bytes per parameter instead of 20. The buffer's own pointer decides
    // too, not only the device-side momentum: a CUDA graph captured while momentum was 0 (null buffer) and replayed
    // after a schedule raised it must not follow a null pointer (the host refuses that replay, see sgd.py).
    if (momentum == 0.0f || buffer == nullptr) {
        update_chunk<0>(p, g, nullptr, nullptr, start, end, [=](float& param, float grad, float&, float&) {
            param -= lr * (sign * grad / scale + weight_decay * param);
        });
        return;
    }
    const bool first_step = first[t] != 0.0f;
    update_chunk<1>(p, g, buffer, nullptr, start, end,
        [=](float& param, float grad, float& buf, float&) {
            float d_p = sign * grad / scale + weight_decay * param;
            buf = first_step ? d_p : buf * momentum + one_minus_dampening * d_p;  // mul_(m).add_(d_p, alpha=1 - d)
            d_p = nesterov ? d_p + momentum * buf : buf;
            param -= lr * d_p;
        });
}
