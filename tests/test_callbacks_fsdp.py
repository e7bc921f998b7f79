"""FSDP2 (``Distributed(shard=...)``) and sharded checkpoints on gloo ranks, against hand-written loops.

Four torchrun launches (each under a hard timeout, so a hang fails): 2 ranks train (loopkit, a hand-written
FSDP2 loop, a mixed-precision pair, a save that fails on one rank); 1 and 4 ranks resume the 2-rank run's
mid-epoch checkpoint; 2 ranks resume it again (same world size) and resume the 1-rank run's checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from loopkit import Distributed, Learner
from loopkit.callbacks.fsdp import units
from loopkit.resume.file import CheckpointError
from loopkit.resume.sharded import consolidate, load_sharded, main
from tests import fsdp_worker as worker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = 240  # seconds for one launch; one takes 15-60 s on the loaded 2-core machine

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")


def launch(out, *args: str, nproc: int = 2) -> list[dict]:
    """Run the worker on ``nproc`` gloo ranks; return every rank's results."""
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command += [os.path.join(ROOT, "tests", "fsdp_worker.py"), "train", str(out), *args]
    done = subprocess.run(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT
    )
    if done.returncode != 0:
        raise AssertionError(f"the {nproc}-rank launch failed ({done.returncode}):\n{done.stdout[-4000:]}")
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(nproc)]


