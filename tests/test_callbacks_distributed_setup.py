"""The Distributed callback's set-up in one process: data splits per rank (pure functions of rank and world size),
and the DDP wrapping and its options inside a one-process gloo group (no port, no launch)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from loopkit import Learner, Scheduler
from loopkit.callbacks import Distributed
from loopkit.callbacks.sharding import ShardedBatchSampler, UnpaddedShard, shard_train_loader, shard_valid_loader
from loopkit.schedules import Schedule
from loopkit.scheduling.batch_size import BatchSize, ScheduledBatchSampler


def dataset(n):
    return TensorDataset(torch.arange(n, dtype=torch.float64).unsqueeze(1), torch.arange(n))


def indices(loader):
    return [b[1].tolist() for b in loader]


@pytest.mark.parametrize("shuffle", [False, True])
def test_plain_loader_ranks_together_take_exactly_the_global_batches(shuffle):
    # Global batch k must be positions k*B .. (k+1)*B - 1 of the epoch's permutation, as in one process.
    loader = DataLoader(dataset(48), batch_size=12, shuffle=shuffle)
    parts = [shard_train_loader(loader, rank=r, world_size=3, seed=5) for r in range(3)]
    for epoch in (0, 1):
        for p in parts:
            p.sampler.set_epoch(epoch)
        order = (
            torch.randperm(48, generator=torch.Generator().manual_seed(5 + epoch)).tolist()
            if shuffle
            else list(range(48))
        )
        per_rank = [indices(p) for p in parts]
        assert [len(b) for b in per_rank[0]] == [4, 4, 4, 4]
        for k in range(4):
            together = [i for r in range(3) for i in per_rank[r][k]]
            assert sorted(together) == sorted(order[k * 12 : (k + 1) * 12])


def test_scheduled_batch_sampler_is_split_per_rank_with_the_schedules_value_as_the_global_batch():
    loader = DataLoader(dataset(22), batch_sampler=ScheduledBatchSampler(22, 4, shuffle=True))
    parts = [shard_train_loader(loader, rank=r, world_size=2, seed=0) for r in range(2)]
    assert all(isinstance(p.batch_sampler, ShardedBatchSampler) for p in parts)
    order = torch.randperm(22, generator=torch.Generator().manual_seed(0)).tolist()
    got = [indices(p) for p in parts]
    # 22 = 5 batches of 4 and a tail of 2, split 1 + 1
    assert len(got[0]) == len(got[1]) == len(parts[0]) == 6
    for k in range(6):
        assert sorted(got[0][k] + got[1][k]) == sorted(order[k * 4 : (k + 1) * 4])
    for p in parts:
        p.batch_sampler.batch_size = 6  # what BatchSize does when a schedule moves
    assert [len(b) for b in indices(parts[0])] == [3, 3, 3, 2]  # 22 = 3 * 6 + 4 -> tail split 2 + 2
    with pytest.raises(ValueError, match=r"global batch size 5 .* not divisible by the world size 2"):
        parts[0].batch_sampler.batch_size = 5


def test_a_global_batch_the_world_size_does_not_divide_is_refused_with_the_fix():
    with pytest.raises(
        ValueError,
        match=r"global batch size 10 \(the train DataLoader's batch_size\) is not divisible by the world size 4.*multiple of 4",
    ):
        shard_train_loader(DataLoader(dataset(40), batch_size=10), rank=0, world_size=4, seed=0)
    with pytest.raises(ValueError, match="not divisible by the world size 2"):
        ShardedBatchSampler(10, 3, rank=0, world_size=2)


def test_validation_split_counts_every_sample_exactly_once_without_padding():
    loader = DataLoader(dataset(37), batch_size=8, shuffle=True)
    parts = [shard_valid_loader(loader, rank=r, world_size=2) for r in range(2)]
    seen = [i for p in parts for b in indices(p) for i in b]
    assert sorted(seen) == list(range(37))
    assert [len(p.sampler) for p in parts] == [19, 18]
    assert list(UnpaddedShard(5, rank=2, world_size=3)) == [2]
    with pytest.raises(ValueError, match="valid_data has 1 samples for 2 ranks"):
        shard_valid_loader(DataLoader(dataset(1)), rank=0, world_size=2)


def test_data_loopkit_cannot_split_is_refused_with_the_way_out():
    with pytest.raises(TypeError, match=r"train_data is list.*shard_data=False"):
        shard_train_loader([(torch.ones(1), torch.ones(1))], rank=0, world_size=2, seed=0)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter([])

    with pytest.raises(TypeError, match=r"IterableDataset.*shard_data=False"):
        shard_train_loader(DataLoader(Stream()), rank=0, world_size=2, seed=0)
    weighted = DataLoader(dataset(8), batch_size=2, sampler=torch.utils.data.WeightedRandomSampler([1.0] * 8, 8))
    with pytest.raises(TypeError, match="DistributedSampler of your own"):
        shard_train_loader(weighted, rank=0, world_size=2, seed=0)
    mine = DataLoader(dataset(8), batch_size=2, sampler=DistributedSampler(dataset(8), num_replicas=4, rank=1))
    with pytest.raises(ValueError, match="built for rank 1 of 4, but this process is rank 0 of 2"):
        shard_train_loader(mine, rank=0, world_size=2, seed=0)
    ok = DataLoader(dataset(8), batch_size=2, sampler=DistributedSampler(dataset(8), num_replicas=2, rank=0))
    assert shard_train_loader(ok, rank=0, world_size=2, seed=0) is ok  # the user's own, used as given


def test_loader_settings_survive_the_rebuild():
    def collate(batch):
        return torch.utils.data.default_collate(batch)

    loader = DataLoader(dataset(8), batch_size=4, collate_fn=collate, pin_memory=False, timeout=3.0)
    part = shard_train_loader(loader, rank=0, world_size=2, seed=0)
    assert (part.collate_fn, part.timeout, part.batch_size) == (collate, 3.0, 2)


@pytest.fixture
def group():
    """A one-process gloo group in this process: Distributed finds it and uses it as is."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def learner_with(distributed, *, model=None, batch_sampler=None, extra=()):
    model = model or torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1)).double()
    inner = getattr(model, "module", model)
    ds = TensorDataset(torch.randn(16, 1, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64))
    loader = (
        DataLoader(ds, batch_sampler=batch_sampler) if batch_sampler else DataLoader(ds, batch_size=4, shuffle=True)
    )

    class Seen:
        reads = ("model", "train_data", "epoch")

        def __init__(self):
            self.models, self.epochs = [], []

        def before_epoch(self, learner):
            self.models.append(learner.model)
            sampler = learner.train_data.batch_sampler if batch_sampler else learner.train_data.sampler
            self.epochs.append(getattr(sampler, "epoch", None))

    seen = Seen()
    opt = torch.optim.SGD(inner.parameters(), lr=0.01)
    learner = Learner(model, loader, opt, torch.nn.functional.mse_loss, callbacks=[distributed, seen, *extra])
    return learner, seen, model, loader


