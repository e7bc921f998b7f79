"""A resume gets back to its place in the train data: seeking where the data allows it, loading the data's own
state where it has one, replaying otherwise; streams (fit(valid_every=N)) resume too.

The reference for every case is the same run left uninterrupted: the resumed run must end bit-identical (CPU, the
same float operations in the same order), and the counts of loaded samples show which path was taken.
"""

from __future__ import annotations

import copy

import pytest
import torch

from loopkit import Callback, Learner
from loopkit.resume.file import CheckpointError

from .test_resume import LossLog as Losses, Snapshot

# Worker processes that stop answering fail the test after this many seconds (a fetch timeout) instead of hanging.
WORKER_TIMEOUT = 60

# torchdata 0.11 calls a torch function that torch 2.13 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")


class Counted(torch.utils.data.Dataset):
    """A map-style dataset that counts the samples loaded (and draws from the RNG, as an augmentation would)."""

    def __init__(self, n=60, noise=0.01):
        self.noise = noise
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 5, generator=g)
        self.y = (self.x[:, :1] * 2 - self.x[:, 1:2]).sin()
        self.loaded = 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        self.loaded += 1
        return (self.x[i] + self.noise * torch.randn(5) if self.noise else self.x[i]), self.y[i]


class Stream(torch.utils.data.IterableDataset):
    """An endless stream of noisy samples, drawn from the global RNG."""

    def __iter__(self):
        while True:
            x = torch.randn(5)
            yield x, (2 * x[:1]).sin()


def model_and_optimizer(seed, lr=0.05):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


def train(loader, n_epochs, snapshot=None, resume_from=None, seed=0, lr=0.05, **fit):
    model, opt = model_and_optimizer(seed, lr)
    if resume_from is not None:
        torch.manual_seed(4242)  # a fresh process starts elsewhere: the checkpoint must restore the RNG
    losses = Losses()
    callbacks = [losses] + ([snapshot] if snapshot is not None else [])
    learner = Learner(model, loader, opt, torch.nn.functional.mse_loss, callbacks=callbacks)
    learner.fit(n_epochs, resume_from=resume_from, **fit)
    return model, losses


def assert_same(a, b):
    (model_a, losses_a), (model_b, losses_b) = a, b
    for p, q in zip(model_a.state_dict().values(), model_b.state_dict().values()):
        assert torch.equal(p, q)
    n = len(losses_b.losses)
    assert n == len(losses_a.losses)
    assert all(pa == pb and torch.equal(la, lb) for (pa, la), (pb, lb) in zip(losses_a.losses, losses_b.losses))


# ------------------------------------------------------------------------------------------------- seeking
@pytest.mark.parametrize("batch_size", [8, None], ids=["batched", "unbatched"])
def test_a_mid_epoch_resume_seeks_past_finished_batches_without_loading_them(batch_size):
    # 60 samples in batches of 8: 8 batches an epoch (the last of 4). Checkpoint after 11 steps: epoch 1, batch 3.
    data = Counted()
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True)
    per_epoch = len(loader)
    snap = Snapshot(at_step=per_epoch + 3)
    lr = 0.05 if batch_size else 0.002  # one sample a step: a smaller rate keeps the run finite
    straight = train(loader, 3, snap, lr=lr)
    assert snap.state["position"] == {
        "epoch": 1,
        "batch": 3,
        "global_step": per_epoch + 3,
        "n_epochs": 3,
        "n_batches": per_epoch,
    }
    assert torch.isfinite(straight[0][0].weight).all()

    data.loaded = 0
    resumed = train(loader, 3, resume_from=snap.state, seed=99, lr=lr)
    assert_same(straight, resumed)
    remaining = len(data) * 2 - 3 * (batch_size or 1)  # epochs 1 and 2 but the 3 batches of epoch 1 done
    assert data.loaded == remaining  # the finished batches were never loaded again


def test_with_worker_processes_the_finished_batches_are_replayed_exactly():
    # Workers' random state depends on every sample they loaded: only a replay keeps their draws, at the cost of
    # loading the finished batches again.
    loader = torch.utils.data.DataLoader(Counted(), batch_size=8, shuffle=True, num_workers=2, timeout=WORKER_TIMEOUT)
    snap = Snapshot(at_step=11)
    straight = train(loader, 2, snap)
    resumed = train(loader, 2, resume_from=snap.state, seed=99)
    assert_same(straight, resumed)