def one_process():
    """The whole run in one process by hand: global batches of 16 in DistributedSampler's order (seed 0),
    two per step with each backward on loss / 2, clip_grad_norm_ at 0.5, lr linear in the step."""
    x, y = worker.data()
    net = worker.model()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    weights, step = [], 0
    for epoch in range(worker.EPOCHS):
        order = torch.randperm(worker.N, generator=torch.Generator().manual_seed(epoch))
        for b in range(worker.N // worker.BATCH):
            idx = order[b * worker.BATCH : (b + 1) * worker.BATCH]
            (torch.nn.functional.cross_entropy(net(x[idx]), y[idx]) / worker.K).backward()
            if b % worker.K == worker.K - 1:
                torch.nn.utils.clip_grad_norm_(net.parameters(), worker.CLIP)
                for group in opt.param_groups:
                    group["lr"] = worker.lr_at(step)
                opt.step()
                opt.zero_grad()
                step += 1
                weights.append(worker.flat(net.state_dict()))
    return weights


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp2")
    return out, launch(out, "--reference")


@pytest.fixture(scope="module")
def resumed(two, tmp_path_factory):
    """The 2-rank run's checkpoint at step 4 (epoch 1 after 2 of its 6 global batches: mid-epoch) resumed on 1,
    4 and 2 ranks; the 1-rank run's own checkpoint at step 8 (epoch 2 after 4 of 6) resumed on 2."""
    out, _ = two
    step4 = str(out / "ckpt" / "step-000000004.dcp")
    runs, dirs = {}, {}
    for nproc in (1, 4):
        dirs[nproc] = tmp_path_factory.mktemp(f"on{nproc}")
        runs[nproc] = launch(dirs[nproc], "--resume", step4, nproc=nproc)
    one_rank_step8 = str(dirs[1] / "ckpt-0" / "step-000000008.dcp")
    runs[2] = launch(tmp_path_factory.mktemp("on2"), "--resume", step4, "--resume", one_rank_step8, nproc=2)
    return runs


def test_sharded_training_equals_a_hand_written_fsdp2_loop_and_one_process(two):
    _, (r0, r1) = two
    run, hand = r0["run"], r0["hand"]
    assert run["sharded"].startswith("FSDP")
    assert len(run["weights"]) == len(hand["weights"]) == worker.TOTAL
    # The Scheduler wrote the sharded optimizer's param groups: the lr each step used is the schedule's.
    assert run["lrs"] == pytest.approx([worker.lr_at(s) for s in range(worker.TOTAL)], rel=1e-12)
    reference = one_process()
    for k, (got, other, by_hand, single) in enumerate(
        zip(run["weights"], r1["run"]["weights"], hand["weights"], reference)
    ):
        assert torch.equal(got, other), f"ranks gathered different weights after step {k}"
        # The same FSDP2 arithmetic as the hand-written loop (reduce-scatter of loss/2 gradients, clip on the
        # DTensor norm): equal to float64 rounding. Against one process, the reduce-scatter's mean of two
        # 8-sample means differs from one 16-sample mean in the last bits: 1e-12 relative over 9 steps.
        torch.testing.assert_close(got, by_hand, rtol=1e-13, atol=1e-15, msg=f"step {k} vs FSDP2 by hand")
        torch.testing.assert_close(got, single, rtol=1e-12, atol=1e-14, msg=f"step {k} vs one process")
    # The loss of each step (a window's mean, rank 0's half of the batch) as the hand loop computed it; loopkit
    # keeps the window's mean in the loss's float32 accumulation: 1e-6 relative.
    assert run["losses"] == pytest.approx(hand["losses"], rel=1e-6)


def test_fsdp_mixed_precision_composed_with_mixed_precision_matches_fsdp_policy_under_autocast(two):
    _, (r0, _) = two
    mixed = r0["mixed"]
    # Parameters gathered in bf16 once by FSDP, reductions in fp32, autocast over the forward: exactly the
    # hand-written MixedPrecisionPolicy + autocast loop (autocast finds bf16 weights and casts them no further).
    assert mixed["loopkit"] == mixed["hand"]
    assert mixed["param_dtype"] == "torch.float32"  # the sharded parameters the optimizer updates stay fp32


def test_fsdp_float16_with_the_grad_scaler_matches_torchs_recipe_and_skips_overflowing_steps_on_every_rank(two):
    _, ranks = two
    runs = [r["float16"] for r in ranks]
    for run in runs:
        # Parameters gathered in float16 by FSDP, fp32 reductions, autocast and a GradScaler: loopkit's step is
        # torch's scale/step/update recipe, so losses, scales and weights are those of the hand-written loop.
        assert run["loopkit"] == run["hand"]
        assert run["loopkit_scales"] == run["hand_scales"]
        assert torch.equal(run["loopkit_weights"], run["hand_weights"])
        # The scale of 2**40 overflows float16 gradients: the first steps are skipped and the scale halves each
        # time (found_inf is reduced over the shards, so both ranks skip the same steps).
        scales = run["loopkit_scales"]
        assert scales[0] == 2.0**39 and scales[1] == 2.0**38
        assert run["param_dtype"] == "torch.float32"
    assert runs[0]["loopkit_scales"] == runs[1]["loopkit_scales"]
    assert torch.equal(runs[0]["loopkit_weights"], runs[1]["loopkit_weights"])


def test_a_rank_failing_during_a_sharded_save_leaves_the_previous_checkpoint_as_last(two):
    _, ranks = two
    for r in ranks:
        failing = r["failing"]
        assert "No space left on device (simulated on rank 1)" in failing["error"]
        assert failing["last"] == failing["latest"] == "step-000000002.dcp"
        assert failing["listing"] == ["step-000000002.dcp"]  # no partial directory, no temporary left behind


def test_every_rank_writes_its_shards_and_each_file_is_checksummed(two):
    out, _ = two
    ckpt = out / "ckpt" / "step-000000004.dcp"
    assert sorted(os.listdir(ckpt)) == [".metadata", "__0_0.distcp", "__1_0.distcp", "loopkit.pt"]
    (ckpt.parent / "damaged.dcp").mkdir()
    for name in os.listdir(ckpt):
        (ckpt.parent / "damaged.dcp" / name).write_bytes((ckpt / name).read_bytes())
    shard = ckpt.parent / "damaged.dcp" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"__1_0.distcp.*changed since it was written"):
        load_sharded(ckpt.parent / "damaged.dcp")
    shard.unlink()
    with pytest.raises(CheckpointError, match=r"lacks __1_0.distcp.*node-local storage"):
        load_sharded(ckpt.parent / "damaged.dcp")


def test_resuming_at_the_same_world_size_is_bit_identical(two, resumed):
    _, (r0, _) = two
    again = resumed[2][0]["resumed"][0]
    assert len(again["weights"]) == worker.TOTAL - 4
    for k, (got, want) in enumerate(zip(again["weights"], r0["run"]["weights"][4:])):
        assert torch.equal(got, want), f"step {4 + k}"


@pytest.mark.parametrize("nproc", [1, 4])
def test_a_2_rank_checkpoint_resumes_on_1_and_4_ranks_with_the_global_sample_order_continuing(two, resumed, nproc):
    _, (r0, _) = two
    ranks = resumed[nproc]
    assert ranks[0]["world_size"] == nproc
    # The resumed epoch (1) had 2 of its 6 global batches done: the ranks together load the other 4, each
    # sample once, in DistributedSampler's order for epoch 1 (the permutation does not depend on the world).
    order = torch.randperm(worker.N, generator=torch.Generator().manual_seed(1)).tolist()
    loaded = [i for r in ranks for i in r["resumed"][0]["loaded"][0]]
    assert len(loaded) == len(set(loaded)) == worker.N - 2 * worker.BATCH
    assert set(loaded) == set(order[2 * worker.BATCH :])
    # Another world size splits each global batch's mean differently: equal to 1e-12 relative (float64).
    for k, (got, want) in enumerate(zip(ranks[0]["resumed"][0]["weights"], r0["run"]["weights"][4:])):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14, msg=f"step {4 + k}")


