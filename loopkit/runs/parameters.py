"""Typed run parameters: a dataclass declares them once; they become command-line flags and config-file keys.

Each field of a dataclass is a parameter: its annotation is its type, its default the default, and
``param(default, help=..., low=..., high=..., choices=...)`` adds help text and checked bounds. Supported
types: ``int``, ``float``, ``str``, ``bool``, ``typing.Literal[...]``, ``dict`` and ``list`` (given as JSON on the
command line), and any of these ``| None``.

Values are read in this order, each overriding the one before: the defaults, a config file (``--config
run.yaml`` or ``.toml``, read by :mod:`loopkit.runs.config_files`), then flags (:mod:`loopkit.runs.flags`).
Every value, from whatever source, goes through :func:`make_params`, so a bad value fails before training with
:class:`ParameterError` naming the parameter and the value (cut short if long). Checked for every parameter:
floats are finite (no NaN, no infinity); ints fit in 64 bits; ``dict``/``list`` values are JSON data (strings,
finite numbers, booleans, null, lists, string-keyed objects) at most 32 levels deep and 10,000 items in all.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Params:
    ...     learning_rate: float = param(1e-3, help="peak learning rate", low=0)
    ...     epochs: int = param(10, help="epochs to train", low=1)
    ...     shuffle: bool = param(True, help="shuffle the training data")
    >>> make_params(Params, {"learning_rate": 0.01, "shuffle": False})
    Params(learning_rate=0.01, epochs=10, shuffle=False)
    >>> make_params(Params, {"epochs": 0})
    Traceback (most recent call last):
    ...
    loopkit.runs.parameters.ParameterError: parameter 'epochs' must be >= 1, got epochs=0
"""

from __future__ import annotations

import dataclasses
import json
import math
import reprlib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
INT_RANGE = (-(2**63), 2**63)  # what a parameter's int may be: a 64-bit integer, as torch and numpy hold it
MAX_DEPTH, MAX_ITEMS = 32, 10_000  # for dict and list values

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxlevel = 3


def short(value: Any) -> str:
    """``repr(value)`` cut short (strings and containers truncated with ``...``): error messages quote values
    whole only when they are small."""
    return _repr.repr(value)


class ParameterError(ValueError):
    """A parameter value that does not fit its declaration; the message names the parameter and the value."""


def param(
    default: Any = dataclasses.MISSING,
    *,
    help: str = "",
    low: float | None = None,
    high: float | None = None,
    choices: Sequence[Any] | None = None,
) -> Any:
    """A dataclass field with help text and bounds checked by :func:`make_params` (``low <= value <= high``).

    Mutable defaults (a dict or list) are copied per instance.
    """
    metadata = {"help": help, "low": low, "high": high, "choices": tuple(choices) if choices is not None else None}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: json.loads(json.dumps(default)), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def fields(cls: type) -> list[dataclasses.Field]:
    """The parameters of ``cls``: its dataclass fields, with their annotations resolved to types."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"parameters are declared as a dataclass; got {cls!r}")
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        f.type = hints[f.name]
        out.append(f)
    return out


def split_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"a parameter type may be one type or one type | None, got {tp!r}")
        return rest[0], True
    return tp, False


def parse_bool(text: str) -> bool:
    """``true/false/1/0/yes/no/on/off`` in any case; anything else raises ``ValueError``."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean; use true or false")


def convert(name: str, tp: Any, value: Any) -> Any:
    """``value`` (a string from a flag, or a value from a config file) as type ``tp``; ParameterError if not."""
    base, optional = split_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null")):
        if optional:
            return None
        raise ParameterError(f"parameter {name!r} may not be None, got {name}=None")
    bad = ParameterError(f"parameter {name!r} must be {_type_name(tp)}, got {name}={short(value)}")
    if typing.get_origin(base) is typing.Literal:
        options = typing.get_args(base)
        for option in options:
            if (type(value) is type(option) and value == option) or (isinstance(value, str) and str(option) == value):
                return option
        raise ParameterError(f"parameter {name!r} must be one of {list(options)}, got {name}={short(value)}")
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return parse_bool(value)
            except ValueError:
                raise bad from None
        raise bad
    if base is int:
        result = None
        if isinstance(value, int) and not isinstance(value, bool):
            result = value
        elif isinstance(value, float) and value.is_integer():
            result = int(value)
        elif isinstance(value, str):
            try:
                result = int(value)
            except ValueError:  # not a whole number, or more digits than Python converts
                raise bad from None
        if result is None:
            raise bad
        if not INT_RANGE[0] <= result < INT_RANGE[1]:
            raise ParameterError(f"parameter {name!r} must fit in 64 bits (|value| < 2**63), got {name}={short(value)}")
        return result
    if base is float:
        if isinstance(value, bool):
            raise bad
        try:
            number = float(value) if isinstance(value, (int, float, str)) else None
        except (ValueError, OverflowError):
            number = None
        if number is None:
            raise bad
        if not math.isfinite(number):
            raise ParameterError(f"parameter {name!r} must be a finite number, got {name}={short(value)}")
        return number
    if base is str:
        if isinstance(value, str):
            return value
        raise bad
    origin = typing.get_origin(base) or base
    if origin in (dict, list):
        if isinstance(value, str):
            value = _parse_json(name, value)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, origin):
            raise bad
        _check_data(name, value)
        return value
    raise TypeError(f"parameter {name!r} has type {tp!r}; use int, float, str, bool, Literal, dict or list")


