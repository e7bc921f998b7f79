"""HyperParameters: any state that influences training and is not a parameter of the model.

A hyperparameter is one small class: what learner state it touches (``writes``, which feeds callback
ordering) and how to set a value (``set``). Every other hook is declared on :class:`HyperParameter` with a
default that does nothing, so a subclass overrides only what it needs:

============================== ===================================================================
hook                           when, and what for
============================== ===================================================================
``check(learner)``             when the Learner is built: refuse a target that cannot be set
``bind(learner)``              at ``before_fit``: resolve targets, record base values
``set(learner, value)``        before each step (or epoch): apply the value (required)
``get(learner)``               read the value back (optional; ``Scheduler.history`` has every value)
``applied(values)``            the values the target really takes (an integer target's rounding)
``targets()``                  where ``set`` writes, at which ratio, in which :class:`Domain`
``expect_range(low, high)``    told the schedule's range over the rest of the fit (checks later targets)
``state_dict`` / ``load_...``  what ``bind`` derived that must survive a resume
============================== ===================================================================

Built in here: :class:`Attribute` (any numeric attribute by dotted path from the learner, e.g.
``"loss_fn.margin"``) and :class:`DropoutRate` (the ``p`` of every dropout module in the model); the
optimizer's options (:class:`~loopkit.scheduling.optimizer_hyperparams.LearningRate`, ``Momentum``,
``WeightDecay``) are in :mod:`loopkit.scheduling.optimizer_hyperparams`, domains in
:mod:`loopkit.scheduling.domain`.

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

import numpy as np
import torch

from .domain import (
    ANY,
    Domain as Domain,  # its documented path before domain.py existed (gradient_clip imports it here)
    Target,
)


class HyperParameter:
    """Base class. Subclasses declare ``writes`` and implement ``set``; the rest has sensible defaults.

    ``domain`` (a :class:`Domain`) declares the values the target can take; the Scheduler refuses a schedule
    that leaves it, before training starts where the schedule's range is known, else before the write.
    """

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    domain: Domain = ANY

    @property
    def name(self) -> str:
        """The name logs and histories use; the class name unless a subclass says otherwise."""
        return type(self).__name__

    def check(self, learner: Any) -> None:
        """Raise if this hyperparameter cannot be set on ``learner`` (called when the Learner is built).

        The default checks each dotted path in ``writes`` as :class:`Attribute` checks its path: every part must
        exist on the learner now, the last included, so a ``set`` that would write an attribute nothing reads
        (``learner.loss_fn.label_smoothing`` on ``F.cross_entropy``, a function) is refused here instead of
        changing nothing, silently.

        Raises:
            ValueError: a declared path that does not resolve, naming the part that is missing.
        """
        for path in self.writes:
            parts = path.split(".")
            if len(parts) < 2:  # a learner attribute: the write guard checks those
                continue
            obj, where = learner, "learner"
            for part in parts:
                if not hasattr(obj, part):
                    raise ValueError(
                        f"{self.name} declares writes={path!r}, but {where} ({describe_value(obj)}) has no "
                        f"attribute {part!r}: a set() writing it would change nothing the training reads; write "
                        "an attribute that exists (a loss module's, not a function's), or give the object that "
                        "attribute before building the Learner"
                    )
                obj, where = getattr(obj, part), f"{where}.{part}"

    def bind(self, learner: Any) -> None:
        """Prepare for a fit (called at ``before_fit``): resolve targets, record base values."""

    def set(self, learner: Any, value: float) -> None:
        """Apply ``value``. Called every step by the Scheduler, so keep it cheap."""
        raise NotImplementedError(f"{self.name} must implement set(self, learner, value)")

    def get(self, learner: Any) -> float:
        """The current value as the target holds it. Optional: ``Scheduler.history`` records every value
        a scheduler applied, for any type, so loggers need not call this."""
        raise NotImplementedError(f"{self.name} cannot be read back; read Scheduler.history instead")

    def applied(self, values: np.ndarray) -> np.ndarray:
        """The values the target really takes for scheduled ``values`` (float64 array in and out): the
        identity, or a rounding for an integer target. The Scheduler checks and records these."""
        return values

    def targets(self) -> list[Target]:
        """Where :meth:`set` writes, after :meth:`bind`: one :class:`Target` per place, for domain checks."""
        return [Target(self.name, 1.0, self.domain)]

    def expect_range(self, low: float, high: float) -> None:
        """Told by the Scheduler when a fit starts or resumes: the schedule's values from here on lie in
        [``low``, ``high``] (a built-in schedule's range; not called for a custom one). Default: ignored."""

    def state_dict(self) -> dict[str, Any]:
        """What ``bind`` derived that must survive a resume unchanged (default: nothing)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def __repr__(self) -> str:
        return f"{self.name}()"


class Attribute(HyperParameter):
    """Any numeric attribute reached by a dotted path from the learner, e.g. ``"loss_fn.margin"``.

    The first name is a learner attribute (``model``, ``loss_fn``, ``step_logic``, ...); the rest are
    attributes of it (module children by name, ``"model.head.0.p"``, work too). A tensor-valued target is
    filled in place (dtype, device and identity kept), so a value on the GPU is set without a host sync; an
    int-valued target stays an int (values are rounded, and the rounded values are what history records).

    Args:
        path: the dotted path.
        domain: the values the target can take (:class:`Domain`); any finite number by default.

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

    def __init__(self, path: str, *, domain: Domain = ANY) -> None:
        if not isinstance(domain, Domain):
            raise TypeError(
                f"Attribute(domain={describe_value(domain)}): pass a loopkit.scheduling.domain.Domain, e.g. Domain(0.0)"
            )
        self.domain = domain
        if (
            not isinstance(path, str)
            or not path
            or any(not part.isidentifier() and not part.isdigit() for part in path.split("."))
        ):
            raise ValueError(
                f"Attribute(path={describe_value(path)}): give a dotted path from the learner such as 'loss_fn.margin'"
            )
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
            raise TypeError(
                f"{self!r} points at {describe_value(value)}; only a number or a one-element tensor can be scheduled"
            )

    def bind(self, learner: Any) -> None:
        self._parent, self._leaf = self._resolve(learner)
        current = getattr(self._parent, self._leaf)
        self._is_tensor = isinstance(current, torch.Tensor)
        self._is_int = isinstance(current, int) or (self._is_tensor and not current.is_floating_point())

    def applied(self, values: np.ndarray) -> np.ndarray:
        return np.round(values) if getattr(self, "_is_int", False) else values

    def set(self, learner: Any, value: float) -> None:
        if self._is_tensor:
            getattr(self._parent, self._leaf).fill_(value)
        else:
            setattr(self._parent, self._leaf, round(value) if self._is_int else value)

    def get(self, learner: Any) -> float:
        return float(getattr(self._parent, self._leaf))


class DropoutRate(HyperParameter):
    """The ``p`` of every dropout module in the model (found once per fit, not per step); domain [0, 1].

    Raises:
        ValueError: when the Learner is built, a model without a dropout module.
    """

    writes = ("model.dropout",)
    domain = Domain(0.0, 1.0, why="a dropout probability is in [0, 1]")

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


def describe_value(value: Any) -> str:
    """A value for an error message: a tensor by its shape and dtype (never its elements), anything else by a
    repr of at most 80 characters."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _dropouts(model: torch.nn.Module) -> Sequence[torch.nn.modules.dropout._DropoutNd]:
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
