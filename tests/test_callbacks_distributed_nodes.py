"""Two "nodes" of two gloo ranks each: torchrun with c10d rendezvous in two network namespaces joined by a
veth pair the test makes (10.231.x.1 and .2, nothing routed beyond them). Needs root and iproute2 (``.ci/run``
installs it); skipped, saying why, where namespaces cannot be made. Every launch runs under a hard timeout.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
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


def torchrun(node, host, out, *, port, join_timeout=60, node_name, max_restarts=0, worker_args=()):
    name, address, interface = node
    env = dict(
        os.environ,
        PYTHONPATH=ROOT,
        OMP_NUM_THREADS="1",
        LK_NODE=node_name,
        GLOO_SOCKET_IFNAME=interface,
        # Without it, torchrun's agent keeps one TCPStore for the workers of every rendezvous round, and a
        # restarted worker's gloo set-up read a dead worker's address from the round before (docs/distributed.md).
        TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1",
    )
    command = ["ip", "netns", "exec", name, sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
               "--nproc_per_node=2", "--rdzv-backend=c10d", f"--rdzv-endpoint={host}:{port}", "--rdzv-id=loopkit",
               f"--rdzv-conf=join_timeout={join_timeout},read_timeout=60,is_host={'true' if address == host else 'false'}",
               f"--local-addr={address}", "--monitor-interval=0.5", f"--max-restarts={max_restarts}",
               os.path.join(ROOT, "tests", "multinode_worker.py"), str(out), *worker_args]  # fmt: skip
    # A session of its own: stop() kills its process group (ip netns exec's torchrun); torchrun puts each worker
    # in a session of its own, so stop() ends those by their pids.
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def finish(jobs, out, *, deadline=None):
    """Each launch's ``(returncode, output)``; a launch still running at the deadline fails the test, ended
    with its workers, and every launch's output is shown."""
    deadline = deadline or time.monotonic() + TIMEOUT
    results = []
    try:
        for job in jobs:
            output, _ = job.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((job.returncode, output))
    except subprocess.TimeoutExpired:
        stop(jobs, out)
        pytest.fail(f"a two-node launch ran past its deadline:\n{outputs(jobs)}")
    finally:
        stop(jobs, out)
    return results


def stop(jobs, out):
    """End the launches and every worker they started: torchrun starts each worker in a session of its own, so
    killing torchrun's process group would leave them running (and holding the output pipe)."""
    for job in jobs:
        if job.poll() is None:
            job.terminate()  # torchrun's agent ends its workers on SIGTERM
    for job in jobs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            job.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
    for pids in out.glob("pids-*.txt"):  # each worker adds its pid; a pid the system gave out again is spared
        for pid in pids.read_text().split():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if str(out).encode() in cmdline.read():
                    os.kill(int(pid), signal.SIGKILL)


def outputs(jobs):
    shown = []
    for i, job in enumerate(jobs):
        try:
            shown.append(f"--- launch {i}:\n{job.communicate(timeout=10)[0][-6000:]}")
        except subprocess.TimeoutExpired:
            shown.append(f"--- launch {i}: (its output pipe is still held open)")
    return "\n".join(shown)


@pytest.fixture(scope="module")
def uninterrupted(nodes, tmp_path_factory):
    """The job on two nodes, nothing killed: its output directory (read by two tests)."""
    a, b = nodes
    out = tmp_path_factory.mktemp("uninterrupted")
    jobs = [
        torchrun(a, a[1], out, port=29431, node_name="a"),
        torchrun(b, a[1], out, port=29431, node_name="b"),
    ]
    for code, output in finish(jobs, out):
        assert code == 0, output[-4000:]
    return out


def load_ranks(out):
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(4)]


def test_two_nodes_rendezvous_split_ranks_write_once_and_stop_together(uninterrupted):
    ranks = load_ranks(uninterrupted)
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
    written = (uninterrupted / "saves-0.txt").read_text().split()
    assert len(written) == len(set(written)) >= per_epoch
    assert not any((uninterrupted / f"saves-{r}.txt").exists() for r in (1, 2, 3))
    # The same weights on every rank, and those of one process with the global batch of 16 (4 per rank).
    steps, _, _ = reference_run()
    for r in ranks:
        torch.testing.assert_close(r["final"], steps[2 * per_epoch - 1], rtol=1e-10, atol=1e-12)


