// Fused AdamW over every tensor of one dtype in one launch (multi-tensor apply).
//
// table:  [5, n_tensors] device pointers: param, grad (same dtype as param), exp_avg, exp_avg_sq (float32),
//         step (one float32 per tensor, already incremented for this step).
// chunks: [n_chunks, 2] int32: tensor index, chunk index within the tensor; one thread block per chunk.
// grad_scale, found_inf: GradScaler's scale and inf flag (one float32 each, on the device), or null without one.
// hyper:  [n_groups, 9] float32, device-resident: lr, 1 - lr * weight_decay, 1 - beta1, beta2, 1 - beta2,
//         log(beta1), log(beta2), eps, gradient sign (-1 to maximize) (complements and logs taken in double on the
//         host, as torch does). The host
//         uploads it without a sync before the launch, so a schedule moving every step costs no host-device sync.
// The arithmetic follows torch.optim.AdamW's single-tensor step operation for operation.
extern "C" __global__ void __launch_bounds__(256) adamw_step(
    const i64* __restrict__ table, const i64* __restrict__ numels, const int* __restrict__ group_of,
    const int* __restrict__ chunks, const float* __restrict__ hyper, const float* __restrict__ grad_scale,
    const float* __restrict__ found_inf, int n_tensors, int chunk_size)
{
    if (found_inf != nullptr && *found_inf != 0.0f) return;  // GradScaler found inf/NaN: skip, as torch's fused step
    const float scale = grad_scale != nullptr ? *grad_scale : 1.0f;
    i64 start, end;
    const int t = chunk_range(chunks, numels, chunk_size, start, end);
    const float* h = hyper + 9 * group_of[t];
    const float lr = h[0], decay = h[1], one_minus_beta1 = h[2], beta2 = h[3], one_minus_beta2 = h[4];
    const float log_beta1 = h[5], log_beta2 = h[6], eps = h[7], sign = h[8];
    // torch's lerp_(grad, w) switches formulas at |w| = 0.5 so that neither end cancels: with beta1 = 0 (w = 1),
    // m + w * (g - m) rounds g = 1e-8 against m = 1 to 0, g - (g - m) * (1 - w) gives g exactly.
    const bool small_weight = fabsf(one_minus_beta1) < 0.5f;
    const float one_minus_w = 1.0f - one_minus_beta1;
    const float step = *reinterpret_cast<const float*>(table[4 * n_tensors + t]);
    // 1 - beta**step as -expm1(step * log(beta)): no cancellation when beta is close to 1 and step is small.
    const float step_size = lr / -expm1f(step * log_beta1);
    const float bias_correction2_sqrt = sqrtf(-expm1f(step * log_beta2));

    update_chunk<2>(
        reinterpret_cast<param_t*>(table[t]), reinterpret_cast<const param_t*>(table[n_tensors + t]),
        reinterpret_cast<float*>(table[2 * n_tensors + t]), reinterpret_cast<float*>(table[3 * n_tensors + t]),
        start, end,
        [=](float& param, float grad, float& exp_avg, float& exp_avg_sq) {
            grad = sign * grad / scale;                        // unscale as torch's fused step; maximize: -grad
            param *= decay;
            exp_avg = small_weight ? exp_avg + one_minus_beta1 * (grad - exp_avg)  // lerp_(grad, 1 - beta1)
                                   : grad - (grad - exp_avg) * one_minus_w;
            exp_avg_sq = exp_avg_sq * beta2 + one_minus_beta2 * grad * grad;   // mul_(beta2).addcmul_(...)
            param -= step_size * (exp_avg / (sqrtf(exp_avg_sq) / bias_correction2_sqrt + eps));  // addcdiv_
        });
}