def test_with_a_group_the_model_is_wrapped_with_the_options_and_given_back_after_fit(group):
    learner, seen, model, loader = learner_with(Distributed(find_unused_parameters=True, static_graph=True))
    learner.fit(3)
    wrapped = seen.models[0]
    assert isinstance(wrapped, DistributedDataParallel) and wrapped.module is model
    assert wrapped.find_unused_parameters and wrapped.static_graph
    assert seen.epochs == [0, 1, 2]  # set_epoch every epoch
    assert learner.model is model and learner.train_data is loader
    assert dist.is_initialized()  # a group loopkit did not create is left alone


def test_a_user_wrapped_model_is_used_as_is_and_conflicting_options_are_refused(group):
    ddp = DistributedDataParallel(torch.nn.Linear(1, 1).double())
    learner, seen, _, _ = learner_with(Distributed(), model=ddp)
    learner.fit(1)
    assert seen.models[0] is ddp
    learner, _, _, _ = learner_with(Distributed(static_graph=True), model=ddp)
    with pytest.raises(ValueError, match=r"wrapped in DistributedDataParallel already.*\['static_graph'\]"):
        learner.fit(1)


def test_sync_batchnorm_on_the_cpu_is_refused_saying_why(group):
    model = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1)).double()
    learner, _, _, _ = learner_with(Distributed(sync_batchnorm=True), model=model)
    with pytest.raises(ValueError, match="SyncBatchNorm runs on CUDA devices only"):
        learner.fit(1)


