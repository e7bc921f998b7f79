"""Markdown tables for docs/benchmarks.md from the JSON files that benchmarks/gpu_session.sh writes.

python benchmarks/summarize_optim.py optim.json sweep.json compile.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict


def load(path: str) -> list[dict]:
    try:
        with open(path) as f:
            return json.load(f)["benchmarks"]
    except (OSError, ValueError, KeyError) as error:
        print(f"({path}: {error})\n")
        return []


def optim_table(rows: list[dict]) -> str:
    impls = ["loopkit", "fused", "foreach", "forloop"]
    cells: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for row in rows:
        cells[(row["params"]["kind"], row["params"]["shape"])][row["params"]["impl"]] = row["extra_info"]
    lines = [
        "| optimizer | shape | " + " | ".join(f"{i} ms (% of copy)" for i in impls) + " | loopkit vs fused |",
        "|---|---|" + "---|" * (len(impls) + 1),
    ]
    for (kind, shape), by_impl in sorted(cells.items()):
        text = [
            f"{by_impl[i]['ms_per_step']:.3f} ({by_impl[i]['fraction_of_copy']:.0%})" if i in by_impl else "-"
            for i in impls
        ]
        speedup = (
            f"{by_impl['fused']['ms_per_step'] / by_impl['loopkit']['ms_per_step']:.2f}x"
            if {"fused", "loopkit"} <= by_impl.keys()
            else "-"
        )
        lines.append(f"| {kind} | {shape} | " + " | ".join(text) + f" | {speedup} |")
    copy = next((r["extra_info"]["copy_gbps"] for r in rows), None)
    return "\n".join(lines) + (f"\n\nDevice-to-device copy: {copy:.0f} GB/s (read + write)." if copy else "")


def sweep_table(rows: list[dict]) -> str:
    grid: dict[tuple[str, str], dict[tuple[int, int], float]] = defaultdict(dict)
    for row in rows:
        p = row["params"]
        grid[(p["kind"], p["shape"])][(p["chunk_size"], p["ilp"])] = row["extra_info"]["fraction_of_copy"]
    settings = sorted({s for cell in grid.values() for s in cell})
    lines = [
        "| optimizer | shape | " + " | ".join(f"{c // 1024}K/ilp{i}" for c, i in settings) + " |",
        "|---|---|" + "---|" * len(settings),
    ]
    for (kind, shape), cell in sorted(grid.items()):
        best = max(cell, key=cell.get)
        lines.append(
            f"| {kind} | {shape} | "
            + " | ".join(
                ("**{:.0%}**" if s == best else "{:.0%}").format(cell[s]) if s in cell else "-" for s in settings
            )
            + " |"
        )
    return "\n".join(lines)


def compile_table(rows: list[dict]) -> str:
    lines = ["| case | median ms |", "|---|---|"]
    lines += [f"| {row['name'].removeprefix('test_')} | {row['stats']['median'] * 1e3:.0f} |" for row in rows]
    return "\n".join(lines)


def main(optim: str, sweep: str, compile_: str) -> None:
    print("## Optimizer step\n\n" + optim_table(load(optim)))
    print("\n## Sweep: fraction of copy bandwidth (chunk elements / ILP)\n\n" + sweep_table(load(sweep)))
    print("\n## NVRTC compile\n\n" + compile_table(load(compile_)))


if __name__ == "__main__":
    main(*sys.argv[1:4])
