// Fused SGD with momentum, dampening, Nesterov and weight decay, over every tensor of one dtype in one launch.
//
// table:  [3, n_tensors] device pointers: param, grad (param dtype), momentum buffer (float32; null, and
//         unused, for a group whose momentum is 0).
// chunks: [n_chunks, 2] int32: tensor index, chunk index; one thread block per chunk.
// hyper:  [n_groups, 6] float32, device-resident: lr, momentum, 1 - dampening, weight_decay, nesterov (0 or 1),
//         gradient sign (-1 to maximize).
// first_step: 1 when the buffers are new: torch then sets buf = grad (no dampening).
extern "C" __global__ void __launch_bounds__(256) sgd_step(
    const i64* __restrict__ table, const i64* __restrict__ numels, const int* __restrict__ group_of,
    const int* __restrict__ chunks, const float* __restrict__ hyper, int n_tensors, int chunk_size,
    int first_step)
{
    i64 start, end;
    const int t = chunk_range(chunks, numels, chunk_size, start, end);
    const float* h = hyper + 6 * group_of[t];
    const float lr = h[0], momentum = h[1], one_minus_dampening = h[2], weight_decay = h[3];
    const bool nesterov = h[4] != 0.0f;
    const float sign = h[5];

    param_t* p = reinterpret_cast<param_t*>(table[t]);
    const param_t* g = reinterpret_cast<const param_t*>(table[n_tensors + t]);
    if (momentum == 0.0f) {  // plain SGD: no buffer (torch keeps none), 12 bytes per parameter instead of 20
        update_chunk<0>(p, g, nullptr, nullptr, start, end, [=](float& param, float grad, float&, float&) {
            param -= lr * (sign * grad + weight_decay * param);
        });
        return;
    }
    update_chunk<1>(p, g, reinterpret_cast<float*>(table[2 * n_tensors + t]), nullptr, start, end,
        [=](float& param, float grad, float& buf, float&) {
            float d_p = sign * grad + weight_decay * param;
            buf = first_step ? d_p : buf * momentum + one_minus_dampening * d_p;  // mul_(m).add_(d_p, alpha=1 - d)
            d_p = nesterov ? d_p + momentum * buf : buf;
            param -= lr * d_p;
        });
}