def _parse_json(name: str, text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ParameterError(f"parameter {name!r} must hold finite numbers, got {constant} in {name}={short(text)}")

    try:
        return json.loads(text, parse_constant=refuse)
    except json.JSONDecodeError as error:
        raise ParameterError(f"parameter {name!r} must be JSON ({error.msg}), got {name}={short(text)}") from None
    except RecursionError:
        raise ParameterError(f"parameter {name!r} is nested too deeply (at most {MAX_DEPTH} levels)") from None


def _check_data(name: str, value: Any) -> None:
    """``value`` is JSON data: str-keyed dicts, lists, strings, finite floats, 64-bit ints, booleans, None; at most
    MAX_DEPTH deep and MAX_ITEMS items (YAML aliases counted each time they are used)."""
    items = 0
    stack: list[tuple[Any, int, str]] = [(value, 0, name)]
    while stack:
        item, depth, where = stack.pop()
        items += 1
        if items > MAX_ITEMS:
            raise ParameterError(f"parameter {name!r} holds more than {MAX_ITEMS} items; pass a smaller value")
        if depth > MAX_DEPTH:
            raise ParameterError(f"parameter {name!r} is nested too deeply (at most {MAX_DEPTH} levels)")
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise ParameterError(f"parameter {name!r}: keys must be strings, got {short(key)} in {where}")
                stack.append((sub, depth + 1, f"{where}.{key}"))
        elif isinstance(item, list):
            stack.extend((sub, depth + 1, f"{where}[{i}]") for i, sub in enumerate(item))
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ParameterError(f"parameter {name!r} must hold finite numbers, got {where}={item!r}")
        elif isinstance(item, int) and not isinstance(item, bool):
            if not INT_RANGE[0] <= item < INT_RANGE[1]:
                raise ParameterError(f"parameter {name!r}: {where} must fit in 64 bits, got {short(item)}")
        elif not isinstance(item, (str, bool, type(None))):
            raise ParameterError(
                f"parameter {name!r}: {where} must be JSON data (string, number, boolean, null, list, object), "
                f"got a {type(item).__name__}"
            )


def _type_name(tp: Any) -> str:
    base, optional = split_optional(tp)
    name = getattr(base, "__name__", repr(base))
    article = "an" if name[0] in "aeiou" else "a"
    return f"{article} {name}" + (" or None" if optional else "")


def make_params(cls: type, values: Mapping[str, Any] | None = None, **more: Any) -> Any:
    """An instance of ``cls`` from ``values`` (missing ones take their defaults), every value converted and checked.

    Raises:
        ParameterError: an unknown name (listing the known ones), a value of the wrong type, outside
            ``low``/``high`` or not among ``choices``, a missing value without default, or an error raised by
            the dataclass's own ``__post_init__``.
    """
    values = {**(values or {}), **more}
    declared = {f.name: f for f in fields(cls)}
    unknown = sorted(set(map(str, values)) - set(declared))
    if unknown:
        shown = ", ".join(short(u) for u in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        raise ParameterError(f"unknown parameter(s) {shown}; known: {', '.join(declared)}")
    kwargs = {}
    for name, f in declared.items():
        if name in values:
            value = convert(name, f.type, values[name])
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            raise ParameterError(f"parameter {name!r} has no default; give it (--{name}=...)")
        check_bounds(name, f, value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (ValueError, TypeError, LookupError, ArithmeticError) as error:  # raised by the class's __post_init__
        if isinstance(error, ParameterError):
            raise
        raise ParameterError(
            f"{type(error).__name__}: {error}" if not isinstance(error, ValueError) else str(error)
        ) from error


def check_bounds(name: str, f: dataclasses.Field, value: Any) -> None:
    if value is None:
        return
    low, high, choices = f.metadata.get("low"), f.metadata.get("high"), f.metadata.get("choices")
    if low is not None and value < low:
        raise ParameterError(f"parameter {name!r} must be >= {low}, got {name}={short(value)}")
    if high is not None and value > high:
        raise ParameterError(f"parameter {name!r} must be <= {high}, got {name}={short(value)}")
    if choices is not None and value not in choices:
        raise ParameterError(f"parameter {name!r} must be one of {list(choices)}, got {name}={short(value)}")


def to_dict(params: Any) -> dict[str, Any]:
    """The parameters as a plain dict (JSON-ready for the types above)."""
    return {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
