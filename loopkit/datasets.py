"""Built-in generated datasets: real training problems with no download.

Example:
    >>> x, y = spirals(n_per_class=100, n_classes=3, seed=0)
    >>> tuple(x.shape), tuple(y.shape), sorted(set(y.tolist()))
    ((300, 2), (300,), [0, 1, 2])
"""

from __future__ import annotations

import math

import torch


def spirals(
    n_per_class: int = 1000, n_classes: int = 3, *, noise: float = 0.15, turns: float = 1.25, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interleaved spiral arms in the plane, one class per arm: not linearly separable, easy to draw.

    Args:
        n_per_class: points per arm.
        n_classes: number of arms (classes).
        noise: standard deviation of the Gaussian jitter added to each point.
        turns: how far each arm winds, in full turns.
        seed: seed of the private generator (the global RNG is untouched).

    Returns:
        ``(x, y)``: float32 points of shape ``(n_classes * n_per_class, 2)`` in roughly [-1, 1]^2 and
        int64 class labels of shape ``(n_classes * n_per_class,)``.

    Raises:
        ValueError: ``n_per_class < 1`` or ``n_classes < 2``.
    """
    if n_per_class < 1 or n_classes < 2:
        raise ValueError(f"spirals needs n_per_class >= 1 and n_classes >= 2, got {n_per_class=}, {n_classes=}")
    g = torch.Generator().manual_seed(seed)
    r = torch.linspace(0.05, 1.0, n_per_class)
    xs, ys = [], []
    for k in range(n_classes):
        angle = r * turns * 2 * math.pi + k * 2 * math.pi / n_classes
        points = torch.stack([r * torch.cos(angle), r * torch.sin(angle)], dim=1)
        xs.append(points + noise * r.unsqueeze(1) * torch.randn(n_per_class, 2, generator=g))
        ys.append(torch.full((n_per_class,), k, dtype=torch.int64))
    return torch.cat(xs), torch.cat(ys)
