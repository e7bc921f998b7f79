"""The scheduled batch sampler and the BatchSize hyperparameter with real DataLoaders (with and without workers)."""

from __future__ import annotations

import pytest
import torch

from loopkit import Learner, Schedule, Scheduler
from loopkit.scheduling.batch_size import BatchSize, ScheduledBatchSampler
from loopkit.scheduling.optimizer_hyperparams import LearningRate


class Indexed(torch.utils.data.Dataset):
    """Sample i is (i, target): batches reveal exactly which samples they hold."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor([float(i)]), torch.tensor([0.0])


class Seen:
    reads = ("xb", "phase", "epoch", "n_batches")

    def __init__(self):
        self.batches, self.n_batches = [], {}

    def after_pred(self, learner):
        if learner.phase == "train":
            self.batches.append((learner.epoch, learner.xb[:, 0].long().tolist()))
            self.n_batches[learner.epoch] = learner.n_batches


def fit(loader, schedulers, epochs):
    model = torch.nn.Linear(1, 1)
    seen = Seen()
    Learner(
        model,
        loader,
        torch.optim.SGD(model.parameters(), lr=0.01),
        torch.nn.functional.mse_loss,
        callbacks=[*schedulers, seen],
    ).fit(epochs)
    return seen


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("drop_last", [False, True])
def test_per_epoch_ramp_is_exact_and_every_epoch_is_one_pass(num_workers, drop_last):
    n = 50
    sampler = ScheduledBatchSampler(n, batch_size=4, shuffle=True, drop_last=drop_last)
    loader = torch.utils.data.DataLoader(
        Indexed(n), batch_sampler=sampler, num_workers=num_workers, timeout=60 if num_workers else 0
    )
    ramp = Scheduler({BatchSize: Schedule([0, 3], [4, 32], anneal="exp")}, per="epoch", name="BatchSizeScheduler")
    lr = Scheduler({LearningRate: Schedule([0, 4], [0.01, 0.0])})
    seen = fit(loader, [ramp, lr], 4)
    expected_sizes = [round(4 * 8 ** (e / 3)) for e in range(4)]  # 4, 8, 16, 32
    assert ramp.history["BatchSize"] == pytest.approx([4.0, 8.0, 16.0, 32.0], rel=1e-12)
    for epoch, size in enumerate(expected_sizes):
        batches = [b for e, b in seen.batches if e == epoch]
        full, rest = divmod(n, size)
        assert [len(b) for b in batches] == [size] * full + ([] if drop_last or not rest else [rest])
        indices = sorted(i for b in batches for i in b)
        assert indices == (sorted(indices) if drop_last else list(range(n)))  # one pass, each index once
        assert len(set(indices)) == len(indices)
        assert seen.n_batches[epoch] == len(batches)  # the length the Learner (and the lr schedule) used
    # The per-step lr schedule laid out each epoch with its own length: 13 + 7 + 4 + 2 batches (no drop_last).
    assert len(lr.history["lr"]) == len(seen.batches)


@pytest.mark.parametrize("num_workers, lag", [(0, 1), (2, 1 + 2 * 2)])
def test_per_step_changes_show_after_the_documented_prefetch_lag(num_workers, lag):
    n = 80
    sampler = ScheduledBatchSampler(n, batch_size=4)
    loader = torch.utils.data.DataLoader(
        Indexed(n), batch_sampler=sampler, num_workers=num_workers, timeout=60 if num_workers else 0
    )
    change_at = 3  # set at before_batch of batch 3
    sizes = Scheduler({BatchSize: Schedule([0, change_at], [4, 2], anneal="step", unit="step")})
    seen = fit(loader, [sizes], 1)
    lengths = [len(b) for _, b in seen.batches]
    first_small = lengths.index(2)
    assert first_small == change_at + lag
    assert sum(lengths) == n  # still exactly one pass


def test_batch_size_needs_the_scheduled_sampler():
    loader = torch.utils.data.DataLoader(Indexed(8), batch_size=2)
    model = torch.nn.Linear(1, 1)
    with pytest.raises(TypeError, match="batch_sampler=ScheduledBatchSampler"):
        Learner(
            model,
            loader,
            torch.optim.SGD(model.parameters(), lr=0.1),
            torch.nn.functional.mse_loss,
            callbacks=[Scheduler({BatchSize: Schedule([0, 1], [2, 4])})],
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n": 0, "batch_size": 2}, "n=0"),
        ({"n": 10, "batch_size": 0}, "batch_size=0"),
        ({"n": 10, "batch_size": 2.5}, "batch_size=2.5"),
    ],
)
def test_sampler_arguments_are_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ScheduledBatchSampler(**kwargs)


def test_shuffle_replays_from_the_global_rng_like_random_sampler():
    sampler = ScheduledBatchSampler(20, batch_size=6, shuffle=True)
    torch.manual_seed(3)
    first = list(sampler)
    torch.manual_seed(3)
    assert list(sampler) == first
    torch.manual_seed(3)
    assert [i for b in first for i in b] == torch.randperm(20).tolist()


def test_sampler_flags_and_generator_are_checked_at_construction():
    with pytest.raises(TypeError, match=r"shuffle='yes'"):
        ScheduledBatchSampler(8, 2, shuffle="yes")
    with pytest.raises(TypeError, match=r"generator=0"):
        ScheduledBatchSampler(8, 2, generator=0)
