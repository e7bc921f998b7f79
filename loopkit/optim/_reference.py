"""Reference multi-tensor math for the fused optimizers: the CPU path, and the oracle of the CUDA kernels.

It follows torch.optim's single-tensor AdamW and SGD operation for operation, except that optimizer state is
always float32 and low-precision parameters are updated in float32 and rounded once (as the kernels do).
"""

from __future__ import annotations

import math

import torch


def adamw_reference(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    steps: list[torch.Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    maximize: bool = False,
) -> None:
    """One AdamW step (decoupled weight decay, bias correction) on lists of tensors, in place."""
    for param, grad, exp_avg, exp_avg_sq, step_t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        step_t += 1
        step = step_t.item()
        p = param.float() if param.dtype != torch.float32 else param
        g = grad.float() if not maximize else -grad.float()
        p.mul_(1 - lr * weight_decay)
        exp_avg.lerp_(g, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = math.sqrt(1 - beta2**step)
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        p.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)
        if p is not param:
            param.copy_(p)


def sgd_reference(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    buffers: list[torch.Tensor | None],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool = False,
) -> list:
    """One SGD step (weight decay, momentum with dampening, Nesterov) in place; returns the momentum buffers
    (a new one is the gradient itself, undampened, as in torch)."""
    out = []
    for param, grad, buf in zip(params, grads, buffers):
        p = param.float() if param.dtype != torch.float32 else param
        d_p = grad.float() if not maximize else -grad.float()
        if weight_decay:
            d_p = d_p.add(p, alpha=weight_decay)
        if momentum:
            if buf is None:
                buf = d_p.clone().detach()
            else:
                buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
            d_p = d_p.add(buf, alpha=momentum) if nesterov else buf
        p.add_(d_p, alpha=-lr)
        if p is not param:
            param.copy_(p)
        out.append(buf)
    return out
