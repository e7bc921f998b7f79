"""Argument checks for every public schedule function: one notion of "a number", whatever library made it.

A real number is a Python ``int`` or ``float``, a numpy integer or floating scalar, or a 0-d real torch tensor
(checked by duck typing, so ``import loopkit`` does not import torch for this); ``bool`` is not a number.
Each check quotes the call and the value, and says what to pass instead. ``MAX_KNOTS`` bounds the work any
generated schedule may cost (``repeat(s, 10**400)`` is refused at once instead of filling memory).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: The most knots a schedule may have (50,000 cycles of a two-knot schedule; about a second to build).
MAX_KNOTS = 100_000


def show(value: Any) -> str:
    """``repr(value)``, shortened for integers too long to print usefully (``10**400``)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**20:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _scalar(value: Any) -> Any:
    """Unwrap a 0-d real tensor or numpy scalar to a Python number; anything else is returned unchanged."""
    if type(value).__module__.startswith("torch") and hasattr(value, "dim") and hasattr(value, "item"):
        if value.dim() == 0 and not value.dtype.is_complex and str(value.dtype) != "torch.bool":
            return value.item()
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def is_real(value: Any) -> bool:
    """Whether ``value`` is a real number of an accepted type (finite or not)."""
    value = _scalar(value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def real(
    call: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    hint: str = "",
) -> float:
    """``value`` as a finite float, or ``ValueError`` naming ``call(name=value)``; optional inclusive/open bounds."""
    raw = value if type(value) is float or type(value) is int else _scalar(value)
    if not isinstance(raw, (int, float)) or isinstance(raw, bool):
        raise TypeError(f"{call}({name}={show(value)}): {name} must be a real number (int, float, numpy or 0-d tensor)")
    try:
        x = float(raw)
    except OverflowError:
        raise ValueError(
            f"{call}({name}={show(value)}): {name} is beyond the float range; {hint or 'pass a smaller number'}"
        ) from None
    if not math.isfinite(x):
        raise ValueError(f"{call}({name}={show(value)}): {name} must be a finite number{'; ' + hint if hint else ''}")
    bad_low = low is not None and (x <= low if low_open else x < low)
    bad_high = high is not None and (x >= high if high_open else x > high)
    if bad_low or bad_high:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        need = " and ".join(p for p in (lo, hi) if p)
        raise ValueError(f"{call}({name}={show(value)}): {name} must be {need}{'; ' + hint if hint else ''}")
    return x


#: The largest count accepted anywhere: beyond it whole numbers are no longer exact floats.
MAX_COUNT = 2**53


def count(call: str, name: str, value: Any, minimum: int = 1, maximum: int = MAX_COUNT, *, hint: str = "") -> int:
    """``value`` as a whole number in ``[minimum, maximum]``; integral floats are whole numbers too (``3.0``)."""
    raw = _scalar(value)
    if not isinstance(raw, (int, float)) or isinstance(raw, bool):
        raise TypeError(f"{call}({name}={show(value)}): {name} must be a whole number")
    if isinstance(raw, float):
        if not math.isfinite(raw) or raw != int(raw):
            raise ValueError(f"{call}({name}={show(value)}): {name} must be a whole number")
        raw = int(raw)
    if raw < minimum or raw > maximum:
        bound = f"between {minimum} and {maximum:,}"
        raise ValueError(
            f"{call}({name}={show(value)}): {name} must be a whole number {bound}{'; ' + hint if hint else ''}"
        )
    return raw


def optional_count(call: str, name: str, value: Any, minimum: int = 1) -> int | None:
    return None if value is None else count(call, name, value, minimum)


def optional_epochs(call: str, value: Any) -> float | int | None:
    """A fit's length in epochs: None, or a finite number > 0 (fractional for ``fit(max_steps=...)``)."""
    if value is None:
        return None
    x = real(call, "n_epochs", value, low=0, low_open=True)
    return int(x) if x == int(x) else x


def time(t: Any) -> float:
    """A time to evaluate a schedule at: a finite real number, else ``TypeError``/``ValueError``."""
    if type(t) is float:  # the Scheduler's per-step path: no conversion needed
        if t - t == 0:  # finite (nan - nan and inf - inf are nan)
            return t
        raise ValueError(f"cannot evaluate a schedule at time {t!r}; times are finite numbers of steps or epochs")
    if not is_real(t):
        raise TypeError(f"cannot evaluate a schedule at {show(t)}; pass a real number of steps or epochs")
    try:
        x = float(_scalar(t))
    except OverflowError:
        x = math.inf
    if not math.isfinite(x):
        raise ValueError(f"cannot evaluate a schedule at time {show(t)}; times are finite numbers of steps or epochs")
    return x


def times(ts: Any) -> np.ndarray:
    """Many times as a float64 array: real dtypes only (no strings, no booleans), all finite."""
    arr = ts.detach().cpu().numpy() if type(ts).__module__.startswith("torch") and hasattr(ts, "detach") else ts
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"cannot evaluate a schedule at times of dtype {arr.dtype}; pass real numbers")
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        bad = arr[~np.isfinite(arr)][0]
        raise ValueError(f"cannot evaluate a schedule at time {bad!r}; times are finite numbers of steps or epochs")
    return arr


def pct(call: str, pct_start: Any) -> float:
    return real(call, "pct_start", pct_start, low=0, high=1)


def unit(call: str, unit: Any, allowed: tuple[str, ...] = ("epoch", "step", "fraction")) -> str:
    if not isinstance(unit, str) or unit not in allowed:
        raise ValueError(f"{call}(unit={show(unit)}): unknown unit; use one of {list(allowed)}")
    return unit
