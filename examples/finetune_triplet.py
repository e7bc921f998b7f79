"""A Finetuner-style job as a parameter set: fine-tune an embedding with a triplet loss and a miner, both by
name from pytorch-metric-learning, layer-wise learning rates, and a miner margin that is a parameter and may
be scheduled.

This file is a task for :mod:`loopkit.runs` (``Params`` and ``build``), so it runs, records and sweeps from the
command line::

    python -m loopkit.runs run examples/finetune_triplet.py --epochs=10 --miner_margin=0.1 --miner_margin_end=0.3
    python -m loopkit.runs sweep examples/finetune_triplet_sweep.yaml

The data comes from ``examples/metric_learning.py`` (clusters in 4 informative dimensions under 12 of nuisance
noise). Quality is recall@1 on held-out points. It needs the ``metric-learning`` extra.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import sys

import torch

from loopkit import Attribute, Learner, LearningRate, Metrics, Schedule, Scheduler
from loopkit.optimizers import make_optimizer
from loopkit.param_groups import layerwise_groups
from loopkit.runs import param
from loopkit.runs.registry import make_loss, make_miner, make_schedule, scheduler_per

MONITOR, MODE = "valid_recall_at_1", "max"


def _sibling(name: str):
    key = f"_loopkit_example_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, pathlib.Path(__file__).with_name(f"{name}.py"))
        sys.modules[key] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[key]


metric_learning = _sibling("metric_learning")


@dataclasses.dataclass
class Params:
    epochs: int = param(10, help="epochs to train", low=1)
    batch_size: int = param(64, low=2)
    learning_rate: float = param(1e-2, low=0, help="the head's learning rate")
    lr_decay: float = param(1.0, low=0, high=1, help="layer-wise rate decay per block below the head")
    optimizer: str = param("adam")
    optimizer_options: dict = param({})
    scheduler: str = param("constant", help="learning-rate schedule by name")
    scheduler_options: dict = param({})
    scheduler_step: str = param("batch", choices=("batch", "epoch"))
    loss: str = param("pml:triplet_margin", help="a loss by name (pml: for pytorch-metric-learning's)")
    loss_options: dict = param({"margin": 0.2})
    miner: str = param("triplet_margin", help="a pytorch-metric-learning miner by name")
    miner_options: dict = param({"type_of_triplets": "semihard"})
    miner_margin: float = param(0.05, help="the miner's margin (at the start, when scheduled)", low=0)
    miner_margin_end: float | None = param(None, help="if given, the miner's margin moves to this by a cosine", low=0)
    embedding: int = param(8, low=1)
    seed: int = param(0)


def recall_at_1(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Of the points in the batch, the fraction whose nearest other point (cosine) shares its label."""
    emb = torch.nn.functional.normalize(embeddings, dim=1)
    dist = torch.cdist(emb, emb).fill_diagonal_(float("inf"))
    return (labels[dist.argmin(dim=1)] == labels).float().mean()


def build(params: Params, callbacks=()) -> Learner:
    torch.manual_seed(params.seed)
    x, y = metric_learning.clusters(seed=params.seed)
    test = torch.arange(len(y)) % 4 == 0  # a quarter of every class held out
    train = torch.utils.data.TensorDataset(x[~test], y[~test])
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, params.embedding))
    miner = make_miner(params.miner, {"margin": params.miner_margin, **params.miner_options})
    schedules = {LearningRate: make_schedule(params.scheduler, params.learning_rate, params.scheduler_options)}
    if params.miner_margin_end is not None:
        schedules[Attribute("loss_fn.miner.margin")] = Schedule(
            [0, 1], [params.miner_margin, params.miner_margin_end], anneal="cos", unit="fraction"
        )
    groups = layerwise_groups([model[0], model[2]], lr=params.learning_rate, decay=params.lr_decay)
    return Learner(
        model,
        torch.utils.data.DataLoader(train, batch_size=params.batch_size, shuffle=True),
        make_optimizer(params.optimizer, groups, {"lr": params.learning_rate, **params.optimizer_options}),
        make_loss(params.loss, params.loss_options, miner=miner),
        valid_data=[(x[test], y[test])],  # one batch: recall@1 over all held-out points
        callbacks=[
            Scheduler(schedules, per=scheduler_per(params.scheduler_step)),
            Metrics(recall_at_1),
            *callbacks,
        ],
    )


def main(argv=None) -> int:
    from loopkit.runs.cli import run_task_main

    run_task_main(sys.modules[__name__], argv, prog="python examples/finetune_triplet.py", experiment="triplet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
