"""The Distributed callback: train on every process ``torchrun`` started, as one run.

What it does, at ``before_fit`` (it runs before every other callback):

1. **Process group.** Under ``torchrun`` (``WORLD_SIZE`` in the environment) it initialises the default group
   from torchrun's variables, with NCCL when CUDA is available and gloo otherwise, unless a group exists
   already (then it is used as is). Without ``torchrun`` and without a group it does nothing at all: the same
   script runs as one process.
2. **Device.** Under NCCL each rank uses ``cuda:LOCAL_RANK`` (``learner.device``, the model and the
   optimizer's state move there); under gloo the model stays where it is.
3. **Model.** Wrapped in ``DistributedDataParallel`` (after ``SyncBatchNorm`` conversion if asked), or, with
   ``shard=...``, sharded with FSDP2's ``fully_shard`` unit by unit (:mod:`loopkit.callbacks.fsdp`: the wrap
   policy, mixed precision through FSDP's own policy, the optimizer moved onto the sharded parameters); a model
   the user wrapped in DDP, or sharded with ``fully_shard``, is used as is. With gradient accumulation the
   non-final micro-batches of a window skip the gradient all-reduce (DDP's ``no_sync``, FSDP2's
   ``set_requires_gradient_sync(False)``).
4. **Data.** A DataLoader's batch size is the *global* batch; each rank gets its part of every global batch
   (:mod:`loopkit.callbacks.sharding`), validation an unpadded split. ``set_epoch`` is called on the train
   sampler every epoch, the user's own DistributedSampler included. ``shard_data=False`` leaves the data alone.

At ``after_fit`` the learner gets back the model, data and device it was given (a model sharded by
``shard=...`` stays sharded: ``fully_shard`` changes the module in place; its whole weights are
``loopkit.resume.sharded.full_state_dict(model)``). The process group stays up
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
import warnings
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..distributed.ranks import is_distributed
from ..loop.agreement import carry_in_gradients_hook, needs_late_agreement, use_carrier
from ..loop.callback import Callback
from ..loop.data_cursor import set_epoch
from ..loop.evaluation import evaluation_sets
from ..resume.model import unwrap_model
from .fsdp import ShardPolicy, check_policy, is_fully_sharded, shard_model, units
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
        shard: shard the model with FSDP2 instead of replicating it with DDP: ``True`` for a unit per block,
            a module type or tuple of types, or a function ``(name, module) -> bool``
            (:mod:`loopkit.callbacks.fsdp`). Default ``False``: DDP.
        param_dtype: with ``shard``, the dtype FSDP gathers the parameters in for forward and backward
            (``torch.bfloat16``: FSDP's ``MixedPrecisionPolicy``; the sharded parameters and the optimizer
            stay in their own dtype). Default None: the parameters' dtype. Combined with
            ``MixedPrecision(torch.bfloat16)``, autocast finds the parameters in bfloat16 already and casts
            them no second time.
        reduce_dtype: with ``param_dtype``, the dtype gradients are reduce-scattered in (default float32).

    Raises:
        ValueError, TypeError: at ``before_fit``, for data that cannot be split (see
            :mod:`loopkit.callbacks.sharding`), a global batch size the world size does not divide, options
            given for a model the user wrapped in DDP already, or ``sync_batchnorm`` on the CPU.
        ValueError: when the Learner is built, a ``shard`` policy that matches no module of the model, or
            DDP-only options (``sync_batchnorm``, ``find_unused_parameters``, ``static_graph``) with ``shard``;
            at construction, ``param_dtype`` without ``shard``.
        TypeError: at construction, a ``shard`` that is not a policy.
    """

    agrees_across_ranks = True  # sets up the step alike on every rank

    reads = ("epoch", "optimizer", "phase", "accumulate", "callbacks", "valid_every")
    writes = ("model", "train_data", "valid_data", "device", "n_batches")
    # First, so that every callback meets the wrapped model and the split data from before_fit on; a callback
    # that names Distributed in its own run_before still runs before it.
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
        shard: ShardPolicy = False,
        param_dtype: torch.dtype | None = None,
        reduce_dtype: torch.dtype = torch.float32,
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
        check_policy(shard)
        if shard is not False and (sync_batchnorm or find_unused_parameters or static_graph):
            raise ValueError(
                f"Distributed(shard={shard!r}) shards with FSDP2, and sync_batchnorm, find_unused_parameters and "
                "static_graph are DDP's options: drop them, or drop shard to train with DDP"
            )
        if param_dtype is not None and shard is False:
            raise ValueError(
                f"Distributed(param_dtype={param_dtype!r}) sets FSDP2's mixed precision and needs shard=...; under "
                "DDP use the MixedPrecision callback"
            )
        self.shard, self.param_dtype, self.reduce_dtype = shard, param_dtype, reduce_dtype
        self._given: tuple | None = None

    # ------------------------------------------------------------------------------------------ set-up
    def check(self, learner: Any) -> None:
        model = unwrap_model(learner.model)
        if self.shard is not False and not is_fully_sharded(model):
            units(model, self.shard)  # a policy that matches nothing fails when the Learner is built

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
        learner.model = self._wrap(learner.model, learner.optimizer, learner.device)
        if self.shard_data:
            learner.train_data = shard_train_loader(
                learner.train_data, rank=rank, world_size=world_size, seed=self.seed
            )
            sets = {
                name: shard_valid_loader(data, rank=rank, world_size=world_size)
                for name, data in evaluation_sets(learner.valid_data)
            }
            if isinstance(learner.valid_data, Mapping):  # named evaluation sets: each is sharded
                learner.valid_data = sets
            elif sets:
                learner.valid_data = sets["valid"]
            # An epoch of the loop: the shard's length, or valid_every batches of a stream.
            learner.n_batches = learner.valid_every or len(learner.train_data)

    def _init_process_group(self) -> None:
        global _created_by_loopkit
        backend = self.backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        restarts = os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") not in ("", "0")
        if restarts and os.environ.get("TORCH_DISABLE_SHARE_RDZV_TCP_STORE") != "1" and os.environ.get("RANK") == "0":
            warnings.warn(
                "torchrun --max-restarts is set, but TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 is not: restarted workers "
                "share the previous round's store and can connect to dead workers' addresses and hang "
                "(pytorch/pytorch#135712); export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 before torchrun on every "
                "node (docs/distributed.md, Restarts)",
                stacklevel=2,
            )
        dist.init_process_group(backend, timeout=self.timeout)
        if not _created_by_loopkit:
            atexit.register(destroy_process_group)
        _created_by_loopkit = True

    def _wrap(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device | None
    ) -> torch.nn.Module:
        if self.shard is not False and not is_fully_sharded(model):
            policy = None
            if self.param_dtype is not None:
                from torch.distributed.fsdp import MixedPrecisionPolicy

                policy = MixedPrecisionPolicy(param_dtype=self.param_dtype, reduce_dtype=self.reduce_dtype)
            return shard_model(model, optimizer, self.shard, mixed_precision=policy)
        if isinstance(model, DistributedDataParallel) or is_fully_sharded(model):
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

    # ------------------------------------------------------------------------------------------ resuming
    @property
    def seeds_train_order(self) -> bool:
        """Whether this run's train order comes from ``seed`` (the data is split: under torchrun, shard_data)."""
        return self.shard_data and (is_distributed() or "WORLD_SIZE" in os.environ)

    def state_dict(self) -> dict[str, Any]:
        """What a resume at another world size needs to know: the data was split with this shuffle seed."""
        return {"seed": self.seed, "shard_data": self.shard_data}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass  # the settings are the constructor's; check_state_dict made sure they agree

    def check_state_dict(self, state: dict[str, Any], learner: Any) -> None:
        if (state.get("seed"), state.get("shard_data")) != (self.seed, self.shard_data):
            raise ValueError(
                f"it was written with Distributed(seed={state.get('seed')!r}, shard_data={state.get('shard_data')!r}) "
                f"and this run has seed={self.seed!r}, shard_data={self.shard_data!r}: the train order would differ; "
                "resume with the checkpointed run's settings"
            )

    def before_epoch(self, learner: Any) -> None:
        set_epoch(learner.train_data, learner.epoch)  # the user's DistributedSampler too, sharded or not
        wrapped_here = self._given is not None and learner.model is not self._given[0]
        if (
            wrapped_here
            and isinstance(learner.model, DistributedDataParallel)
            and needs_late_agreement(learner.callbacks)
        ):
            self._register_carrier(learner.model)  # once: from then on its hook is there

    @staticmethod
    def _register_carrier(ddp: DistributedDataParallel) -> None:
        """Let after-step outcomes of undeclared callbacks ride in the gradient all-reduce (a DDP communication
        hook, :func:`~loopkit.loop.agreement.carry_in_gradients_hook`); registered only when such a callback is
        there, so a run without one reduces its gradients exactly as plain DDP does. A hook of the user's
        (registered in ``before_fit``, or DDP's own ``mixed_precision``) is left alone: DDP takes one, and the
        outcomes then take a non-blocking all-reduce of their own. Nothing is done when a hook is there (ours,
        from an earlier epoch, included)."""
        if getattr(ddp, "_comm_hooks", None):
            return
        try:
            ddp.register_comm_hook(None, carry_in_gradients_hook)
        except RuntimeError:  # a built-in hook (register_builtin_comm_hook) holds the place
            return
        use_carrier(True)

    def before_batch(self, learner: Any) -> None:
        # Gradient accumulation: the non-final micro-batches of a window skip the gradient reduction. The choice
        # is made before the forward (DDP prepares the backward's reduction there); the step sets `accumulate`
        # for the micro-batch before this event. A flag on the model, not a context entered here and left in
        # another event: DDP's no_sync() sets and restores the same flag.
        if self._given is not None and learner.phase == "train":
            self._sync_gradients(learner.model, not learner.accumulate)

    @staticmethod
    def _sync_gradients(model: Any, sync: bool) -> None:
        if isinstance(model, DistributedDataParallel):
            model.require_backward_grad_sync = sync
        elif callable(getattr(model, "set_requires_gradient_sync", None)):  # FSDP2
            model.set_requires_gradient_sync(sync)

    # ------------------------------------------------------------------------------------------ teardown
    def after_fit(self, learner: Any) -> None:
        use_carrier(False)
        if self._given is not None:
            self._sync_gradients(learner.model, True)  # a fit cut inside a window leaves the wrapped model as new
            learner.model, learner.train_data, learner.valid_data, learner.device = self._given
            self._given = None

    def __repr__(self) -> str:
        shard = "" if self.shard is False else f", shard={self.shard!r}"
        return f"Distributed(backend={self.backend!r}, shard_data={self.shard_data}{shard})"


def destroy_process_group() -> None:
    """Destroy the default process group if loopkit created it (idempotent; registered to run at exit)."""
    global _created_by_loopkit
    if _created_by_loopkit and dist.is_initialized():
        dist.destroy_process_group()
    _created_by_loopkit = False


def _move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Move a (resumed) optimizer's state tensors to ``device``, where its parameters now are."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                state[key] = value.to(device)
