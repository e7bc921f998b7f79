"""The Distributed callback: train on every process ``torchrun`` started, as one run.

What it does, at ``before_fit`` (it runs before every other callback):

1. **Process group.** Under ``torchrun`` (``WORLD_SIZE`` in the environment) it initialises the default group
   from torchrun's variables, with NCCL when CUDA is available and gloo otherwise, unless a group exists
   already (then it is used as is). Without ``torchrun`` and without a group it does nothing at all: the same
   script runs as one process.
2. **Device.** Under NCCL each rank uses ``cuda:LOCAL_RANK`` (``learner.device``, the model and the
   optimizer's state move there); under gloo the model stays where it is.
3. **Model.** Wrapped in ``DistributedDataParallel`` (after ``SyncBatchNorm`` conversion if asked); a model the
   user wrapped in DDP, or sharded with ``fully_shard`` (FSDP2), is used as is. With gradient accumulation the
   non-final micro-batches of a window skip the gradient all-reduce (DDP's ``no_sync``, FSDP2's
   ``set_requires_gradient_sync(False)``).
4. **Data.** A DataLoader's batch size is the *global* batch; each rank gets its part of every global batch
   (:mod:`loopkit.callbacks.sharding`), validation an unpadded split. ``set_epoch`` is called on the train
   sampler every epoch, the user's own DistributedSampler included. ``shard_data=False`` leaves the data alone.

At ``after_fit`` the learner gets back the model, data and device it was given. The process group stays up
for whatever the script does next (validate, predict, another fit); if loopkit created it, loopkit destroys
it when the process exits (or call :func:`destroy_process_group` earlier).

Example (no torchrun here: a single process, nothing changes):
    >>> import torch
    >>> from loopkit import Learner
    >>> model = torch.nn.Linear(2, 1)
    >>> data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2), torch.randn(8, 1)),
    ...                                    batch_size=4)
    >>> learner = Learner(model, data, torch.optim.SGD(model.parameters(), lr=0.1), torch.nn.functional.mse_loss,
    ...                   callbacks=[Distributed()])
    >>> learner.fit(1).model is model
    True
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..distributed.ranks import is_distributed
from ..loop.callback import Callback
from ..loop.data_cursor import set_epoch
from .sharding import shard_train_loader, shard_valid_loader

_created_by_loopkit = False


class Distributed(Callback):
    """Set up data-parallel training across the processes of a ``torchrun`` launch (see the module docs).

    Args:
        backend: ``"nccl"``, ``"gloo"``, ...; default NCCL when CUDA is available, else gloo.
        timeout: how long a collective may wait for the other ranks before it fails (so a rank that died or
            stopped alone ends the job instead of hanging it).
        shard_data: split ``train_data`` and ``valid_data`` over the ranks (default); ``False`` when the data
            is split already (an ``IterableDataset`` that yields each rank's samples, your own sampler).
        seed: the shuffle seed, the same on every rank (epoch ``e`` shuffles with ``seed + e``).
        sync_batchnorm: convert BatchNorm layers to ``torch.nn.SyncBatchNorm`` (statistics over the global
            batch). torch runs SyncBatchNorm on CUDA only: on the CPU this is refused when the fit starts.
        find_unused_parameters: passed to ``DistributedDataParallel``.
        static_graph: passed to ``DistributedDataParallel``.

    Raises:
        ValueError, TypeError: at ``before_fit``, for data that cannot be split (see
            :mod:`loopkit.callbacks.sharding`), a global batch size the world size does not divide, options
            given for a model the user wrapped in DDP already, or ``sync_batchnorm`` on the CPU.
    """

    agrees_across_ranks = True  # sets up the step alike on every rank

    reads = ("epoch", "optimizer", "phase", "accumulate", "callbacks", "valid_every")
    writes = ("model", "train_data", "valid_data", "device", "n_batches")
    # First, so that every callback meets the wrapped model and the split data from before_fit on; a callback
    # that names Distributed in its own run_before (GradientAccumulation, which decides `accumulate` in
    # before_batch) still runs before it.
    run_before = ("*",)

    def __init__(
        self,
        *,
        backend: str | None = None,
        timeout: timedelta = timedelta(minutes=10),
        shard_data: bool = True,
        seed: int = 0,
        sync_batchnorm: bool = False,
        find_unused_parameters: bool = False,
        static_graph: bool = False,
    ) -> None:
        if not isinstance(timeout, timedelta) or timeout.total_seconds() <= 0:
            raise ValueError(f"Distributed(timeout={timeout!r}) needs a positive datetime.timedelta")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"Distributed(seed={seed!r}) needs an int, the same on every rank")
        self.backend, self.timeout, self.shard_data, self.seed = backend, timeout, shard_data, seed
        self.ddp_options: dict[str, Any] = {
            "find_unused_parameters": find_unused_parameters,
            "static_graph": static_graph,
        }
        self.sync_batchnorm = sync_batchnorm
        self._given: tuple | None = None
        self._no_sync: Any = None  # DDP's no_sync() context, entered while a window's gradients accumulate

    # ------------------------------------------------------------------------------------------ set-up
    def before_fit(self, learner: Any) -> None:
        self._given = None
        if not is_distributed():
            if "WORLD_SIZE" not in os.environ:
                return  # not launched by torchrun: one process, nothing to set up
            self._init_process_group()
        self._given = (learner.model, learner.train_data, learner.valid_data, learner.device)
        rank, world_size = dist.get_rank(), dist.get_world_size()
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
            learner.device = device
            learner.model.to(device)
            _move_optimizer_state(learner.optimizer, device)
        learner.model = self._wrap(learner.model, learner.device)
        if _is_fully_sharded(learner.model) and any(type(cb).__name__ == "Checkpoint" for cb in learner.callbacks):
            raise ValueError(
                "Checkpoint cannot save a fully_shard (FSDP2) model yet: its state is sharded over the ranks and "
                "loopkit's checkpoint holds whole tensors; train without Checkpoint, or save with "
                "torch.distributed.checkpoint yourself (docs/distributed.md)"
            )
        if self.shard_data:
            learner.train_data = shard_train_loader(
                learner.train_data, rank=rank, world_size=world_size, seed=self.seed
            )
            if learner.valid_data is not None:
                learner.valid_data = shard_valid_loader(learner.valid_data, rank=rank, world_size=world_size)
            # An epoch of the loop: the shard's length, or valid_every batches of a stream.
            learner.n_batches = learner.valid_every or len(learner.train_data)

    def _init_process_group(self) -> None:
        global _created_by_loopkit
        backend = self.backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=self.timeout)
        if not _created_by_loopkit:
            atexit.register(destroy_process_group)
        _created_by_loopkit = True

    def _wrap(self, model: torch.nn.Module, device: torch.device | None) -> torch.nn.Module:
        if isinstance(model, DistributedDataParallel) or _is_fully_sharded(model):
            chosen = {k: v for k, v in self.ddp_options.items() if v}
            if chosen or self.sync_batchnorm:
                raise ValueError(
                    f"the model is wrapped in {type(model).__name__} already, so Distributed cannot apply "
                    f"{sorted(chosen) + (['sync_batchnorm'] if self.sync_batchnorm else [])}: pass these options "
                    "to your own wrapping call, or give Distributed the unwrapped model"
                )
            return model
        if self.sync_batchnorm:
            if device is None or device.type == "cpu":
                raise ValueError(
                    "Distributed(sync_batchnorm=True): torch's SyncBatchNorm runs on CUDA devices only and this run "
                    "is on the CPU; drop sync_batchnorm (each rank then normalises over its own part of the batch)"
                )
            # SyncBatchNorm takes over the BatchNorm's parameter objects, so the optimizer still holds them.
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        device_ids = [device] if device is not None and device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, **self.ddp_options)

    def before_epoch(self, learner: Any) -> None:
        set_epoch(learner.train_data, learner.epoch)  # the user's DistributedSampler too, sharded or not

    def before_batch(self, learner: Any) -> None:
        # Gradient accumulation: the non-final micro-batches of a window skip the all-reduce. The choice must be
        # made before the forward (DDP prepares the backward's reduction there), so GradientAccumulation, which
        # sets `accumulate` for this batch, runs before this handler.
        if self._given is None or learner.phase != "train":
            return
        accumulate = learner.accumulate
        if accumulate == (self._no_sync is not None):
            return
        model = learner.model
        if accumulate:
            if isinstance(model, DistributedDataParallel):
                self._no_sync = model.no_sync()
                self._no_sync.__enter__()
            else:  # FSDP2
                model.set_requires_gradient_sync(False)
                self._no_sync = model
        else:
            self._end_no_sync()

    def _end_no_sync(self) -> None:
        if self._no_sync is None:
            return
        if isinstance(self._no_sync, torch.nn.Module):  # FSDP2: a method, not a context manager
            resume_sync: Any = self._no_sync.set_requires_gradient_sync
            resume_sync(True)
        else:
            self._no_sync.__exit__(None, None, None)
        self._no_sync = None

    # ------------------------------------------------------------------------------------------ teardown
    def after_fit(self, learner: Any) -> None:
        self._end_no_sync()
        if self._given is not None:
            learner.model, learner.train_data, learner.valid_data, learner.device = self._given
            self._given = None

    def __repr__(self) -> str:
        return f"Distributed(backend={self.backend!r}, shard_data={self.shard_data})"


def destroy_process_group() -> None:
    """Destroy the default process group if loopkit created it (idempotent; registered to run at exit)."""
    global _created_by_loopkit
    if _created_by_loopkit and dist.is_initialized():
        dist.destroy_process_group()
    _created_by_loopkit = False


def _is_fully_sharded(model: torch.nn.Module) -> bool:
    """Whether ``fully_shard`` (FSDP2) was applied to ``model``."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch before FSDP2
        return False
    return isinstance(model, FSDPModule)


def _move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move a (resumed) optimizer's state tensors to ``device``, where its parameters now are."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                state[key] = value.to(device)