@pytest.mark.parametrize("at_step", [8, 8 + 3, 16 + 8], ids=["epoch-0-end", "mid-epoch-1", "epoch-2-end"])
def test_a_loader_with_its_own_generator_resumes_its_shuffle(at_step):
    # DataLoader(generator=g) shuffles from g, which no snapshot of the process's RNG covers: a fresh process
    # builds g from its seed again, so without its state every resumed epoch would repeat epoch 0's order.
    def loader():
        return torch.utils.data.DataLoader(
            Counted(), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(5)
        )

    snap = Snapshot(at_step=at_step)
    straight = train(loader(), 4, snap)
    assert len(snap.state["data"]["ranks"][0]["generators"]["now"]) == 1
    assert_same(straight, train(loader(), 4, resume_from=snap.state, seed=99))


def test_train_data_holding_other_generators_than_the_checkpoints_is_refused():
    snap = Snapshot(at_step=3)
    with_generator = torch.utils.data.DataLoader(Counted(), batch_size=8, shuffle=True, generator=torch.Generator())
    train(with_generator, 2, snap)
    model, opt = model_and_optimizer(0)
    plain = torch.utils.data.DataLoader(Counted(), batch_size=8, shuffle=True)
    learner = Learner(model, plain, opt, torch.nn.functional.mse_loss)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CheckpointError, match=r"held 1 random generator.*holds 0: build the train data as"):
        learner.fit(2, resume_from=snap.state)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("num_workers", [0, 2], ids=["seek", "replay-with-workers"])
@pytest.mark.parametrize("at_step", [6, 9, None], ids=["mid-ramp", "after-ramp", "epoch-0-end"])
def test_a_batch_size_schedule_resumes_mid_epoch_with_the_sizes_its_pass_was_drawn_with(num_workers, at_step):
    # Batch sizes ramp per step from 2 to 8: the finished batches of the pass were drawn at other sizes than the
    # one in force at the resume, and with workers the prefetched ones too. The pass is drawn again with them.
    from loopkit import Schedule, Scheduler
    from loopkit.scheduling.batch_size import BatchSize, ScheduledBatchSampler

    def run(resume_from=None, snapshot=None):
        model, opt = model_and_optimizer(0 if resume_from is None else 9)
        if resume_from is not None:
            torch.manual_seed(4242)
        sampler = ScheduledBatchSampler(60, batch_size=2, shuffle=True)
        loader = torch.utils.data.DataLoader(
            Counted(noise=0),
            batch_sampler=sampler,
            num_workers=num_workers,
            timeout=WORKER_TIMEOUT if num_workers else 0,
        )
        ramp = Scheduler({BatchSize: Schedule([0, 8], [2, 8], unit="step")})
        losses = Losses()
        callbacks = [ramp, losses, *([snapshot] if snapshot else [])]
        Learner(model, loader, opt, torch.nn.functional.mse_loss, callbacks=callbacks).fit(2, resume_from=resume_from)
        return model, losses

    # At an epoch's end no pass is open, but the next batch is drawn before the next before_batch: with the size
    # in force at the checkpoint, which the Scheduler sets again when it loads its state.
    snap = Snapshot(at_step=at_step) if at_step else Snapshot(at_epoch=0)
    straight = run(snapshot=snap)
    if at_step:
        assert len(snap.state["data"]["ranks"][0]["samplers"][0]["drawn"]) > 2  # the pass holds several sizes
    assert_same(straight, run(resume_from=snap.state))


# ------------------------------------------------------------------------------------------------- stateful data
def test_stateful_data_is_restored_from_its_own_state_without_a_replay():
    torchdata = pytest.importorskip("torchdata.stateful_dataloader")
    data = Counted()

    def loader():
        return torchdata.StatefulDataLoader(data, batch_size=8, shuffle=True)

    snap = Snapshot(at_step=11)
    straight = train(loader(), 3, snap)
    assert snap.state["data"]["ranks"][0]["state"] is not None
    data.loaded = 0
    resumed = train(loader(), 3, resume_from=snap.state, seed=99)
    assert_same(straight, resumed)
    assert data.loaded == 60 * 2 - 3 * 8  # epochs 1 and 2 but the 3 batches of epoch 1 done: nothing replayed


def test_stateful_data_with_worker_processes_resumes_mid_epoch_without_a_replay():
    # The case a replay serves worst (workers load every finished batch again) is exact from the loader's state.
    # torchdata does not save the workers' random generators, so the samples here draw no randomness.
    torchdata = pytest.importorskip("torchdata.stateful_dataloader")

    def loader():
        return torchdata.StatefulDataLoader(
            Counted(noise=0), batch_size=8, shuffle=True, num_workers=2, timeout=WORKER_TIMEOUT
        )

    snap = Snapshot(at_step=11)
    straight = train(loader(), 2, snap)
    assert snap.state["data"]["ranks"][0]["state"]["_snapshot"] is not None
    assert_same(straight, train(loader(), 2, resume_from=snap.state, seed=99))


