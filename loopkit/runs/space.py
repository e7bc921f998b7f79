"""Search dimensions in Valohai's five modes, grids over them, and what each means to an Optuna sampler.

=========================================  ============================================  ==========================
mode                                       grid values (``values()``)                    to a sampler (random, TPE)
=========================================  ============================================  ==========================
``Single(value)``                          ``[value]``                                   fixed
``Multiple([a, b, ...])``                  ``[a, b, ...]``                               categorical
``Linear(start, end, count)``              ``count`` evenly spaced, ends included         float in [start, end] on
                                                                                         that grid's step
``Logspace(start, end, count, base=10)``   ``base**e`` for ``count`` evenly spaced       log-uniform float in
                                           exponents ``e`` from ``start`` to ``end``       [base**start, base**end]
``Random(low, high, count, distribution)``  ``count`` draws (``uniform``, ``loguniform``,  that distribution
                                           ``int``) from the sweep's seeded generator
=========================================  ============================================  ==========================

A grid is every combination of its dimensions' values (6 x 6 = 36 points). A dimension's name is a
parameter of the task, or ``"field.key"`` for a key inside a dict parameter (``scheduler_options.pct_start``),
so the argument of a schedule is searched like any scalar.

Example:
    >>> Logspace(-4, -2, 3).values()
    [0.0001, 0.001, 0.01]
    >>> grid({"lr": Multiple([0.1, 0.01]), "width": Linear(16, 48, 3)})
    [{'lr': 0.1, 'width': 16}, {'lr': 0.1, 'width': 32}, {'lr': 0.1, 'width': 48}, {'lr': 0.01, 'width': 16}, {'lr': 0.01, 'width': 32}, {'lr': 0.01, 'width': 48}]
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DISTRIBUTIONS = ("uniform", "loguniform", "int")


class SpaceError(ValueError):
    """A search space that cannot be searched; raised before any trial runs."""


def _number(mode: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpaceError(f"{mode}: {name} must be a finite number, got {name}={value!r}")
    return value


def _count(mode: str, count: Any) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise SpaceError(f"{mode}: count must be a whole number >= 1, got count={count!r}")
    return count


class Dimension:
    """One searched parameter: its grid values, and the Optuna distribution a sampler draws from."""

    def values(self, rng: np.random.Generator | None = None) -> list[Any]:
        raise NotImplementedError

    def suggest(self, trial: Any, name: str) -> Any:
        """The value for ``trial`` (an ``optuna.Trial``) from a sampler, under the parameter ``name``."""
        raise NotImplementedError

    def is_log(self) -> bool:
        return False


class Single(Dimension):
    def __init__(self, value: Any) -> None:
        self.value = value

    def values(self, rng: np.random.Generator | None = None) -> list[Any]:
        return [self.value]

    def suggest(self, trial: Any, name: str) -> Any:
        return self.value

    def __repr__(self) -> str:
        return f"Single({self.value!r})"


class Multiple(Dimension):
    def __init__(self, values: Sequence[Any]) -> None:
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise SpaceError(f"Multiple needs a non-empty list of values, got {values!r}")
        self.choices = list(values)

    def values(self, rng: np.random.Generator | None = None) -> list[Any]:
        return list(self.choices)

    def suggest(self, trial: Any, name: str) -> Any:
        return trial.suggest_categorical(name, self.choices)

    def __repr__(self) -> str:
        return f"Multiple({self.choices!r})"


class Linear(Dimension):
    def __init__(self, start: float, end: float, count: int) -> None:
        self.start, self.end = _number("Linear", "start", start), _number("Linear", "end", end)
        self.count = _count("Linear", count)
        self.integer = all(isinstance(v, int) for v in (start, end)) and (
            count == 1 or (end - start) % (count - 1) == 0
        )

    def values(self, rng: np.random.Generator | None = None) -> list[Any]:
        if self.count == 1:
            return [self.start]
        points = [self.start + (self.end - self.start) * i / (self.count - 1) for i in range(self.count)]
        return [round(p) for p in points] if self.integer else [float(p) for p in points]

    def suggest(self, trial: Any, name: str) -> Any:
        if self.count == 1 or self.start == self.end:
            return self.values()[0]
        low, high = min(self.start, self.end), max(self.start, self.end)
        step = (high - low) / (self.count - 1)
        if self.integer:
            return trial.suggest_int(name, int(low), int(high), step=int(step))
        return trial.suggest_float(name, low, high, step=step)

    def __repr__(self) -> str:
        return f"Linear({self.start!r}, {self.end!r}, {self.count})"


class Logspace(Dimension):
    def __init__(self, start: float, end: float, count: int, base: float = 10.0) -> None:
        self.start, self.end = _number("Logspace", "start", start), _number("Logspace", "end", end)
        self.count = _count("Logspace", count)
        self.base = _number("Logspace", "base", base)
        if not self.base > 0 or self.base == 1:
            raise SpaceError(f"Logspace: base must be positive and not 1, got base={base!r}")

    def values(self, rng: np.random.Generator | None = None) -> list[Any]:
        if self.count == 1:
            return [float(self.base**self.start)]
        exponents = [self.start + (self.end - self.start) * i / (self.count - 1) for i in range(self.count)]
        return [float(self.base**e) for e in exponents]

    def suggest(self, trial: Any, name: str) -> Any:
        if self.count == 1 or self.start == self.end:
            return self.values()[0]
        ends = sorted((self.base**self.start, self.base**self.end))
        return trial.suggest_float(name, ends[0], ends[1], log=True)

    def is_log(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"Logspace({self.start!r}, {self.end!r}, {self.count}, base={self.base!r})"


class Random(Dimension):
    def __init__(self, low: float, high: float, count: int, distribution: str = "uniform") -> None:
        self.low, self.high = _number("Random", "low", low), _number("Random", "high", high)
        self.count = _count("Random", count)
        if distribution not in DISTRIBUTIONS:
            raise SpaceError(f"Random: unknown distribution {distribution!r}; use one of {', '.join(DISTRIBUTIONS)}")
        if self.low > self.high:
            raise SpaceError(f"Random: low must not exceed high, got low={low!r}, high={high!r}")
        if distribution == "loguniform" and not self.low > 0:
            raise SpaceError(f"Random: a loguniform range must be positive, got low={low!r}")
        if distribution == "int" and not all(float(v).is_integer() for v in (low, high)):
            raise SpaceError(f"Random: an int range needs whole-number ends, got low={low!r}, high={high!r}")
        self.distribution = distribution

    def values(self, rng: np.random.Generator | None = None) -> list[Any]:
        rng = rng if rng is not None else np.random.default_rng(0)
        if self.distribution == "int":
            return [int(v) for v in rng.integers(int(self.low), int(self.high), size=self.count, endpoint=True)]
        if self.distribution == "loguniform":
            return [float(v) for v in np.exp(rng.uniform(math.log(self.low), math.log(self.high), size=self.count))]
        return [float(v) for v in rng.uniform(self.low, self.high, size=self.count)]

    def suggest(self, trial: Any, name: str) -> Any:
        if self.low == self.high:
            return int(self.low) if self.distribution == "int" else float(self.low)
        if self.distribution == "int":
            return trial.suggest_int(name, int(self.low), int(self.high))
        return trial.suggest_float(name, self.low, self.high, log=self.distribution == "loguniform")

    def is_log(self) -> bool:
        return self.distribution == "loguniform"

    def __repr__(self) -> str:
        return f"Random({self.low!r}, {self.high!r}, {self.count}, {self.distribution!r})"


MODES = {"single": Single, "multiple": Multiple, "linear": Linear, "logspace": Logspace, "random": Random}


def dimension(name: str, spec: Any) -> Dimension:
    """A dimension from a config entry: ``{"logspace": {"start": -4, "end": -2, "count": 3}}``,
    ``{"multiple": [64, 128]}``, ``{"single": 0.1}``, or a Dimension already."""
    if isinstance(spec, Dimension):
        return spec
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise SpaceError(
            f"search dimension {name!r}: give one mode as a mapping, e.g. {{'multiple': [1, 2]}}; got {spec!r}"
        )
    ((mode, args),) = spec.items()
    cls = MODES.get(str(mode).lower())
    if cls is None:
        raise SpaceError(f"search dimension {name!r}: unknown mode {mode!r}; use one of {', '.join(MODES)}")
    try:
        if cls in (Single,):
            return cls(args)
        if cls is Multiple:
            return cls(args)
        if not isinstance(args, Mapping):
            raise SpaceError(f"search dimension {name!r}: {mode} takes named arguments, got {args!r}")
        return cls(**args)
    except TypeError:
        wanted = ", ".join(p for p in inspect.signature(cls).parameters if p != "self")
        raise SpaceError(f"search dimension {name!r}: {mode} takes {wanted}; got {args!r}") from None
    except SpaceError as error:
        raise SpaceError(f"search dimension {name!r}: {error}") from None


def space(spec: Mapping[str, Any]) -> dict[str, Dimension]:
    """Every dimension of a search space; an empty space is an error."""
    if not isinstance(spec, Mapping) or not spec:
        raise SpaceError(f"the search space is empty; give at least one parameter to search, got {spec!r}")
    return {name: dimension(name, s) for name, s in spec.items()}


def grid(dimensions: Mapping[str, Dimension], seed: int = 0) -> list[dict[str, Any]]:
    """Every combination of the dimensions' values, the last dimension varying fastest.

    ``Random`` dimensions draw their values from one generator seeded with ``seed``, in dimension order.
    """
    rng = np.random.default_rng(seed)
    names = list(dimensions)
    columns = [dimensions[n].values(rng) for n in names]
    return [dict(zip(names, combo)) for combo in itertools.product(*columns)]


def apply(base: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` parameters with ``point``'s values set; ``"field.key"`` sets a key of a dict parameter."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for name, value in point.items():
        head, _, key = name.partition(".")
        if key:
            target = out.get(head)
            if target is None:
                target = out[head] = {}
            if not isinstance(target, dict):
                raise SpaceError(f"search dimension {name!r}: parameter {head!r} is not a dict, got {target!r}")
            target[key] = value
        else:
            out[name] = value
    return out
