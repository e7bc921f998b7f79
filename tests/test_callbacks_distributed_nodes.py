"""Two "nodes" of two gloo ranks each: torchrun with c10d rendezvous in two network namespaces joined by a
veth pair the test makes (10.231.x.1 and .2, nothing routed beyond them). Needs root and iproute2 (``.ci/run``
installs it); skipped, saying why, where namespaces cannot be made. Every launch runs under a hard timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from tests import distributed_worker as worker
from tests.test_callbacks_distributed import reference_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 240  # seconds for a two-node launch; one takes 30-90 s on the loaded 2-core machine


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def nodes():
    """Two namespaces ``(name, address, interface)`` joined by a veth pair; removed afterwards."""
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is missing: .ci/run installs it")
    if os.geteuid() != 0:
        pytest.skip("making network namespaces needs root (CI runs as root)")
    tag, subnet = os.getpid() % 100000, f"10.231.{os.getpid() % 250}"
    a, b = ((f"lk{x}{tag}", f"{subnet}.{i}", f"lk{x}{tag}v") for i, x in ((1, "a"), (2, "b")))
    made = []
    try:
        for name, _, _ in (a, b):
            done = _ip("netns", "add", name)
            if done.returncode != 0:
                pytest.skip(f"cannot make a network namespace here: {done.stderr.strip()}")
            made.append(name)
        steps = [
            ("link", "add", a[2], "type", "veth", "peer", "name", b[2]),
            ("link", "set", a[2], "netns", a[0]),
            ("link", "set", b[2], "netns", b[0]),
        ]
        for name, address, interface in (a, b):
            steps += [
                ("-n", name, "addr", "add", f"{address}/24", "dev", interface),
                ("-n", name, "link", "set", interface, "up"),
                ("-n", name, "link", "set", "lo", "up"),
            ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot join the namespaces (ip {' '.join(step)}): {done.stderr.strip()}")
        yield a, b
    finally:
        for name in made:
            _ip("netns", "del", name)


def torchrun(node, host, out, *, port, join_timeout=60, node_name):
    name, address, interface = node
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1", LK_NODE=node_name, GLOO_SOCKET_IFNAME=interface)
    command = ["ip", "netns", "exec", name, sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
               "--nproc_per_node=2", "--rdzv-backend=c10d", f"--rdzv-endpoint={host}:{port}", "--rdzv-id=loopkit",
               f"--rdzv-conf=join_timeout={join_timeout},read_timeout=60,is_host={'true' if address == host else 'false'}",
               f"--local-addr={address}", "--monitor-interval=0.5",
               os.path.join(ROOT, "tests", "multinode_worker.py"), str(out)]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(jobs):
    deadline = time.monotonic() + TIMEOUT
    outputs = []
    try:
        for job in jobs:
            outputs.append(job.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    finally:
        for job in jobs:
            job.kill()
    return [(job.returncode, output) for job, output in zip(jobs, outputs)]


def test_two_nodes_rendezvous_split_ranks_write_once_and_stop_together(nodes, tmp_path):
    a, b = nodes
    jobs = [
        torchrun(a, a[1], tmp_path, port=29431, node_name="a"),
        torchrun(b, a[1], tmp_path, port=29431, node_name="b"),
    ]
    for code, output in finish(jobs):
        assert code == 0, output[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(4)]
    # The rendezvous: 4 global ranks, two per node, local ranks 0 and 1 on each, one group rank per node.
    assert [r["env"]["WORLD_SIZE"] for r in ranks] == ["4"] * 4
    by_node = {}
    for r in ranks:
        by_node.setdefault(r["env"]["LK_NODE"], []).append((r["env"]["GROUP_RANK"], r["env"]["LOCAL_RANK"]))
    assert sorted(by_node) == ["a", "b"]
    assert all(sorted(local for _, local in pairs) == ["0", "1"] for pairs in by_node.values())
    assert all(len({group for group, _ in pairs}) == 1 for pairs in by_node.values())
    # Rank 3 alone stopped the run at the end of epoch 1 (of 3): every rank stopped there.
    assert [r["epochs"] for r in ranks] == [2] * 4
    per_epoch = worker.N_TRAIN // worker.BATCH
    assert [r["steps"] for r in ranks] == [2 * per_epoch] * 4
    # One writer per checkpoint: rank 0 wrote every file, no other rank wrote any.
    written = (tmp_path / "saves-0.txt").read_text().split()
    assert len(written) == len(set(written)) >= per_epoch
    assert not any((tmp_path / f"saves-{r}.txt").exists() for r in (1, 2, 3))
    # The same weights on every rank, and those of one process with the global batch of 16 (4 per rank).
    steps, _, _ = reference_run()
    for r in ranks:
        torch.testing.assert_close(r["final"], steps[2 * per_epoch - 1], rtol=1e-10, atol=1e-12)


def test_a_node_that_never_joins_ends_the_launch_with_a_rendezvous_timeout(nodes, tmp_path):
    a, _ = nodes
    start = time.monotonic()
    [(code, output)] = finish([torchrun(a, a[1], tmp_path, port=29432, join_timeout=10, node_name="a")])
    assert code != 0
    assert "RendezvousTimeoutError" in output
    assert time.monotonic() - start < TIMEOUT