@pytest.mark.parametrize("shuffle", [True, False])
def test_stateful_data_resumes_exactly_at_an_epoch_end(shuffle):
    # torchdata's RandomSampler draws its permutations from a generator of its own, seeded when the loader is
    # built: a new process's loader would shuffle differently, so loopkit saves that generator. Loading the
    # loader's state of a finished pass would begin the next pass with other global random draws than the
    # uninterrupted run's (dropout would differ): such a state is not loaded, and the pass begins afresh.
    torchdata = pytest.importorskip("torchdata.stateful_dataloader")
    snap = Snapshot(at_epoch=0)
    straight = train(torchdata.StatefulDataLoader(Counted(), batch_size=8, shuffle=shuffle), 3, snap)
    torch.manual_seed(77)  # the new process's loader seeds its sampler's generator elsewhere
    loader = torchdata.StatefulDataLoader(Counted(), batch_size=8, shuffle=shuffle)
    assert_same(straight, train(loader, 3, resume_from=snap.state, seed=99))


# ------------------------------------------------------------------------------------------------- streams
@pytest.mark.parametrize("at_step", [5, 7, 12, 14], ids=["mid-loop-epoch", "loop-epoch-end", "new-pass", "later"])
def test_a_stream_over_a_finite_loader_resumes_inside_its_pass(at_step):
    # 60 samples in batches of 8: passes of 8 batches; loop epochs of 7 batches, so passes and loop epochs
    # cross: step 7 ends loop epoch 0 inside pass 0, step 12 is inside pass 1.
    data = Counted()
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True)
    snap = Snapshot(at_step=at_step) if at_step != 7 else Snapshot(at_epoch=0)
    straight = train(loader, 4, snap, valid_every=7)
    data.loaded = 0
    resumed = train(loader, 4, resume_from=snap.state, seed=99, valid_every=7)
    assert_same(straight, resumed)
    # Only the stream's batches after the checkpoint load (a pass's 8th batch holds 4 samples, the others 8).
    assert data.loaded == sum(4 if k % 8 == 0 else 8 for k in range(at_step + 1, 4 * 7 + 1))


def test_an_endless_stream_resumes_by_replaying_its_pass():
    snap = Snapshot(at_step=9)
    loader = torch.utils.data.DataLoader(Stream(), batch_size=4)
    straight = train(loader, 3, snap, valid_every=5)
    assert snap.state["data"]["ranks"][0]["batches"] == 9
    resumed = train(
        torch.utils.data.DataLoader(Stream(), batch_size=4), 3, resume_from=snap.state, seed=1, valid_every=5
    )
    assert_same(straight, resumed)


def test_a_stream_sets_its_samplers_epoch_to_the_pass_number():
    class Sampler(torch.utils.data.Sampler):
        def __init__(self):
            self.epochs = []
            self.epoch = 0

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __iter__(self):
            self.epochs.append(self.epoch)
            g = torch.Generator().manual_seed(self.epoch)
            return iter(torch.randperm(60, generator=g).tolist())

        def __len__(self):
            return 60

    sampler = Sampler()
    loader = torch.utils.data.DataLoader(Counted(), batch_size=10, sampler=sampler)  # 6 batches a pass
    train(loader, 4, valid_every=5)  # 20 batches: passes 0, 1, 2, 3 (the last one begun)
    assert sampler.epochs == [0, 1, 2, 3]


def test_a_stream_reads_the_train_data_a_callback_set_in_before_fit():
    # Distributed replaces train_data with each rank's shard in before_fit; a stream opened earlier would have
    # trained every rank on all of the data.
    full, shard = Counted(), Counted(n=16)

    class Shard(Callback):
        writes = ("train_data",)

        def before_fit(self, learner):
            learner.train_data = torch.utils.data.DataLoader(shard, batch_size=8)

    model, opt = model_and_optimizer(0)
    loader = torch.utils.data.DataLoader(full, batch_size=8)
    Learner(model, loader, opt, torch.nn.functional.mse_loss, callbacks=[Shard()]).fit(2, valid_every=3)
    assert full.loaded == 0 and shard.loaded == 6 * 8


