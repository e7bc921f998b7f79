"""Cost of loopkit on 2 gloo ranks against hand-written DDP and FSDP2 loops with the same features (goal: <= 1.03x).

The workload and both loops are in ``benchmarks/distributed_workload.py``; this launches it under torchrun
and reports its interleaved per-round ratio (the median of loopkit / hand-written over the rounds). Run:

    pytest benchmarks/bench_distributed.py --benchmark-only -s
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("nproc", [2])
def test_distributed_overhead(benchmark, tmp_path, nproc):
    out = tmp_path / "result.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command += [os.path.join(HERE, "distributed_workload.py"), str(out)]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE), OMP_NUM_THREADS="1")

    def launch():
        subprocess.run(command, env=env, check=True, timeout=1200)

    benchmark.pedantic(launch, rounds=1, iterations=1)
    result = json.loads(out.read_text())
    benchmark.extra_info.update(
        ratio=result["ratio"],
        ratio_agreed=result["ratio_agreed"],
        ratio_fsdp=result["ratio_fsdp"],
        us_per_step=result["us_per_step"],
    )
    ratios = sorted(r["loopkit"] / r["hand"] for r in result["rounds"])
    print(f"\nloopkit / hand-written DDP: median {result['ratio']:.3f}, per-round {[round(x, 3) for x in ratios]}")
    print(f"with a user batch-level callback, agreed per step: median {result['ratio_agreed']:.3f}")
    print(f"FSDP2: loopkit (Distributed(shard=True)) / hand-written FSDP2 loop: median {result['ratio_fsdp']:.3f}")