def test_a_batch_size_schedule_drives_the_global_batch_of_the_sharded_sampler(group):
    sampler = ScheduledBatchSampler(16, 2, shuffle=True)
    schedule = Scheduler({BatchSize: Schedule([0, 1], [2, 8], anneal="step")}, per="epoch", name="BatchSizeScheduler")
    learner, _, _, _ = learner_with(Distributed(), batch_sampler=sampler, extra=[schedule])
    steps = []

    class Count:
        reads = ("global_step",)

        def after_epoch(self, learner):
            steps.append(learner.global_step)

    learner = Learner(learner.model, learner.train_data, learner.optimizer, learner.loss_fn,
                      callbacks=[Distributed(), schedule, Count()])  # fmt: skip
    learner.fit(2)
    assert steps == [8, 10]  # 16 samples in batches of 2, then of 8


def test_without_torchrun_or_a_group_distributed_changes_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    learner, seen, model, loader = learner_with(Distributed())
    learner.fit(1)
    assert seen.models == [model] and learner.train_data is loader and not dist.is_initialized()


def test_bad_arguments_fail_at_construction():
    with pytest.raises(ValueError, match="timeout"):
        Distributed(timeout=5)
    with pytest.raises(TypeError, match="seed"):
        Distributed(seed=1.5)


def test_early_stopping_restores_the_best_weights_into_the_model_it_was_given(group):
    # Distributed gives the learner its unwrapped model back at after_fit; EarlyStopping's best weights are the
    # underlying module's, so they load into it (and into a checkpoint-resumed run without DDP alike).
    from loopkit import EarlyStopping, Metrics

    ds = TensorDataset(torch.randn(16, 1, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64))
    model = torch.nn.Linear(1, 1).double()
    opt = torch.optim.SGD(model.parameters(), lr=5.0)  # diverges: the best epoch is the first
    stop = EarlyStopping("valid_loss", patience=2, restore_best=True)
    learner = Learner(model, DataLoader(ds, batch_size=4), opt, torch.nn.functional.mse_loss,
                      valid_data=DataLoader(ds, batch_size=8), callbacks=[Distributed(), Metrics(), stop])  # fmt: skip
    learner.fit(5)
    assert learner.model is model and stop.best_epoch == 0
    assert all(not k.startswith("module.") for k in stop.state_dict()["best_state"])
    with torch.no_grad():
        loss = torch.nn.functional.mse_loss(model(ds.tensors[0]), ds.tensors[1]).item()
    assert loss == pytest.approx(stop.best, rel=1e-12)


def test_a_stream_keeps_valid_every_as_the_epoch_length_the_schedule_is_laid_over(group):
    # Distributed sets the epoch's length to the shard's in before_fit; in a stream an epoch of the loop is
    # valid_every batches, and the Scheduler (after it) lays a step schedule over n_epochs * valid_every steps:
    # one that ends past the fit is refused, as in one process.
    from loopkit import Schedule, Scheduler
    from loopkit.scheduling.optimizer_hyperparams import LearningRate

    seen = []

    class Length:
        reads = ("n_batches",)
        run_after = ("Distributed",)

        def before_fit(self, learner):
            seen.append(learner.n_batches)

    learner, _, _, _ = learner_with(Distributed(), extra=[Length()])  # 16 samples in batches of 4: 4 a pass
    learner.fit(5, valid_every=3)
    assert seen == [3]
    too_long = Scheduler({LearningRate: Schedule([0, 16], [0.1, 0.01], unit="step")})
    learner, _, _, _ = learner_with(Distributed(), extra=[too_long])
    with pytest.raises(ValueError, match="ends at 16 steps but the fit ends at 15"):
        learner.fit(5, valid_every=3)


@pytest.mark.parametrize("shared_store", [True, False])
def test_restarts_with_torchruns_shared_store_are_warned_of(monkeypatch, shared_store):
    # torchrun --max-restarts with the rendezvous store shared across rounds hangs restarted gloo workers (found by
    # tests/test_callbacks_distributed_nodes.py); the launch's environment says so before the group is made.
    import socket
    import warnings

    from loopkit.callbacks.distributed import destroy_process_group

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "TORCHELASTIC_MAX_RESTARTS": "2"}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if not shared_store:
        monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    else:
        monkeypatch.delenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", raising=False)
    learner, _, _, _ = learner_with(Distributed(backend="gloo"))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            learner.fit(1)
    finally:
        destroy_process_group()
    said = [str(w.message) for w in caught if "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in str(w.message)]
    assert len(said) == (1 if shared_store else 0)