@pytest.mark.parametrize("at_step", [5, 10, 14], ids=["pass-0", "pass-1", "loop-epoch-end-in-pass-1"])
def test_a_stream_over_a_set_epoch_sampler_resumes_its_passes_order(at_step):
    # A DistributedSampler shuffles by its epoch: the open pass must be drawn again with its own number.
    data = Counted(n=56)  # 7 batches of 8 a pass, loop epochs of 5: passes cross loop epochs

    def loader():
        sampler = torch.utils.data.DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3)
        return torch.utils.data.DataLoader(data, batch_size=8, sampler=sampler)

    snap = Snapshot(at_step=at_step) if at_step != 10 else Snapshot(at_epoch=1)
    straight = train(loader(), 4, snap, valid_every=5)
    assert_same(straight, train(loader(), 4, resume_from=snap.state, seed=99, valid_every=5))


def test_a_stream_with_a_schedule_resumes_when_valid_every_is_not_the_datas_length():
    # The schedule is laid out over loop epochs of valid_every batches, not over the data's 7.
    from loopkit import LearningRate, Scheduler, onecycle

    def run(resume_from=None, snapshot=None):
        model, opt = model_and_optimizer(0 if resume_from is None else 9)
        if resume_from is not None:
            torch.manual_seed(4242)
        losses = Losses()
        callbacks = [Scheduler({LearningRate: onecycle(4, 0.05)}), losses, *([snapshot] if snapshot else [])]
        loader = torch.utils.data.DataLoader(Counted(n=56), batch_size=8, shuffle=True)
        learner = Learner(model, loader, opt, torch.nn.functional.mse_loss, callbacks=callbacks)
        learner.fit(4, valid_every=5, resume_from=resume_from)
        return model, losses

    snap = Snapshot(at_step=12)
    assert_same(run(snapshot=snap), run(resume_from=snap.state))


def test_a_stream_checkpoint_past_the_end_of_smaller_data_is_refused_before_loading():
    snap = Snapshot(at_step=6)
    train(torch.utils.data.DataLoader(Counted(), batch_size=8), 2, snap, valid_every=10)
    model, opt = model_and_optimizer(0)
    smaller = torch.utils.data.DataLoader(Counted(n=32), batch_size=8)  # 4 batches a pass
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CheckpointError, match=r"taken 6 batches into a pass over the train data, which now has 4"):
        Learner(model, smaller, opt, torch.nn.functional.mse_loss).fit(2, valid_every=10, resume_from=snap.state)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_checkpoint_resumes_only_with_the_same_valid_every():
    snap = Snapshot(at_step=3)
    loader = torch.utils.data.DataLoader(Counted(), batch_size=8, shuffle=True)
    train(loader, 2, snap, valid_every=4)
    with pytest.raises(CheckpointError, match=r"valid_every=4 and this fit has valid_every=None.*valid_every=4"):
        train(loader, 2, resume_from=snap.state)
    with pytest.raises(CheckpointError, match=r"valid_every=4 and this fit has valid_every=5"):
        train(loader, 2, resume_from=snap.state, valid_every=5)


def test_a_resume_with_persistent_workers_warns_that_their_random_state_is_not_restored():
    loader = torch.utils.data.DataLoader(
        Counted(), batch_size=8, num_workers=1, persistent_workers=True, timeout=WORKER_TIMEOUT
    )
    snap = Snapshot(at_epoch=0)
    train(loader, 2, snap)
    with pytest.warns(UserWarning, match=r"persistent_workers=True.*persistent_workers=False makes the resume exact"):
        train(loader, 2, resume_from=snap.state)


@pytest.mark.parametrize("fit", [{"max_steps": 3}, {"valid_every": 5}], ids=["max-steps-cut", "stream"])
def test_no_worker_process_outlives_the_fit(fit):
    # A pass cut short (a step budget) or left open (a stream) holds a DataLoader iterator, and with it the
    # worker processes; the fit lets go of it when it ends.
    import multiprocessing

    before = set(multiprocessing.active_children())  # another test's persistent workers may still be alive
    loader = torch.utils.data.DataLoader(Counted(), batch_size=8, num_workers=2, timeout=WORKER_TIMEOUT)
    train(loader, 2, **fit)
    assert set(multiprocessing.active_children()) <= before


# ------------------------------------------------------------------------------------------------- review round 2
def test_a_stateful_loaders_own_shuffle_with_a_generator_resumes_mid_epoch():
    # torchdata's own shuffle restores its generator itself; loopkit sets the loader's generator as at the
    # checkpoint once the loader is back, so the epochs after the resumed one shuffle as they would have.
    torchdata = pytest.importorskip("torchdata.stateful_dataloader")

    def loader():
        g = torch.Generator().manual_seed(3)
        return torchdata.StatefulDataLoader(Counted(), batch_size=8, shuffle=True, generator=g)

    snap = Snapshot(at_step=2)
    straight = train(loader(), 3, snap)
    assert_same(straight, train(loader(), 3, resume_from=snap.state, seed=99))


