"""What a mid-epoch resume costs to get back to its place in the data: skipping by index vs replaying.

An epoch of 10,000 batches of 4 samples from a map-style dataset whose ``__getitem__`` does a little work (a
small tensor op, standing in for decoding), checkpointed after 8,000 batches. Each round resumes the same
checkpoint twice, interleaved, and stops at the first batch trained after it:

- ``seek``: a plain ``DataLoader`` without workers: the sampler is drawn again and its first 8,000 batches of
  indices skipped, nothing loaded (``loopkit/loop/data_cursor.py``);
- ``replay``: the same loader as a ``DataLoader`` subclass, which loopkit does not seek: the 8,000 finished
  batches are loaded, collated and dropped.

    pytest benchmarks/bench_resume.py --benchmark-only -s
"""

from __future__ import annotations

import copy
import statistics
import time

import torch

from loopkit import Callback, CancelFit, Learner

N_BATCHES, BATCH, DONE, ROUNDS = 10_000, 4, 8_000, 5


class Decoded(torch.utils.data.Dataset):
    def __init__(self):
        self.x = torch.randn(N_BATCHES * BATCH, 8)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i] * 2.0, self.x[i, :1]


class Replayed(torch.utils.data.DataLoader):
    """A DataLoader subclass: loopkit does not assume it can rebuild it, so it replays."""


class Snapshot(Callback):
    reads = ("global_step",)

    def __init__(self):
        self.state = None

    def after_batch(self, learner):
        if learner.phase == "train" and learner.global_step == DONE:
            self.state = copy.deepcopy(learner.state_dict())
            raise CancelFit


class StopAtFirstBatch(Callback):
    def before_batch(self, learner):
        raise CancelFit


def learner(loader, *callbacks):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    return Learner(model, loader, torch.optim.SGD(model.parameters(), lr=0.01), torch.nn.functional.mse_loss,
                   callbacks=list(callbacks))  # fmt: skip


def test_resume_seek_vs_replay(benchmark):
    torch.set_num_threads(1)
    data = Decoded()
    snap = Snapshot()
    learner(torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True), snap).fit(1)
    loaders = {
        "seek": torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=True),
        "replay": Replayed(data, batch_size=BATCH, shuffle=True),
    }
    times: dict[str, list[float]] = {case: [] for case in loaders}

    def one_round():
        for case in list(loaders) if len(times["seek"]) % 2 == 0 else list(loaders)[::-1]:
            resumed = learner(loaders[case], StopAtFirstBatch())
            start = time.perf_counter()
            resumed.fit(1, resume_from=snap.state)
            times[case].append(time.perf_counter() - start)

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    medians = {case: statistics.median(t) * 1e3 for case, t in times.items()}
    per_batch = (medians["replay"] - medians["seek"]) / DONE * 1e3
    benchmark.extra_info.update(ms=medians, replay_us_per_finished_batch=per_batch)
    print(f"\nresume after {DONE} of {N_BATCHES} batches: seek {medians['seek']:.1f} ms, replay "
          f"{medians['replay']:.1f} ms ({per_batch:.1f} us per finished batch)")  # fmt: skip
    assert medians["seek"] < medians["replay"]