def test_a_1_rank_checkpoint_resumes_on_2_ranks(two, resumed):
    _, (r0, _) = two
    from_one = resumed[2][0]["resumed"][1]
    assert len(from_one["weights"]) == worker.TOTAL - 8
    torch.testing.assert_close(from_one["weights"][-1], r0["run"]["weights"][-1], rtol=1e-12, atol=1e-14)


def test_consolidating_writes_the_whole_model_and_a_resumable_file(two, tmp_path):
    out, (r0, _) = two
    ckpt = out / "ckpt" / "step-000000004.dcp"
    model_file = consolidate(ckpt, tmp_path / "model.pt", model_only=True)
    net = worker.model()
    net.load_state_dict(torch.load(model_file))
    assert torch.equal(worker.flat(net.state_dict()), r0["run"]["weights"][3])  # after step 4
    whole = load_sharded(ckpt)
    assert main([str(ckpt), str(tmp_path / "whole.pt")]) == 0
    from loopkit.resume.load import load_checkpoint

    again = load_checkpoint(tmp_path / "whole.pt")
    assert again["position"] == whole["position"]
    assert all(torch.equal(again["optimizer"]["state"][i]["momentum_buffer"], s["momentum_buffer"])
               for i, s in whole["optimizer"]["state"].items())  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:  # a user mistake: a usage error, no traceback
        main([str(tmp_path / "nothing.dcp"), str(tmp_path / "x.pt")])
    assert exit_info.value.code == 2


def test_a_checkpoint_of_another_model_is_refused_before_anything_is_loaded(two):
    out, _ = two
    other = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).double()
    before = worker.flat(other.state_dict())
    x, y = worker.data()
    learner = Learner(
        other,
        torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16),
        torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9),
        torch.nn.functional.cross_entropy,
    )
    with pytest.raises(CheckpointError, match=r"model entry '0.weight' has shape \(16, 6\) in the checkpoint"):
        learner.fit(3, resume_from=out / "ckpt" / "step-000000004.dcp")
    assert torch.equal(worker.flat(other.state_dict()), before)


# ------------------------------------------------------------------------------------- the wrap policy
class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(2, 4)
        self.blocks = torch.nn.ModuleList([Block(), Block()])
        self.head = torch.nn.Linear(4, 1)


def test_the_default_policy_shards_each_block_of_a_module_list_then_the_root():
    assert [name for name, _ in units(Net(), True)] == ["blocks.0", "blocks.1", ""]
    assert [name for name, _ in units(Net(), Block)] == ["blocks.0", "blocks.1", ""]
    assert [n for n, _ in units(Net(), lambda name, m: name in ("head", "embed"))] == ["embed", "head", ""]
    # Innermost first: a unit inside another is sharded before it.
    assert [n for n, _ in units(Net(), (Block, torch.nn.Linear))][-1] == ""
    nested = [n for n, _ in units(Net(), (Block, torch.nn.Linear))]
    assert nested.index("blocks.0.fc") < nested.index("blocks.0")


def learner_with(distributed):
    model = Net()
    return Learner(model, [(torch.randn(2, 2), torch.randn(2, 1))], torch.optim.SGD(model.parameters(), lr=0.1),
                   torch.nn.functional.mse_loss, callbacks=[distributed])  # fmt: skip


def test_a_wrap_policy_that_matches_nothing_fails_when_the_learner_is_built():
    with pytest.raises(ValueError, match=r"shard=<class 'torch.nn.modules.conv.Conv2d'>\) matches no module of the Net: "
                       r"it holds \['Block', 'Linear', 'ModuleList'\]"):  # fmt: skip
        learner_with(Distributed(shard=torch.nn.Conv2d))
    with pytest.raises(ValueError, match=r"accepts no module of the Net"):
        learner_with(Distributed(shard=lambda name, module: False))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"shard": "blocks"}, TypeError, r"shard='blocks'\): pass True"),
        ({"shard": (torch.nn.Linear, int)}, TypeError, r"a torch.nn.Module subclass"),
        ({"param_dtype": torch.bfloat16}, ValueError, r"param_dtype=torch.bfloat16\) sets FSDP2's mixed precision"),
        ({"shard": True, "static_graph": True}, ValueError, r"static_graph are DDP's options"),
    ],
)
def test_bad_sharding_options_fail_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        Distributed(**kwargs)