def test_a_stateful_loader_over_a_sampler_of_its_own_warns_that_its_order_is_drawn_again():
    # torchdata fast-forwards a sampler that does not save its own place by drawing it again when the first
    # batch is fetched: loopkit cannot give it the random state the pass began with then. It says so.
    torchdata = pytest.importorskip("torchdata.stateful_dataloader")
    from loopkit.scheduling.batch_size import ScheduledBatchSampler

    def loader():
        return torchdata.StatefulDataLoader(Counted(), batch_sampler=ScheduledBatchSampler(60, 8, shuffle=True))

    snap = Snapshot(at_step=2)
    train(loader(), 2, snap)
    with pytest.warns(UserWarning, match=r"its sampler ScheduledBatchSampler does not: .*shuffle=True"):
        train(loader(), 2, resume_from=snap.state, seed=99)


def test_a_per_step_batch_size_schedule_resumes_with_the_epochs_length_as_it_began():
    # Epoch-unit knots: the schedule is laid over each epoch's length, counted when the epoch begins from the
    # batch size then in force; the resumed epoch must keep that length, not count it at the sampler's first size.
    from loopkit import Schedule, Scheduler
    from loopkit.scheduling.batch_size import BatchSize, ScheduledBatchSampler

    def run(resume_from=None, snapshot=None):
        model, opt = model_and_optimizer(0 if resume_from is None else 9)
        if resume_from is not None:
            torch.manual_seed(4242)
        loader = torch.utils.data.DataLoader(
            Counted(noise=0), batch_sampler=ScheduledBatchSampler(60, batch_size=4, shuffle=True)
        )
        ramp = Scheduler({BatchSize: Schedule([0, 2], [4, 12])})  # epochs: 4 -> 12 over the fit
        losses = Losses()
        learner = Learner(
            model,
            loader,
            opt,
            torch.nn.functional.mse_loss,
            callbacks=[ramp, losses, *([snapshot] if snapshot else [])],
        )
        learner.fit(2, resume_from=resume_from)
        return model, losses

    snap = Snapshot(at_step=13)  # into epoch 1, whose length was counted at a larger batch size than 4
    straight = run(snapshot=snap)
    assert snap.state["position"]["epoch"] == 1 and snap.state["position"]["n_batches"] < 15
    assert_same(straight, run(resume_from=snap.state))


def test_a_scheduled_sampler_pass_longer_than_smaller_data_is_refused_before_loading():
    from loopkit.scheduling.batch_size import ScheduledBatchSampler

    snap = Snapshot(at_step=6)
    train(torch.utils.data.DataLoader(Counted(n=80), batch_sampler=ScheduledBatchSampler(80, 8)), 1, snap)
    model, opt = model_and_optimizer(0)
    smaller = torch.utils.data.DataLoader(Counted(n=40), batch_sampler=ScheduledBatchSampler(40, 8))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(CheckpointError, match=r"drew 6 batches of 48 samples in all, more than this sampler's n=40"):
        Learner(model, smaller, opt, torch.nn.functional.mse_loss).fit(1, resume_from=snap.state)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_train_data_a_callback_replaces_in_before_fit_is_checked_when_the_pass_opens():
    # Distributed swaps in each rank's shard in before_fit, after the checkpoint was checked: the data checks
    # then run against the data the fit really uses (here the swap drops the user's generator, as a shard does).
    def loader(generator):
        return torch.utils.data.DataLoader(Counted(), batch_size=8, shuffle=True, generator=generator)

    class Swap(Callback):
        writes = ("train_data",)

        def before_fit(self, learner):
            torch.manual_seed(11)
            learner.train_data = loader(None)

    def run(resume_from=None, snapshot=None):
        model, opt = model_and_optimizer(0 if resume_from is None else 9)
        losses = Losses()
        callbacks = [Swap(), losses, *([snapshot] if snapshot else [])]
        Learner(model, loader(torch.Generator()), opt, torch.nn.functional.mse_loss, callbacks=callbacks).fit(
            2, resume_from=resume_from
        )
        return model, losses

    snap = Snapshot(at_step=3)
    straight = run(snapshot=snap)
    assert snap.state["data"]["ranks"][0]["generators"]["now"] == []  # the swapped-in loader's: none
    assert_same(straight, run(resume_from=snap.state))
