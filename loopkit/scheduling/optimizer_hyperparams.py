"""The optimizer's options as hyperparameters: :class:`LearningRate`, :class:`Momentum`, :class:`WeightDecay`.

Each is a :class:`OptimizerHyperParameter`: a value stored in every param group (or one) under a key, applied
with each group's ratio to the largest, so layer-wise rates keep their proportions; the domain of each group's
value is torch's own rule for that optimizer.

Example:
    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> optimizer = torch.optim.SGD([{"params": [model.weight], "lr": 1e-3}, {"params": [model.bias], "lr": 1e-4}])
    >>> class Learnerish: pass
    >>> learner = Learnerish(); learner.optimizer = optimizer
    >>> lr = LearningRate(); lr.check(learner); lr.bind(learner); lr.set(learner, 0.5)
    >>> [round(g["lr"], 12) for g in optimizer.param_groups]   # each group keeps its ratio to the largest
    [0.5, 0.05]
"""

from __future__ import annotations

from typing import Any

import torch

from .domain import NON_NEGATIVE, Domain, Target
from .hyperparams import HyperParameter, describe_value


class OptimizerHyperParameter(HyperParameter):
    """A value stored in the optimizer's param groups under ``key``.

    By default the schedule's value is applied to every group scaled by the group's own ratio to the
    largest group's value at the start of the fit, so layer-wise rates keep their proportions: groups at
    1e-3 and 1e-4 scheduled to 0.5 become 0.5 and 0.05. ``group=i`` schedules one group alone, unscaled;
    ``scale_groups=False`` gives every group the schedule's value.

    A group added during the fit (``optimizer.add_param_group``, to unfreeze a backbone half-way) joins at the
    next step, keeping the ratio it had when it arrived: added at ``x`` while the schedule stood at ``y``, it
    moves as ``x / y`` times the schedule from then on (with ``scale_groups=False`` it gets the schedule's
    value; with ``group=i`` it is left alone).

    A write changes only the value it names: a tensor-valued option is filled in place (its dtype and device
    kept), and a tuple-valued one (Adam's ``betas``) keeps its other members and its container type.

    Args:
        group: index of the one param group to set, or ``None`` for all groups.
        scale_groups: with ``group=None``, keep each group's ratio to the largest (default) or not.

    Raises:
        ValueError: at construction, a ``group`` that is not an index >= 0 or None; when the Learner is built,
            a ``group`` past the optimizer's param groups, or a param group without this key (an optimizer
            that has no such hyperparameter).
    """

    key: str = ""
    writes: tuple[str, ...] = ()

    def __init__(self, group: int | None = None, *, scale_groups: bool = True) -> None:
        if group is not None and (isinstance(group, bool) or not isinstance(group, int) or group < 0):
            raise ValueError(
                f"{type(self).__name__}(group={describe_value(group)}): group must be a param group index >= 0 or None"
            )
        if not isinstance(scale_groups, bool):
            raise TypeError(f"{type(self).__name__}(scale_groups={describe_value(scale_groups)}): pass True or False")
        self.group = group
        self.scale_groups = scale_groups
        self._ratios: list[float] = []
        self._groups: list[dict] = []

    @property
    def name(self) -> str:
        return self.key if self.group is None else f"{self.key}/group{self.group}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(group={self.group!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and (other.group, other.scale_groups) == (self.group, self.scale_groups)

    def __hash__(self) -> int:
        return hash((type(self), self.group, self.scale_groups))

    def _read(self, group: dict) -> float:
        return float(group[self.key])

    def _write(self, group: dict, value: float) -> None:
        write_option(group, self.key, value)

    def _plain_key(self, group: dict) -> str | None:
        """The key a plain ``group[key] = value`` can write in ``group``, or None if ``_write`` must do it."""
        return None if isinstance(group[self.key], torch.Tensor) else self.key

    def _choose_writer(self) -> None:
        # Performance: most runs hold plain floats under one key, written by one dict store per group; the
        # general writer (tensors filled in place, betas tuples rebuilt) costs a call per group.
        keys = {self._plain_key(g) for g in self._groups}
        self._fast_key = keys.pop() if len(keys) == 1 and None not in keys else None
        self._pairs = list(zip(self._groups, self._ratios))

    def group_domain(self, group: dict, optimizer: torch.optim.Optimizer) -> Domain:
        """The values this option may take in ``group`` of ``optimizer`` (torch's own rule)."""
        return NON_NEGATIVE

    def check(self, learner: Any) -> None:
        groups = learner.optimizer.param_groups
        if self.group is not None and self.group >= len(groups):
            raise ValueError(
                f"{self!r}: the optimizer has {len(groups)} param group(s); pass a group index below {len(groups)}"
            )
        for i, group in enumerate(groups):
            self._check_group(learner.optimizer, i, group)

    def _check_group(self, optimizer: Any, i: int, group: dict) -> None:
        try:
            self._read(group)
        except KeyError:
            raise ValueError(
                f"{self!r}: param group {i} of {type(optimizer).__name__} has no {self.key!r} "
                f"(it has {sorted(k for k in group if k != 'params')}); this optimizer cannot schedule "
                f"{self.key}"
            ) from None

    def bind(self, learner: Any) -> None:
        self._optimizer = learner.optimizer
        self._all = learner.optimizer.param_groups  # the optimizer's own list: groups added later show up here
        bases = [self._read(g) for g in self._all]
        top = max(bases, key=abs) if bases else 0.0
        if self.group is not None:
            self._groups = [self._all[self.group]]
            self._ratios = [1.0]
        else:
            self._groups = list(self._all)
            if self.scale_groups and top != 0.0:
                self._ratios = [b / top for b in bases]
            else:
                self._ratios = [1.0] * len(bases)
        self._top = top
        self._ranges: tuple[float, float] | None = None
        self._n_all = len(self._all) if self.group is None else -1
        self._choose_writer()

    def set(self, learner: Any, value: float) -> None:
        if len(self._all) != self._n_all and self.group is None:
            self._adopt_new_groups()
        key = self._fast_key
        if key is not None:
            for group, ratio in self._pairs:
                group[key] = value * ratio
        else:
            write = self._write
            for group, ratio in self._pairs:
                write(group, value * ratio)

    def _last(self) -> float | None:
        """The schedule's value last written: what a group of ratio 1 holds (None before any write)."""
        for group, ratio in zip(self._groups, self._ratios):
            if ratio == 1.0:
                return self._read(group)
        return None

    def _adopt_new_groups(self) -> None:
        """Groups added with ``optimizer.add_param_group`` since the last write join with their ratio then."""
        if len(self._all) < len(self._groups):
            raise RuntimeError(
                f"{self!r}: the optimizer lost param groups during the fit ({len(self._groups)} -> "
                f"{len(self._all)}); groups may be added (optimizer.add_param_group) but not removed"
            )
        for i in range(len(self._groups), len(self._all)):
            group = self._all[i]
            self._check_group(self._optimizer, i, group)
            x = self._read(group)
            y = self._last()
            if not self.scale_groups:
                ratio = 1.0
            elif y is not None and y != 0.0:
                ratio = x / y
            else:  # no value yet, or the schedule stands at 0: ratio to the largest group at the fit's start
                ratio = x / self._top if self._top != 0.0 else 1.0
            domain = self.group_domain(group, self._optimizer)
            if self._ranges is not None:
                lo, hi = self._ranges
                for v in (lo * ratio, hi * ratio):
                    if v not in domain:
                        raise ValueError(
                            f"{self!r}: param group {i}, added during the fit at {self.key}={x:g} while the schedule "
                            f"stood at {y!r}, follows it at ratio {ratio:g}, so the rest of the schedule would write "
                            f"{v:g}, outside {domain} ({domain.why}); add the group at a smaller {self.key}"
                        )
            self._groups.append(group)
            self._ratios.append(ratio)
        self._n_all = len(self._all)
        self._choose_writer()

    def expect_range(self, low: float, high: float) -> None:
        """Told by the Scheduler: the schedule's values from here on lie in [low, high] (checks added groups)."""
        self._ranges = (low, high)

    def targets(self) -> list[Target]:
        first = self.group or 0
        return [
            Target(f"param group {first + i} {self.key}", r, self.group_domain(g, self._optimizer))
            for i, (g, r) in enumerate(zip(self._groups, self._ratios))
        ]

    def get(self, learner: Any) -> float:
        groups = learner.optimizer.param_groups
        return float(self._read(groups[self.group if self.group is not None else 0]))

    def state_dict(self) -> dict[str, Any]:
        return {"ratios": list(self._ratios)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Ratios recomputed from a checkpoint's already-scheduled values can differ in the last bit.
        ratios = list(state["ratios"])
        if self.group is None and getattr(self, "_all", None) is not None:  # bound: a fit is under way
            if len(ratios) > len(self._all):
                raise ValueError(
                    f"{self!r}: the checkpoint scheduled {len(ratios)} param groups but the optimizer has "
                    f"{len(self._all)}; build the optimizer with the groups the checkpointed run had added"
                )
            self._groups = list(self._all[: len(ratios)])
        self._ratios = ratios
        if getattr(self, "_all", None) is not None:
            self._n_all = len(self._groups) if self.group is None else -1
            self._choose_writer()


def write_option(container: dict, key: Any, value: float) -> None:
    """``container[key] = value``, but a tensor already there is filled in place (dtype, device and identity
    kept: a captured CUDA graph or a compiled step keeps reading it). For any writer of a param group's option
    (the Scheduler's hyperparameters, ``ReduceLROnPlateau``).

    Example:
        >>> import torch
        >>> group = {"lr": torch.tensor(0.1)}; lr = group["lr"]
        >>> write_option(group, "lr", 0.5); group["lr"] is lr, float(lr)
        (True, 0.5)
    """
    old = container[key]
    if isinstance(old, torch.Tensor):
        old.fill_(value)
    else:
        container[key] = value


class LearningRate(OptimizerHyperParameter):
    """The learning rate, ``param_group["lr"]``, in the optimizer's own units (the step size per unit of update).
    Domain: >= 0 (torch.optim refuses a negative lr).

    Args and errors: see :class:`OptimizerHyperParameter` (``group``, ``scale_groups``).
    """

    key = "lr"
    writes = ("optimizer.lr",)

    def group_domain(self, group: dict, optimizer: Any) -> Domain:
        return Domain(0.0, why="torch.optim refuses a negative learning rate")


class WeightDecay(OptimizerHyperParameter):
    """The weight decay, ``param_group["weight_decay"]``: the optimizer's coefficient (decoupled for AdamW).
    Domain: >= 0.

    Args and errors: see :class:`OptimizerHyperParameter` (``group``, ``scale_groups``).
    """

    key = "weight_decay"
    writes = ("optimizer.weight_decay",)

    def group_domain(self, group: dict, optimizer: Any) -> Domain:
        return Domain(0.0, why="torch.optim refuses a negative weight decay")


class Momentum(OptimizerHyperParameter):
    """Momentum: ``param_group["momentum"]`` (SGD, RMSprop; domain >= 0), or ``betas[0]`` for Adam-style
    optimizers (domain [0, 1); ``betas[1]`` and the container's type are kept).

    Args and errors: see :class:`OptimizerHyperParameter` (``group``, ``scale_groups``).
    """

    key = "momentum"
    writes = ("optimizer.momentum",)

    def _read(self, group: dict) -> float:
        if "betas" in group:
            return float(group["betas"][0])
        return float(group["momentum"])

    def _plain_key(self, group: dict) -> str | None:
        if "betas" in group or isinstance(group["momentum"], torch.Tensor):
            return None
        return "momentum"

    def _write(self, group: dict, value: float) -> None:
        if "betas" not in group:
            write_option(group, "momentum", value)
            return
        betas = group["betas"]
        if isinstance(betas[0], torch.Tensor):
            betas[0].fill_(value)
        elif isinstance(betas, list):
            betas[0] = value
        else:
            group["betas"] = (value, *betas[1:])

    def group_domain(self, group: dict, optimizer: Any) -> Domain:
        if "betas" in group:
            return Domain(0.0, 1.0, high_open=True, why=f"torch's {type(optimizer).__name__} needs 0 <= betas[0] < 1")
        return Domain(0.0, why=f"torch's {type(optimizer).__name__} refuses a negative momentum")
