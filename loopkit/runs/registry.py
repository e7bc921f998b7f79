"""Schedules, losses and miners by name and options, as optimizers already are (:func:`loopkit.optimizers.make_optimizer`),
so that a whole job (Finetuner's ``scheduler``, ``scheduler_options``, ``scheduler_step``, ``loss``) is a
parameter set.

Every named schedule is laid out over the whole fit (knots in ``"fraction"`` units), so the same name and
options mean the same curve whether the fit has 3 epochs or 300, and whether it is stepped per batch or per
epoch (``scheduler_step``, see :func:`scheduler_per`). Durations in options (``warmup``, ``pct_start``,
``milestones``) are fractions of the fit.

=================  =========================================================  ===================================
name               curve                                                      options (defaults)
=================  =========================================================  ===================================
``constant``       ``peak`` throughout
``linear``         linear warmup 0 -> ``peak``, linear decay -> ``floor``     ``warmup=0.0``, ``floor=0.0``
``cosine``         linear warmup 0 -> ``peak``, half cosine -> ``floor``      ``warmup=0.0``, ``floor=0.0``
``onecycle``       fastai's one-cycle (:func:`~loopkit.schedules.onecycle`)   ``pct_start=0.25``, ``div=25``,
                                                                              ``div_final=1e5``, ``anneal="cos"``
``step``           ``peak``, times ``gamma`` at each milestone                ``milestones=[0.5, 0.75]``,
                                                                              ``gamma=0.1``
``exponential``    geometric from ``peak`` to ``peak * final_ratio``          ``final_ratio=0.01``
``cosine_restarts`` SGDR cycles (:func:`~loopkit.schedules.cosine_restarts`)  ``cycles=3``, ``floor=0.0``,
                                                                              ``period_mult=1.0``, ``decay=1.0``
=================  =========================================================  ===================================

Example:
    >>> s = make_schedule("linear", 0.1, {"warmup": 0.1})
    >>> s.knots[1].value, s.knot_values
    (0.1, (0.0, 0.1, 0.0))
    >>> type(make_loss("triplet_margin", {"margin": 0.2})).__name__
    'TripletMarginLoss'
    >>> mined = make_loss("pml:triplet_margin", {"margin": 0.2}, miner=make_miner("triplet_margin", {"margin": 0.1}))
    >>> type(mined.loss).__module__, mined.miner.margin
    ('pytorch_metric_learning.losses.triplet_margin_loss', 0.1)
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..schedules import Schedule, cosine_restarts, onecycle


def _fraction(name: str, value: Any, *, closed_low: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a fraction of the fit in [0, 1), got {name}={value!r}")
    if not (0 <= value < 1 if closed_low else 0 < value < 1):
        raise ValueError(
            f"{name} must be a fraction of the fit in {'[0' if closed_low else '(0'}, 1), got {name}={value!r}"
        )
    return float(value)


def _warmup_then(peak: float, warmup: float = 0.0, floor: float = 0.0, *, anneal: str) -> Schedule:
    warmup = _fraction("warmup", warmup)
    if warmup == 0:
        return Schedule([0, 1], [peak, floor], anneal=anneal, unit="fraction")
    return Schedule([0, warmup, 1], [0.0, peak, floor], anneal=["linear", anneal], unit="fraction")


def _constant(peak: float) -> Schedule:
    return Schedule([0, 1], [peak, peak], unit="fraction")


def _linear(peak: float, warmup: float = 0.0, floor: float = 0.0) -> Schedule:
    return _warmup_then(peak, warmup, floor, anneal="linear")


def _cosine(peak: float, warmup: float = 0.0, floor: float = 0.0) -> Schedule:
    return _warmup_then(peak, warmup, floor, anneal="cos")


def _onecycle(
    peak: float, pct_start: float = 0.25, div: float = 25.0, div_final: float = 1e5, anneal: str = "cos"
) -> Schedule:
    return onecycle(1.0, peak, pct_start=pct_start, div=div, div_final=div_final, anneal=anneal, unit="fraction")


def _step(peak: float, milestones: list[float] | tuple[float, ...] = (0.5, 0.75), gamma: float = 0.1) -> Schedule:
    if not isinstance(milestones, (list, tuple)) or not milestones:
        raise ValueError(f"milestones must be a non-empty list of fractions of the fit, got milestones={milestones!r}")
    points = [_fraction("milestone", m, closed_low=False) for m in milestones]
    if points != sorted(set(points)):
        raise ValueError(f"milestones must be strictly increasing, got milestones={milestones!r}")
    values = [peak * gamma**i for i in range(len(points) + 1)]
    return Schedule([0, *points, 1], [*values, values[-1]], anneal="step", unit="fraction")


def _exponential(peak: float, final_ratio: float = 0.01) -> Schedule:
    if isinstance(final_ratio, bool) or not isinstance(final_ratio, (int, float)) or not final_ratio > 0:
        raise ValueError(f"final_ratio must be a positive number, got final_ratio={final_ratio!r}")
    return Schedule([0, 1], [peak, peak * final_ratio], anneal="exp", unit="fraction")


def _cosine_restarts(
    peak: float, cycles: int = 3, floor: float = 0.0, period_mult: float = 1.0, decay: float = 1.0
) -> Schedule:
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 1:
        raise ValueError(f"cycles must be a whole number >= 1, got cycles={cycles!r}")
    period = 1.0 / sum(period_mult**i for i in range(cycles))  # the cycles fill the fit exactly
    return cosine_restarts(
        period, peak, cycles=cycles, floor=floor, period_mult=period_mult, decay=decay, unit="fraction"
    )


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": _constant,
    "linear": _linear,
    "cosine": _cosine,
    "onecycle": _onecycle,
    "step": _step,
    "exponential": _exponential,
    "cosine_restarts": _cosine_restarts,
}


def make_schedule(name: str, peak: float, options: Mapping[str, Any] | None = None) -> Schedule:
    """The schedule called ``name`` (see the table above), peaking at ``peak``, laid out over the whole fit.

    Raises:
        ValueError: an unknown name (listing the known ones), an unknown option (listing the schedule's), or
            an option out of range (quoting it).
    """
    build = SCHEDULES.get(name.lower() if isinstance(name, str) else name)
    if build is None:
        raise ValueError(f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")
    if isinstance(peak, bool) or not isinstance(peak, (int, float)):
        raise ValueError(f"schedule {name!r} needs a number as its peak value, got peak={peak!r}")
    _check_options(f"schedule {name!r}", build, options or {}, skip=("peak",))
    return build(float(peak), **(options or {}))


def scheduler_per(scheduler_step: str) -> str:
    """Finetuner's ``scheduler_step`` (``"batch"`` or ``"epoch"``) as :class:`~loopkit.Scheduler`'s ``per``."""
    per = {"batch": "step", "step": "step", "epoch": "epoch"}.get(scheduler_step)
    if per is None:
        raise ValueError(f"scheduler_step must be 'batch' or 'epoch', got scheduler_step={scheduler_step!r}")
    return per


def _check_options(what: str, fn: Callable, options: Mapping[str, Any], skip: tuple[str, ...] = ()) -> None:
    if not isinstance(options, Mapping):
        raise TypeError(f"{what}: options must be a mapping of names to values, got {options!r}")
    accepted = [p for p in inspect.signature(fn).parameters if p not in ("self", *skip)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"{what} has no option(s) {', '.join(map(repr, unknown))}; its options are {', '.join(accepted) or 'none'}"
        )


def _loss_key(name: str) -> str:
    key = name.lower().replace("_", "").replace("-", "")
    return key[: -len("loss")] if key.endswith("loss") else key


def available_losses() -> dict[str, type]:
    """Normalised name -> loss class, for every ``torch.nn`` module whose name ends in ``Loss``.

    ``"cross_entropy"``, ``"CrossEntropyLoss"`` and ``"crossentropy"`` all name ``torch.nn.CrossEntropyLoss``.
    """
    found = {}
    for attr in dir(torch.nn):
        cls = getattr(torch.nn, attr)
        if attr.endswith("Loss") and isinstance(cls, type) and issubclass(cls, torch.nn.Module):
            found[_loss_key(attr)] = cls
    return found


PML = "pml:"  # the prefix of a pytorch-metric-learning loss's name


def _pml(what: str) -> Any:
    try:
        return importlib.import_module(f"pytorch_metric_learning.{what}")
    except ImportError:
        raise ValueError(
            f"pytorch-metric-learning's {what} need the metric-learning extra: pip install 'loopkit[metric-learning]'"
        ) from None


def _pml_classes(what: str, suffix: str) -> dict[str, type]:
    module = _pml(what)
    found = {}
    for attr in dir(module):
        cls = getattr(module, attr)
        if attr.lower().endswith(suffix) and not attr.startswith("Base") and isinstance(cls, type):
            key = attr.lower()[: -len(suffix)]
            found[key] = cls
    return found


def _build(what: str, cls: type, options: Mapping[str, Any] | None) -> Any:
    options = dict(options or {})
    signature = inspect.signature(cls)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        _check_options(what, cls, options)
        return cls(**options)
    try:  # the class passes **kwargs on to its bases, which check them
        return cls(**options)
    except TypeError as error:
        accepted = [p for p in signature.parameters if p not in ("self", "kwargs")]
        raise ValueError(
            f"{what}: bad option(s) {options!r} ({error}); its own options are {', '.join(accepted)}"
        ) from None


def make_loss(name: str, options: Mapping[str, Any] | None = None, *, miner: Any = None) -> torch.nn.Module:
    """The loss called ``name`` with ``options``.

    - A ``torch.nn`` loss: any case, snake_case, ``Loss`` optional (``"cross_entropy"``, ``"TripletMarginLoss"``).
    - A `pytorch-metric-learning <https://kevinmusgrave.github.io/pytorch-metric-learning/>`_ loss (the
      ``metric-learning`` extra): ``"pml:"`` and its name, the same spellings (``"pml:triplet_margin"``,
      ``"pml:ContrastiveLoss"``, ``"pml:ntxent"``). It is called as ``loss(embeddings, labels)``, as the Learner's
      step calls any loss, so a metric-learning job needs no step of its own.

    Args:
        miner: a miner (:func:`make_miner`) whose tuples the pytorch-metric-learning loss uses: the result is a
            :class:`MinedLoss`, and the miner is ``loss_fn.miner`` to a Scheduler
            (``Attribute("loss_fn.miner.margin")`` schedules its margin).

    Raises:
        ValueError: an unknown name (listing the valid ones), an unknown option (listing the loss's), a
            ``miner`` with a torch loss, or a ``pml:`` name without pytorch-metric-learning installed.
    """
    if not isinstance(name, str):
        raise TypeError(f"loss name must be a string such as 'cross_entropy', got {name!r}")
    if name.lower().startswith(PML):
        known = _pml_classes("losses", "loss")
        cls = known.get(_loss_key(name[len(PML) :]))
        if cls is None:
            raise ValueError(
                f"unknown pytorch-metric-learning loss {name!r}; valid names: "
                f"{', '.join(PML + c.__name__ for c in sorted(known.values(), key=lambda c: c.__name__))}"
            )
        loss = _build(f"loss {name!r}", cls, options)
        return loss if miner is None else MinedLoss(loss, miner)
    if miner is not None:
        raise ValueError(
            f"loss {name!r} is torch's, which takes no miner; use a pytorch-metric-learning loss "
            f"('{PML}{name}') with a miner"
        )
    known = available_losses()
    cls = known.get(_loss_key(name))
    if cls is None:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(sorted(c.__name__ for c in known.values()))}")
    _check_options(cls.__name__, cls, options or {})
    return cls(**(options or {}))


def make_miner(name: str, options: Mapping[str, Any] | None = None) -> Any:
    """The `pytorch-metric-learning <https://kevinmusgrave.github.io/pytorch-metric-learning/miners/>`_ miner
    called ``name`` with ``options`` (the ``metric-learning`` extra): any case, snake_case, ``Miner`` optional
    (``"triplet_margin"`` with ``{"margin": 0.1, "type_of_triplets": "semihard"}``, ``"BatchHardMiner"``,
    ``"multi_similarity"``). Its options are attributes a Scheduler can move (``Attribute("loss_fn.miner.margin")``
    when it is given to :func:`make_loss`).

    Raises:
        ValueError: an unknown name (listing the valid ones), a bad option, or pytorch-metric-learning missing.
    """
    if not isinstance(name, str):
        raise TypeError(f"miner name must be a string such as 'triplet_margin', got {name!r}")
    known = _pml_classes("miners", "miner")
    key = name.lower().replace("_", "").replace("-", "")
    cls = known.get(key[: -len("miner")] if key.endswith("miner") else key)
    if cls is None:
        raise ValueError(
            f"unknown miner {name!r}; valid names: {', '.join(sorted(c.__name__ for c in known.values()))}"
        )
    return _build(f"miner {name!r}", cls, options)


class MinedLoss(torch.nn.Module):
    """A pytorch-metric-learning ``loss`` computed on the tuples ``miner`` picks from each batch:
    ``loss(embeddings, labels, miner(embeddings, labels))``.

    Shapes: ``embeddings`` (batch, dim), ``labels`` (batch,) integer classes; returns a scalar.
    """

    def __init__(self, loss: torch.nn.Module, miner: torch.nn.Module) -> None:
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.loss(embeddings, labels, self.miner(embeddings, labels))
