"""Draw the built-in schedules as SVG files under docs/plots/ (no plotting library needed).

python docs/make_plots.py
"""

from __future__ import annotations

import pathlib

import numpy as np

from loopkit.schedules import (
    Schedule,
    constant_lr,
    cosine_restarts,
    exponential_lr,
    linear_lr,
    multistep_lr,
    onecycle,
    onecycle_momentum,
    onecycle_torch,
    polynomial_lr,
    product,
    step_lr,
    steps,
    warmup_cosine,
    warmup_linear,
)

OUT = pathlib.Path(__file__).resolve().parent / "plots"
W, H, PAD, LEFT = 480, 220, 34, 56
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def svg(title: str, curves: list[tuple[str, np.ndarray]], xlabel: str) -> str:
    ys = np.concatenate([c for _, c in curves])
    lo, hi = float(ys.min()), float(ys.max())
    hi = hi if hi > lo else lo + 1.0
    n = max(len(c) for _, c in curves)

    def x(i):
        return LEFT + (W - LEFT - PAD) * i / max(n - 1, 1)

    def y(v):
        return H - PAD - (H - 2 * PAD) * (v - lo) / (hi - lo)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13">{title}</text>',
        f'<line x1="{LEFT}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#888"/>',
        f'<line x1="{LEFT}" y1="{PAD}" x2="{LEFT}" y2="{H - PAD}" stroke="#888"/>',
        f'<text x="{LEFT - 4}" y="{y(hi) + 4}" text-anchor="end">{hi:.3g}</text>',
        f'<text x="{LEFT - 4}" y="{y(lo) + 4}" text-anchor="end">{lo:.3g}</text>',
        f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle">{xlabel}</text>',
    ]
    for k, (label, curve) in enumerate(curves):
        colour = COLOURS[k % len(COLOURS)]
        points = " ".join(f"{x(i):.1f},{y(float(v)):.1f}" for i, v in enumerate(curve))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{points}"/>')
        parts.append(f'<text x="{W - PAD}" y="{PAD + 14 * k}" text-anchor="end" fill="{colour}">{label}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def figures() -> dict[str, str]:
    spe, epochs = 50, 10
    n = spe * epochs
    anneals = [
        (a, Schedule([0, 1], [1.0, 0.1], anneal=a).values(100, steps_per_epoch=100))
        for a in ("linear", "cos", "sin", "exp", "step")
    ]
    return {
        "anneal": svg("annealing from 1.0 to 0.1", anneals, "position in the segment"),
        "onecycle": svg(
            "one-cycle, 500 steps, peak 1.0",
            [
                ("onecycle (fastai)", onecycle(epochs, 1.0).values(n, steps_per_epoch=spe)),
                ("onecycle_torch (OneCycleLR)", onecycle_torch(n, 1.0).values(n)),
            ],
            "step",
        ),
        "momentum": svg(
            "one-cycle momentum",
            [("onecycle_momentum", onecycle_momentum(epochs).values(n, steps_per_epoch=spe))],
            "step",
        ),
        "warmup": svg(
            "warmup 50 steps, decay to step 500",
            [
                ("warmup_linear", warmup_linear(50, n, 1.0).values(n)),
                ("warmup_cosine, floor 0.1", warmup_cosine(50, n, 1.0, floor=0.1).values(n)),
            ],
            "step",
        ),
        "restarts": svg(
            "cosine restarts: period 50, x2 each cycle, decay 0.6, warmup 20",
            [
                (
                    "cosine_restarts",
                    cosine_restarts(50, 1.0, cycles=3, period_mult=2.0, decay=0.6, warmup=20, floor=0.05).values(400),
                )
            ],
            "step",
        ),
        "torch": svg(
            "torch's decays, 100 steps from 1.0",
            [
                ("step_lr(1.0, 30, 0.5)", step_lr(1.0, 30, 0.5).values(100)),
                ("multistep_lr(1.0, [20, 50, 80], 0.4)", multistep_lr(1.0, [20, 50, 80], 0.4).values(100)),
                ("exponential_lr(1.0, 0.97)", exponential_lr(1.0, 0.97).values(100)),
                ("polynomial_lr(1.0, 90, 2.0)", polynomial_lr(1.0, 90, 2.0).values(100)),
                (
                    "product(linear_lr(1.0, 0.1, 1.0, 10), constant_lr(1.0, 0.5, 60))",
                    product(linear_lr(1.0, 0.1, 1.0, 10), constant_lr(1.0, 0.5, 60)).values(100),
                ),
            ],
            "step",
        ),
        "mixed": svg(
            "Schedule([0, steps(100), 10], [0, 1, 0.01], anneal=['linear', 'cos'])",
            [
                (
                    "mixed units",
                    Schedule([0, steps(100), 10], [0.0, 1.0, 0.01], anneal=["linear", "cos"]).values(
                        n, steps_per_epoch=spe
                    ),
                )
            ],
            "step (50 per epoch)",
        ),
        "smooth": svg(
            "Schedule.smooth through 6 points (PCHIP)",
            [
                (
                    "smooth",
                    Schedule.smooth([0, 1, 2, 4, 7, 10], [0.0, 0.2, 0.9, 1.0, 0.4, 0.3]).values(n, steps_per_epoch=spe),
                )
            ],
            "step",
        ),
    }


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, text in figures().items():
        (OUT / f"{name}.svg").write_text(text)
        print(f"wrote {OUT / name}.svg")


if __name__ == "__main__":
    main()
