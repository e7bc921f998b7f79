"""HyperParameters: any state that influences training and is not a parameter of the model.

A hyperparameter is one small class: what learner state it touches (``writes``, which feeds callback
ordering) and how to set a value (``set``). Optionally ``check`` validates the target when the Learner is
built, ``bind`` prepares at the start of a fit, and ``get`` reads the current value back for logging.

Built in: :class:`LearningRate`, :class:`Momentum`, :class:`WeightDecay` (optimizer param groups),
:class:`Attribute` (any numeric attribute by dotted path from the learner, e.g. ``"loss_fn.margin"``) and
:class:`DropoutRate` (the ``p`` of every dropout module in the model).

Example: a custom type in four lines.
    >>> class Temperature(HyperParameter):
    ...     writes = ("loss_fn.temperature",)
    ...     def set(self, learner, value):
    ...         learner.loss_fn.temperature = value
    >>> Temperature().name
    'Temperature'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class HyperParameter:
    """Base class. Subclasses declare ``writes`` and implement ``set``; the rest has sensible defaults."""

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The name logs and histories use; the class name unless a subclass says otherwise."""
        return type(self).__name__

    def check(self, learner: Any) -> None:
        """Raise if this hyperparameter cannot be set on ``learner`` (called when the Learner is built)."""

    def bind(self, learner: Any) -> None:
        """Prepare for a fit (called at ``before_fit``): resolve targets, record base values."""

    def set(self, learner: Any, value: float) -> None:
        """Apply ``value``. Called every step by the Scheduler, so keep it cheap."""
        raise NotImplementedError(f"{self.name} must implement set(self, learner, value)")

    def get(self, learner: Any) -> float:
        """The current value as the target holds it. Optional: ``Scheduler.history`` records every value
        a scheduler applied, for any type, so loggers need not call this."""
        raise NotImplementedError(f"{self.name} cannot be read back; read Scheduler.history instead")

    def state_dict(self) -> dict[str, Any]:
        """What ``bind`` derived that must survive a resume unchanged (default: nothing)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def __repr__(self) -> str:
        return f"{self.name}()"


class OptimizerHyperParameter(HyperParameter):
    """A value stored in the optimizer's param groups under ``key``.

    By default the schedule's value is applied to every group scaled by the group's own ratio to the
    largest group's value at the start of the fit, so layer-wise rates keep their proportions: groups at
    1e-3 and 1e-4 scheduled to 0.5 become 0.5 and 0.05. ``group=i`` schedules one group alone, unscaled;
    ``scale_groups=False`` gives every group the schedule's value.

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
            raise ValueError(f"{type(self).__name__}(group={group!r}): group must be a param group index >= 0 or None")
        self.group = group
        self.scale_groups = scale_groups
        self._ratios: list[float] = []

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
        return group[self.key]

    def _write(self, group: dict, value: float) -> None:
        group[self.key] = value

    def check(self, learner: Any) -> None:
        groups = learner.optimizer.param_groups
        if self.group is not None and self.group >= len(groups):
            raise ValueError(
                f"{self!r}: the optimizer has {len(groups)} param group(s); pass a group index below {len(groups)}"
            )
        for i, group in enumerate(groups):
            try:
                self._read(group)
            except KeyError:
                raise ValueError(
                    f"{self!r}: param group {i} of {type(learner.optimizer).__name__} has no {self.key!r} "
                    f"(it has {sorted(k for k in group if k != 'params')}); this optimizer cannot schedule "
                    f"{self.key}"
                ) from None

    def bind(self, learner: Any) -> None:
        self._groups = learner.optimizer.param_groups
        bases = [float(self._read(g)) for g in self._groups]
        top = max(bases, key=abs) if bases else 0.0
        if self.group is not None:
            self._groups = [self._groups[self.group]]
            self._ratios = [1.0]
        elif self.scale_groups and top != 0.0:
            self._ratios = [b / top for b in bases]
        else:
            self._ratios = [1.0] * len(bases)

    def set(self, learner: Any, value: float) -> None:
        write = self._write
        for group, ratio in zip(self._groups, self._ratios):
            write(group, value * ratio)

    def get(self, learner: Any) -> float:
        groups = learner.optimizer.param_groups
        return float(self._read(groups[self.group if self.group is not None else 0]))

    def state_dict(self) -> dict[str, Any]:
        return {"ratios": list(self._ratios)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Ratios recomputed from a checkpoint's already-scheduled values can differ in the last bit.
        self._ratios = list(state["ratios"])


class LearningRate(OptimizerHyperParameter):
    """The learning rate, ``param_group["lr"]``, in the optimizer's own units (the step size per unit of update).

    Args and errors: see :class:`OptimizerHyperParameter` (``group``, ``scale_groups``).
    """

    key = "lr"
    writes = ("optimizer.lr",)


class WeightDecay(OptimizerHyperParameter):
    """The weight decay, ``param_group["weight_decay"]``: the optimizer's coefficient (decoupled for AdamW).

    Args and errors: see :class:`OptimizerHyperParameter` (``group``, ``scale_groups``).
    """

    key = "weight_decay"
    writes = ("optimizer.weight_decay",)


class Momentum(OptimizerHyperParameter):
    """Momentum: ``param_group["momentum"]`` (SGD, RMSprop), or ``betas[0]`` for Adam-style optimizers.

    Args and errors: see :class:`OptimizerHyperParameter` (``group``, ``scale_groups``).
    """

    key = "momentum"
    writes = ("optimizer.momentum",)

    def _read(self, group: dict) -> float:
        if "betas" in group:
            return group["betas"][0]
        return group["momentum"]

    def _write(self, group: dict, value: float) -> None:
        if "betas" in group:
            group["betas"] = (value, group["betas"][1])
        else:
            group["momentum"] = value


class Attribute(HyperParameter):
    """Any numeric attribute reached by a dotted path from the learner, e.g. ``"loss_fn.margin"``.

    The first name is a learner attribute (``model``, ``loss_fn``, ``step_logic``, ...); the rest are
    attributes of it (module children by name, ``"model.head.0.p"``, work too). A tensor-valued target is
    filled in place, so a value on the GPU is set without a host sync.

    Raises:
        ValueError: at construction, a path that is not a dotted name with at least two parts (``"loss_fn.margin"``).
        AttributeError: when the Learner is built, a path that does not exist on it.
        TypeError: when the Learner is built, a target that is not a number or a one-element tensor.

    Example:
        >>> import torch
        >>> class Ns: pass
        >>> learner = Ns(); learner.loss_fn = torch.nn.TripletMarginLoss(margin=1.0)
        >>> margin = Attribute("loss_fn.margin")
        >>> margin.check(learner); margin.bind(learner); margin.set(learner, 0.25)
        >>> learner.loss_fn.margin
        0.25
    """

    def __init__(self, path: str) -> None:
        if (
            not isinstance(path, str)
            or not path
            or any(not part.isidentifier() and not part.isdigit() for part in path.split("."))
        ):
            raise ValueError(f"Attribute(path={path!r}): give a dotted path from the learner such as 'loss_fn.margin'")
        if "." not in path:
            raise ValueError(
                f"Attribute(path={path!r}) would rebind a learner attribute; point at a value inside one, "
                f"such as '{path}.margin'"
            )
        self.path = path
        self.writes = (path,)

    @property
    def name(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"Attribute({self.path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Attribute) and other.path == self.path

    def __hash__(self) -> int:
        return hash((Attribute, self.path))

    def _resolve(self, learner: Any) -> tuple[Any, str]:
        *parents, leaf = self.path.split(".")
        obj = learner
        for depth, part in enumerate([*parents, leaf]):
            if not hasattr(obj, part):
                where = ".".join(["learner", *parents[:depth]])
                raise AttributeError(f"{self!r}: {where} has no attribute {part!r}; check the path")
            if depth < len(parents):
                obj = getattr(obj, part)
        return obj, leaf

    def check(self, learner: Any) -> None:
        parent, leaf = self._resolve(learner)
        value = getattr(parent, leaf)
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float, torch.Tensor))
            or (isinstance(value, torch.Tensor) and value.numel() != 1)
        ):
            raise TypeError(f"{self!r} points at {value!r}; only a number or a one-element tensor can be scheduled")

    def bind(self, learner: Any) -> None:
        self._parent, self._leaf = self._resolve(learner)
        self._is_tensor = isinstance(getattr(self._parent, self._leaf), torch.Tensor)

    def set(self, learner: Any, value: float) -> None:
        if self._is_tensor:
            getattr(self._parent, self._leaf).fill_(value)
        else:
            setattr(self._parent, self._leaf, value)

    def get(self, learner: Any) -> float:
        return float(getattr(self._parent, self._leaf))


class DropoutRate(HyperParameter):
    """The ``p`` of every dropout module in the model (found once per fit, not per step): a probability in [0, 1).

    Raises:
        ValueError: when the Learner is built, a model without a dropout module.
    """

    writes = ("model.dropout",)

    def check(self, learner: Any) -> None:
        if not _dropouts(learner.model):
            raise ValueError(f"DropoutRate: {type(learner.model).__name__} has no dropout module to schedule")

    def bind(self, learner: Any) -> None:
        self._modules = _dropouts(learner.model)

    def set(self, learner: Any, value: float) -> None:
        for module in self._modules:
            module.p = value

    def get(self, learner: Any) -> float:
        return float(self._modules[0].p)


def _dropouts(model: torch.nn.Module) -> Sequence[torch.nn.modules.dropout._DropoutNd]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
