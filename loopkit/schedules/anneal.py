"""Annealing functions: how a schedule moves from one knot's value ``a`` to the next one's ``b``.

Each is written once and evaluated two ways: on Python floats with ``math`` (the scalar path, about a
microsecond) and on numpy arrays (the vectorised path the Scheduler uses to lay out a whole epoch). Both run
the same expression, so they agree to the last bit or within one rounding of ``cos``/``sin``.

``p`` is the position within the segment, from 0 at ``a`` to 1 at ``b``.

=========  ==================================  =============================================
name       value                               shape
=========  ==================================  =============================================
linear     ``a + (b - a) p``                   straight line
cos        ``b + (a - b) (1 + cos(pi p)) / 2``  half-cosine S-curve, flat at both ends
sin        ``a + (b - a) sin(pi p / 2)``       quarter-sine: fast start, flat at ``b``
exp        ``a (b / a) ** p``                  geometric; ``a`` and ``b`` nonzero, same sign
step       ``a``                               hold ``a`` until the next knot
=========  ==================================  =============================================

A callable ``f`` on [0, 1] with ``f(0) = 0`` and ``f(1) = 1`` gives ``a + (b - a) f(p)``.

Two families take shape exponents (objects, equal when their exponents are):

- :func:`power` ``(exponent, k=1)``: ``b + (a - b) (1 - p**k) ** exponent``: polynomial decay (transformers'
  ``get_polynomial_decay_schedule_with_warmup``, optax's ``polynomial_schedule``, timm's ``PolyLRScheduler`` with
  ``k_decay``); ``power(1, k=0.5)`` is the "1-sqrt" cool-down;
- :func:`cosine` ``(exponent=1, k=1)``: ``b + (a - b) ((1 + cos(pi p**k)) / 2) ** exponent``: optax's cosine
  ``exponent``, timm's cosine ``k_decay``.

Example:
    >>> ANNEALS["cos"](0.0, 1.0, 0.5)
    0.5
    >>> ANNEALS["exp"](1.0, 0.01, 0.5)
    0.1
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

import numpy as np

# A position: a Python float (the scalar path) or a numpy array of them (the vectorised path); the value has
# the same kind.
P = TypeVar("P", float, "np.ndarray[Any, Any]")


def _xp(p: object) -> ModuleType:
    return np if isinstance(p, np.ndarray) else math


def linear(a: float, b: float, p: P) -> P:
    return a + (b - a) * p


def cos(a: float, b: float, p: P) -> P:
    # The form torch's OneCycleLR and fastai use, so parity holds to rounding.
    return b + (a - b) * (1.0 + _xp(p).cos(math.pi * p)) / 2.0


def sin(a: float, b: float, p: P) -> P:
    return a + (b - a) * _xp(p).sin(math.pi / 2.0 * p)


def exp(a: float, b: float, p: P) -> P:
    return a * (b / a) ** p


def step(a: float, b: float, p: P) -> P:
    return a + 0.0 * p


class _Shaped:
    """An annealing with exponents; plain data (equal, hashable, printable by its arguments)."""

    name = ""

    def __init__(self, call: str, exponent: Any, k: Any) -> None:
        for arg, value in (("exponent", exponent), ("k", k)):
            if not (isinstance(value, (int, float)) and not isinstance(value, bool)) or not math.isfinite(value):
                raise ValueError(f"{call}({arg}={value!r}): {arg} must be a finite number > 0")
            if value <= 0:
                raise ValueError(f"{call}({arg}={value!r}): {arg} must be > 0")
        self.exponent, self.k = float(exponent), float(k)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and (other.exponent, other.k) == (self.exponent, self.k)

    def __hash__(self) -> int:
        return hash((self.name, self.exponent, self.k))

    def __repr__(self) -> str:
        k = "" if self.k == 1.0 else f", k={self.k!r}"
        return f"{self.name}({self.exponent!r}{k})"


class Power(_Shaped):
    """``b + (a - b) (1 - p**k) ** exponent``; made by :func:`power`."""

    name = "power"

    @classmethod
    def exact(cls, exponent: float) -> Power:
        """Internal: ``(1 - p) ** exponent`` for an exponent the caller checked (>= 0: torch allows 0)."""
        self = cls.__new__(cls)
        self.exponent, self.k = float(exponent), 1.0
        return self

    def __call__(self, a: Any, b: Any, p: Any) -> Any:
        q = p if self.k == 1.0 else p**self.k
        return b + (a - b) * (1.0 - q) ** self.exponent


class Cosine(_Shaped):
    """``b + (a - b) ((1 + cos(pi p**k)) / 2) ** exponent``; made by :func:`cosine`."""

    name = "cosine"

    def __call__(self, a: Any, b: Any, p: Any) -> Any:
        q = p if self.k == 1.0 else p**self.k
        half = 0.5 * (1.0 + _xp(p).cos(math.pi * q))
        return b + (a - b) * (half if self.exponent == 1.0 else half**self.exponent)


def power(exponent: float = 1.0, k: float = 1.0) -> Power:
    """Polynomial annealing ``b + (a - b) (1 - p**k) ** exponent`` (``exponent`` and ``k`` finite, > 0).

    ``exponent=1`` is linear, ``2`` falls fast then flattens, ``0.5`` holds high then falls fast (timm's poly
    default); ``k`` is timm's ``k_decay``; ``power(1, k=0.5)`` is the 1-sqrt cool-down ``a + (b - a) sqrt(p)``.

    Example:
        >>> power(2)(25.0, 10.0, 0.5)  # optax polynomial_schedule(25, 10, power=2, transition_steps=10) at 5
        13.75
    """
    return Power("power", exponent, k)


def cosine(exponent: float = 1.0, k: float = 1.0) -> Cosine:
    """Cosine annealing with shape exponents: ``b + (a - b) ((1 + cos(pi p**k)) / 2) ** exponent``.

    ``exponent`` is optax's ``cosine_decay_schedule(exponent=...)``, ``k`` timm's ``k_decay``; both finite, > 0.

    Example:
        >>> round(cosine(2)(0.1, 0.0, 0.5), 12)  # optax cosine_decay_schedule(0.1, 100, exponent=2) at 50
        0.025
    """
    return Cosine("cosine", exponent, k)


ANNEALS: dict[str, Callable] = {"linear": linear, "cos": cos, "sin": sin, "exp": exp, "step": step, "const": step}


class Custom:
    """Wraps a user function ``f`` on [0, 1] as an annealing function ``a + (b - a) f(p)``."""

    def __init__(self, fn: Callable[[float], float]) -> None:
        self.fn = fn

    def __call__(self, a: float, b: float, p: P) -> P:
        if isinstance(p, np.ndarray):
            frac = np.array([self._at(float(x)) for x in p.ravel()], dtype=np.float64).reshape(p.shape)
        else:
            frac = self._at(p)
        out = a + (b - a) * frac
        if not np.all(np.isfinite(out)):
            raise ValueError(
                f"the annealing function {self!r} took a segment from {a!r} to {b!r} beyond the float range; "
                "keep f(p) within [0, 1]"
            )
        return out

    def _at(self, p: float) -> float:
        frac = self.fn(p)
        try:
            good = math.isfinite(frac)
        except TypeError:
            good = False
        if not good or isinstance(frac, bool):
            raise ValueError(
                f"the annealing function {self!r} returned {frac!r} at p={p!r}; it must return a finite number "
                "for every p in [0, 1]"
            )
        return float(frac)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Custom) and other.fn is self.fn

    def __hash__(self) -> int:
        return hash(self.fn)

    def __repr__(self) -> str:
        return getattr(self.fn, "__name__", repr(self.fn))


def resolve(anneal: str | Callable, a: float, b: float) -> Callable:
    """The annealing function for a segment from ``a`` to ``b``; raises on unknown names or invalid use."""
    if isinstance(anneal, str):
        if anneal not in ANNEALS:
            raise ValueError(
                f"unknown annealing {anneal!r}; use one of {sorted(ANNEALS)}, 'pchip' for a smooth curve "
                "through all knots, or a function f on [0, 1] with f(0) = 0 and f(1) = 1"
            )
        fn = ANNEALS[anneal]
    elif callable(anneal):
        fn = anneal if isinstance(anneal, (Custom, _Shaped)) else Custom(anneal)
    else:
        raise TypeError(f"anneal must be a name or a function on [0, 1], got {anneal!r}")
    check(fn, a, b)
    return fn


def check(fn: Callable, a: float, b: float) -> None:
    """Raise ``ValueError`` unless ``fn`` computes finite values all the way from ``a`` to ``b``.

    Every formula above uses ``b - a`` (``cos`` twice that, ``exp`` the ratio ``b / a``), so that must be a
    finite float; ``exp`` also needs ``a`` and ``b`` nonzero with one sign.
    """
    if fn is exp:
        if a == 0 or b == 0 or (a > 0) != (b > 0):
            raise ValueError(
                f"anneal='exp' goes geometrically from {a!r} to {b!r}, so both must be nonzero with the same "
                "sign; use 'cos' or 'linear' to reach zero"
            )
        ratio = b / a
        if not (math.isfinite(ratio) and ratio != 0 and ratio == ratio):
            raise ValueError(
                f"anneal='exp' from {a!r} to {b!r}: the ratio {b!r} / {a!r} is outside the float range; "
                "use values closer in magnitude, or 'linear'"
            )
    elif not math.isfinite((b - a) * 2):  # 'cos' forms (a - b) * (1 + cos(pi p)), up to twice the gap
        raise ValueError(
            f"cannot interpolate from {a!r} to {b!r}: their difference overflows the float range; "
            "use values within about 1e307 of each other"
        )


def name_of(fn: Callable) -> str:
    """The name to show for an annealing function in reprs."""
    for name, known in ANNEALS.items():
        if fn is known:
            return name
    return repr(fn)