HANG_AT = 8  # a checkpoint every 2 steps; 6 steps an epoch: step 8 is mid-epoch 1


def test_killed_workers_of_one_node_restart_the_job_which_resumes_from_the_last_checkpoint(
    nodes, uninterrupted, tmp_path
):
    a, b = nodes
    start = time.monotonic()
    deadline = start + TIMEOUT
    options = {"port": 29433, "max_restarts": 1, "worker_args": [f"--hang-at={HANG_AT}"]}
    jobs = [
        torchrun(a, a[1], tmp_path, node_name="a", **options),
        torchrun(b, a[1], tmp_path, node_name="b", **options),
    ]
    try:
        # Every rank waits at step 8, after rank 0 wrote its checkpoint; then node b's two workers are killed
        # (the workers, not b's torchrun, which restarts them; a's torchrun hosts the rendezvous store).
        progress = tmp_path / "progress"
        while not (progress.exists() and progress.read_text() == str(HANG_AT)):
            if time.monotonic() > start + TIMEOUT / 2 or any(job.poll() is not None for job in jobs):
                stop(jobs, tmp_path)
                pytest.fail(f"the job never reached step {HANG_AT}:\n{outputs(jobs)}")
            time.sleep(0.2)
        killed = [int(pid) for pid in (tmp_path / "pids-b.txt").read_text().split()]
        assert len(killed) == 2
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
    except BaseException:
        stop(jobs, tmp_path)
        raise
    results = finish(jobs, tmp_path, deadline=deadline)
    for code, output in results:
        assert code == 0, output[-4000:]
    # torchrun started both nodes' workers again: b's after their failure (its agent counts the restart, so its
    # workers see TORCHELASTIC_RESTART_COUNT=1), a's because b's agent joined a new rendezvous round (a's agent
    # spends no restart on that: its workers see 0).
    pids = {node: (tmp_path / f"pids-{node}.txt").read_text().split() for node in "ab"}
    assert [len(pids["a"]), len(pids["b"])] == [4, 4]
    ranks = load_ranks(tmp_path)
    assert sorted(r["restart"] for r in ranks if r["env"]["LK_NODE"] == "b") == [1, 1]
    assert sorted(r["restart"] for r in ranks if r["env"]["LK_NODE"] == "a") == [0, 0]
    # Every rank resumed from the step-8 checkpoint, ran the rest of epoch 1 (4 steps) and stopped with rank 3.
    assert [r["resumed_from"] for r in ranks] == [f"step-{HANG_AT:09d}.pt"] * 4
    per_epoch = worker.N_TRAIN // worker.BATCH
    assert [r["steps"] for r in ranks] == [2 * per_epoch - HANG_AT] * 4
    # One writer per checkpoint, across both rounds: rank 0 (of each round) wrote every file once, the same
    # files in the same order as the uninterrupted run (step-8 before the kill, the rest after the restart).
    written = [os.path.basename(p) for p in (tmp_path / "saves-0.txt").read_text().split()]
    assert written == [os.path.basename(p) for p in (uninterrupted / "saves-0.txt").read_text().split()]
    assert len(written) == len(set(written))
    assert not any((tmp_path / f"saves-{r}.txt").exists() for r in (1, 2, 3))
    # The same weights on every rank, and those of the uninterrupted run to the last few bits: the first step
    # after the restart runs in a new DDP, whose first all-reduce packs the gradients into its bucket in another
    # order than later steps (DDP rebuilds the bucket after one step); gloo sums 4 ranks' values in an order that
    # depends on the position in the bucket, so step 9's gradient may differ in the last bit (measured: 6e-17
    # relative after step 12; at 2 ranks the sum a + b has one order and resuming is bit-identical).
    whole = load_ranks(uninterrupted)
    for r, w in zip(ranks, whole):
        assert torch.equal(r["final"], ranks[0]["final"])
        torch.testing.assert_close(r["final"], w["final"], rtol=1e-13, atol=1e-15)
    assert time.monotonic() - start < TIMEOUT


def test_a_node_that_never_joins_ends_the_launch_with_a_rendezvous_timeout(nodes, tmp_path):
    a, _ = nodes
    start = time.monotonic()
    [(code, output)] = finish([torchrun(a, a[1], tmp_path, port=29432, join_timeout=10, node_name="a")], tmp_path)
    assert code != 0
    assert "RendezvousTimeoutError" in output
    assert time.monotonic() - start < TIMEOUT
